"""The command registry of a simulated node's shell.

A node answers each command line by looking its program up here. Modules register their
programs with ``@command("name", ...)``: the base system (coreutils, systemctl, cloud-init...)
in ``labsim.node.commands``, k3s in ``labsim.k3s``. ``sh -s`` fed a script whose first lines
carry a registered marker (the k3s installer, say) hands it to that script's handler.
An unknown program fails as a shell does: exit 127, ``command not found``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CommandResult:
    stdout: bytes = b""
    stderr: bytes = b""
    exit_status: int = 0

    @classmethod
    def ok(cls, stdout: str | bytes = "") -> CommandResult:
        return cls(stdout=stdout.encode() if isinstance(stdout, str) else stdout)

    @classmethod
    def fail(cls, stderr: str, exit_status: int = 1, stdout: str = "") -> CommandResult:
        return cls(stdout=stdout.encode(), stderr=stderr.encode(), exit_status=exit_status)


@dataclass
class CommandContext:
    """What a command handler sees: its node, arguments, environment, input and user."""

    node: Any  # labsim.node.model.NodeModel
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    user: str = "ubuntu"
    # Runs a nested command line on the same node (for sh -c, sudo, scripts); it also takes an
    # optional ``env=`` (the nested shell's whole environment; default: this command's).
    run: Callable[[str, bytes, str], Awaitable[CommandResult]] | None = None
    cwd: str = "/"  # the shell's working directory, for relative paths
    umask: int = 0o022  # the shell's umask, for the files a command creates

    @property
    def is_root(self) -> bool:
        return self.user == "root"


Handler = Callable[[CommandContext], Awaitable[CommandResult]]
COMMANDS: dict[str, Handler] = {}
SCRIPTS: dict[str, Handler] = {}


# Programs that exist on a node only once installed there: name -> the file that must exist.
INSTALLED_AT: dict[str, str] = {}
# The shell's builtins (``cd``, ``export``, ``set``...), registered by labsim.node.builtins; each is
# called with the shell, its argv, the command's prefix assignments and its stdin.
BUILTINS: dict[str, Callable[..., Awaitable[CommandResult]]] = {}
# Programs that read their standard input (``kubectl apply -f -``): an SSH session waits for the
# client's end of input before running a line that starts with one of them, and only then.
READS_STDIN: set[str] = set()
# Called with each NodeModel as it boots, before its enabled services start: the place for a
# module to register its services' hooks (``node.register_service``) again after a restart.
BOOT_HOOKS: list[Callable[[Any], Awaitable[None]]] = []


def command(*names: str, installed_at: str | None = None, reads_stdin: bool = False
            ) -> Callable[[Handler], Handler]:
    """Register a handler under one or more program names (``"k3s"``, ``"/usr/local/bin/k3s"``).
    With ``installed_at``, the program is found only on nodes where that file exists (the shell
    answers ``command not found`` elsewhere, as before an install)."""

    def register(handler: Handler) -> Handler:
        for name in names:
            COMMANDS[name] = handler
            if installed_at:
                INSTALLED_AT[name] = installed_at
            if reads_stdin:
                READS_STDIN.add(name)
        return handler

    return register


def on_boot(hook: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """Register ``hook(node)`` to run at every node boot."""
    BOOT_HOOKS.append(hook)
    return hook


def script(marker: str) -> Callable[[Handler], Handler]:
    """Register a handler for scripts piped into ``sh -s`` whose head contains ``marker``."""

    def register(handler: Handler) -> Handler:
        SCRIPTS[marker] = handler
        return handler

    return register


def lookup(program: str) -> Handler | None:
    return COMMANDS.get(program) or COMMANDS.get(program.rsplit("/", 1)[-1])


def lookup_script(text: bytes) -> Handler | None:
    head = text[:4096].decode(errors="replace")
    return next((h for marker, h in SCRIPTS.items() if marker in head), None)
