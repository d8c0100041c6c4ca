"""Plans and steps: what an operation proposes and does, independent of who records it.

Operations (proxmox, k3s...) return a ``Plan`` of items, each able to say its ``Change`` (one
line of the plan table), and mark their timed steps through a ``StepTimer``: notebooks pass
``report.step``, callers that do not care get ``untimed``. Neither needs the report itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

NO_CHANGE = ("unchanged", "none")

# A setting whose observed value differs from the desired one: ``{setting: (have, want)}``.
Drift = dict[str, tuple[Any, Any]]

StepTimer = Callable[[str, str], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Change:
    """One line of a plan: what would change on which target, and why."""

    target: str
    action: str  # create | update | drift | delete | install | unchanged ...
    detail: str = ""
    needs_reboot: bool = False

    @property
    def is_change(self) -> bool:
        return self.action not in NO_CHANGE

    def change(self) -> Change:
        """A Change is a plan item of its own (plans whose items need no more than this)."""
        return self


class PlanItem(Protocol):
    @property
    def action(self) -> str: ...

    def change(self) -> Change: ...


Item = TypeVar("Item", bound=PlanItem)


@dataclass(frozen=True)
class Plan(Generic[Item]):
    """What an operation would do, item by item (a VM, a node...), in the order it does it."""

    items: list[Item]

    def changes(self) -> list[Change]:
        return [item.change() for item in self.items]

    def of(self, action: str) -> list[Item]:
        return [item for item in self.items if item.action == action]

    @property
    def is_empty(self) -> bool:
        return not any(c.is_change for c in self.changes())


def drift_keys(drift: Drift) -> str:
    return ", ".join(sorted(drift))


@contextmanager
def untimed(name: str, target: str = "") -> Iterator[None]:
    yield
