"""A plain container's process: its command run by the node shell model in the container's
filesystem. A shell command (``sh -c SCRIPT``) hands its output to the container's log as it is
written, line by line (``kubectl logs -f`` follows it); another program's output reaches the log
when it ends. A container created with ``stdin: true`` (``kubectl run -i``) waits for the first
attach to hand it its standard input, as with ``stdinOnce``; with ``tty: true`` too (``kubectl
run -it``) it starts at once with no input: a terminal's typing is not modelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from labsim.node.registry import CommandResult
from labsim.node.shell import Shell
from labsim.runtime.filesystem import ContainerFS

SHELLS = ("sh", "ash", "bash", "dash")


class ShellProcess:
    def __init__(self, fs: ContainerFS, argv: list[str], env: dict[str, str], cwd: str, *, wants_stdin: bool,
                 log: Callable[[str], None], exited: Callable[[], None]) -> None:
        self.fs, self.argv, self.env, self.cwd = fs, argv, env, cwd
        self._log, self._exited = log, exited
        self.stdin: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if not wants_stdin:
            self.stdin.set_result(b"")
        self.result: CommandResult | None = None
        self._partial = b""  # the line being written
        self._stdout, self._stderr = bytearray(), bytearray()
        self.task = asyncio.create_task(self._run())

    @property
    def exit_code(self) -> int | None:
        return None if self.result is None else self.result.exit_status

    def feed(self, data: bytes) -> None:
        """The first attach's standard input (later ones find it taken)."""
        if not self.stdin.done():
            self.stdin.set_result(data)

    async def wait(self) -> CommandResult:
        """Everything the process wrote, and how it ended."""
        await asyncio.shield(self.task)
        code = 137 if self.result is None else self.result.exit_status
        return CommandResult(bytes(self._stdout), bytes(self._stderr), code)

    async def _run(self) -> None:
        stdin = await self.stdin
        try:
            self.result = await self._execute(stdin)
        except asyncio.CancelledError:
            self.result = CommandResult(exit_status=137)  # SIGKILL
            raise
        finally:
            if self.result is not None:
                self._written(self.result.stdout)
                self._written(self.result.stderr, 2)
            self._written(b"", end=True)
            self._exited()

    async def _execute(self, stdin: bytes) -> CommandResult:
        argv = self.argv
        flags = argv[1][1:] if len(argv) > 2 and argv[1].startswith("-") else ""
        if argv[0].rsplit("/", 1)[-1] in SHELLS and "c" in flags and set(flags) <= set("cexu"):
            shell = Shell(self.fs, "root", env=dict(self.env), cwd=self.cwd, args=argv[4:],
                          name=argv[3] if len(argv) > 3 else "sh", dialect="sh", live=self._written)
            shell.set_options([f"-{flags.replace('c', '')}"] if flags != "c" else [])
            return await shell.run(argv[2], stdin)
        return await Shell(self.fs, "root", env=dict(self.env), cwd=self.cwd, name="sh").execute(argv, {}, stdin)

    def _written(self, data: bytes, fd: int = 1, end: bool = False) -> None:
        """Output as the process writes it: each whole line goes to the log (the last, unended
        one too when the process ends); all of it is kept for an attach."""
        (self._stdout if fd == 1 else self._stderr).extend(data)
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        if end and self._partial:
            lines, self._partial = [*lines, self._partial], b""
        for line in lines:
            self._log(line.decode(errors="replace"))

    def kill(self) -> None:
        self.task.cancel()

    async def killed(self) -> None:
        self.kill()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
