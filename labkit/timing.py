"""Step timers: operation code marks its steps (clone, boot, join...) without knowing who records
them. Notebooks pass ``report.step``; callers that do not care get ``untimed``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

StepTimer = Callable[[str, str], AbstractContextManager[Any]]


@contextmanager
def untimed(name: str, target: str = "") -> Iterator[None]:
    yield
