"""A plain container's process: its command run by the node shell model in the container's
filesystem. Output is buffered by the shell model, so it reaches the container's log when the
command ends. A container created with ``stdin: true`` (``kubectl run -i``) waits for the first
attach to hand it its standard input, as with ``stdinOnce``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from labsim.node.registry import CommandResult
from labsim.node.shell import Shell
from labsim.runtime.filesystem import ContainerFS


class ShellProcess:
    def __init__(self, fs: ContainerFS, argv: list[str], env: dict[str, str], cwd: str, *, wants_stdin: bool,
                 log: Callable[[str], None], exited: Callable[[], None]) -> None:
        self.fs, self.argv, self.env, self.cwd = fs, argv, env, cwd
        self._log, self._exited = log, exited
        self.stdin: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if not wants_stdin:
            self.stdin.set_result(b"")
        self.result: CommandResult | None = None
        self.task = asyncio.create_task(self._run())

    @property
    def exit_code(self) -> int | None:
        return None if self.result is None else self.result.exit_status

    def feed(self, data: bytes) -> None:
        """The first attach's standard input (later ones find it taken)."""
        if not self.stdin.done():
            self.stdin.set_result(data)

    async def wait(self) -> CommandResult:
        await asyncio.shield(self.task)
        return self.result or CommandResult(exit_status=137)

    async def _run(self) -> None:
        stdin = await self.stdin
        shell = Shell(self.fs, "root", env=dict(self.env), cwd=self.cwd, name="sh")
        try:
            self.result = await shell.execute(self.argv, {}, stdin)
        except asyncio.CancelledError:
            self.result = CommandResult(exit_status=137)  # SIGKILL
            raise
        finally:
            if self.result is not None:
                for line in (self.result.stdout + self.result.stderr).decode(errors="replace").splitlines():
                    self._log(line)
            self._exited()

    def kill(self) -> None:
        self.task.cancel()

    async def killed(self) -> None:
        self.kill()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
