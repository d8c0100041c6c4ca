"""Faults a test injects into the nodes' SSH service, seen by clients exactly as on a real
network: a connection dropped in the middle of a command, a node that answers slowly, a node
whose SSH port refuses connections, a command that fails; and a k3s agent that, at a given
version, starts but never brings its node back Ready (a failed upgrade)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labsim.node.registry import CommandResult


@dataclass
class NodeFaults:
    _drops: dict[int, list[str]] = field(default_factory=dict)
    _failures: dict[int, list[tuple[str, CommandResult]]] = field(default_factory=dict)
    _delays: dict[int, float] = field(default_factory=dict)
    _refused: set[int] = field(default_factory=set)
    _stalled: dict[int, str] = field(default_factory=dict)  # vmid -> the k3s version that never gets Ready
    # Set by NodeHost: closes or reopens a node's listening socket.
    on_refuse: Callable[[int, bool], None] | None = None

    def drop_next(self, vmid: int, command_substring: str = "") -> None:
        """The next command on the node containing ``command_substring`` runs, sends half its
        output, and then its connection is cut (the client sees the connection lost)."""
        self._drops.setdefault(vmid, []).append(command_substring)

    def fail_next(self, vmid: int, command_substring: str, stderr: str = "", exit_status: int = 1) -> None:
        """The next command containing ``command_substring`` does not run and fails so."""
        self._failures.setdefault(vmid, []).append((command_substring, CommandResult.fail(stderr, exit_status)))

    def slow(self, vmid: int, seconds: float) -> None:
        """Every command on the node answers ``seconds`` (wall time) later; 0 ends it."""
        if seconds > 0:
            self._delays[vmid] = seconds
        else:
            self._delays.pop(vmid, None)

    def refuse_connections(self, vmid: int, refuse: bool = True) -> None:
        """The node's SSH port refuses connections (as a stopped sshd) until called with False."""
        if refuse:
            self._refused.add(vmid)
        else:
            self._refused.discard(vmid)
        if self.on_refuse is not None:
            self.on_refuse(vmid, refuse)

    def never_ready(self, vmid: int, version: str) -> None:
        """From now on, the node's k3s agent at ``version`` starts (its unit is active) but its
        Node never turns Ready: the node that does not come back after an upgrade. Another
        version (a rollback) starts normally; ``clear`` heals it."""
        self._stalled[vmid] = version

    def clear(self, vmid: int | None = None) -> None:
        """Heal one node (or all): pending drops and failures forgotten, speed and port restored."""
        for vm in [vmid] if vmid is not None else sorted(self._refused | set(self._delays) | set(self._stalled)
                                                          | set(self._drops) | set(self._failures)):
            self._stalled.pop(vm, None)
            self._drops.pop(vm, None)
            self._failures.pop(vm, None)
            self._delays.pop(vm, None)
            if vm in self._refused:
                self.refuse_connections(vm, False)

    def view(self) -> dict[str, Any]:
        """What is pending, per node (vmid as a string, as JSON keys are)."""
        vmids = sorted(self._refused | set(self._delays) | set(self._stalled) | {vm for vm, drops in self._drops.items() if drops}
                       | {vm for vm, fails in self._failures.items() if fails})
        return {str(vm): {"drop": list(self._drops.get(vm, [])),
                          "fail": [command for command, _ in self._failures.get(vm, [])],
                          "slow": self._delays.get(vm, 0.0), "refused": vm in self._refused,
                          "never_ready": self._stalled.get(vm)} for vm in vmids}

    # --- what the SSH service asks -----------------------------------------------------------

    def refused(self, vmid: int) -> bool:
        return vmid in self._refused

    def stalls(self, vmid: int, version: str) -> bool:
        return self._stalled.get(vmid) == version

    def delay(self, vmid: int) -> float:
        return self._delays.get(vmid, 0.0)

    def take_drop(self, vmid: int, line: str) -> bool:
        return self._take(self._drops.get(vmid, []), lambda s: s in line) is not None

    def take_failure(self, vmid: int, line: str) -> CommandResult | None:
        found = self._take(self._failures.get(vmid, []), lambda f: f[0] in line)
        return found[1] if found is not None else None

    @staticmethod
    def _take(pending: list, matches: Callable) -> object | None:
        for i, item in enumerate(pending):
            if matches(item):
                return pending.pop(i)
        return None
