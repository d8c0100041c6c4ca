"""Polling with a growing pause: the first looks come fast (on a converged lab most waits are over
within a fraction of a second), later ones no closer than ``most`` seconds apart (a long wait does
not hammer what it asks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def pauses(first: float = 0.05, most: float = 1.0, factor: float = 1.5) -> Iterator[float]:
    """``first``, then each pause ``factor`` times the last, up to ``most`` seconds."""
    pause = first
    while True:
        yield pause
        pause = min(pause * factor, most)


def until(look: Callable[[], T], done: Callable[[T], bool], *, timeout: float, most: float = 1.0) -> T:
    """``look()`` until ``done`` says yes to what it saw, or ``timeout`` seconds have passed: what
    it saw last, either way (the caller says what is missing)."""
    deadline, pause = time.monotonic() + timeout, pauses(most=most)
    while True:
        seen = look()
        if done(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(next(pause))
