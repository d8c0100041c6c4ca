"""A real program's client tools inside its image's containers (``pg_dump``, ``psql``... of
bitnami/postgresql): the container's shell runs them as the real binaries, so a ``kubectl exec``,
a Job's or a CronJob's command (``sh -c 'pg_dump -Fc -h postgresql ... > /backups/db.dump'``)
really talks to the server and really writes its output.

Their arguments are translated as the container would see them: a container path (``-f /backups/x``,
``--file=/backups/x``, a positional ``/backups/x.dump``) becomes the real path of the container's
file, and a server named with libpq's ``-h``/``--host`` is resolved through the cluster's DNS, as the
pod's resolver would. Their environment is the adapter's ``tool_env`` (for PostgreSQL: the server's
own socket when no host is named, inside the server's container).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from labsim.node.network import NoSuchHost
from labsim.node.registry import CommandResult

if TYPE_CHECKING:
    from labsim.runtime.filesystem import ContainerFS

_HOST_FLAGS = ("-h", "--host")


class RealTools:
    def __init__(self, program: ModuleType, fs: ContainerFS) -> None:
        self.program, self.fs = program, fs

    def has(self, name: str) -> bool:
        return name.rsplit("/", 1)[-1] in self.program.TOOLS and self.program.bin_dir() is not None

    async def run(self, argv: list[str], env: dict[str, str], stdin: bytes) -> CommandResult:
        """Run the tool ``argv[0]`` with the container's variables ``env``; a server name that
        does not resolve fails as libpq words it, before anything runs."""
        try:
            args = await self._translate(argv[1:])
        except NoSuchHost as exc:
            return CommandResult.fail(f"{argv[0]}: error: could not translate host name: {exc}\n", 1)
        binary = self.program.bin_dir() / argv[0].rsplit("/", 1)[-1]
        return await run_tool(binary, args, stdin, self.program.tool_env(self.fs, env))

    async def _translate(self, args: list[str]) -> list[str]:
        translated, host_next = [], False
        for arg in args:
            name, eq, value = arg.partition("=")
            if host_next:
                arg = await self._host(arg)
            elif eq and name in _HOST_FLAGS:
                arg = f"{name}={await self._host(value)}"
            elif eq and name.startswith("--") and value.startswith("/"):
                arg = f"{name}={self.fs.host_path(value)}"
            elif arg.startswith("/"):
                arg = str(self.fs.host_path(arg))
            host_next = arg in _HOST_FLAGS
            translated.append(arg)
        return translated

    async def _host(self, name: str) -> str:
        if name.startswith("/") or name.startswith("@"):  # a socket directory
            return name
        return await self.fs.pod_network.resolve(self.fs, name)


async def run_tool(binary: Path, args: list[str], stdin: bytes, env: dict[str, str]) -> CommandResult:
    """A real program's client tool, run to its end with ``stdin``; its output and exit status."""
    process = await asyncio.create_subprocess_exec(str(binary), *args, env=env, stdin=asyncio.subprocess.PIPE,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate(stdin)
    return CommandResult(out, err, process.returncode or 0)
