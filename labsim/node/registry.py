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
    # Runs a nested command line on the same node (for sh -c, sudo, scripts).
    run: Callable[[str, bytes, str], Awaitable[CommandResult]] | None = None

    @property
    def is_root(self) -> bool:
        return self.user == "root"


Handler = Callable[[CommandContext], Awaitable[CommandResult]]
COMMANDS: dict[str, Handler] = {}
SCRIPTS: dict[str, Handler] = {}


def command(*names: str) -> Callable[[Handler], Handler]:
    """Register a handler under one or more program names (``"k3s"``, ``"/usr/local/bin/k3s"``)."""

    def register(handler: Handler) -> Handler:
        for name in names:
            COMMANDS[name] = handler
        return handler

    return register


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
