"""Progress on long waits, readable both live and in an executed notebook.

A line is printed when something changes (not on every poll), with the elapsed time, so a
notebook's output tells the story of the wait without thousands of redraws.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()


def say(line: str) -> None:
    """Print one whole line, even from concurrent threads (print() may split text and newline)."""
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Progress:
    def __init__(self, desc: str, total: int | None = None):
        self.desc, self.total = desc, total
        self.started = time.monotonic()
        self._last: tuple | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, done: int | None = None, note: str = "") -> None:
        state = (done, note)
        if state == self._last:
            return
        self._last = state
        count = f" {done}/{self.total}" if done is not None and self.total is not None else ""
        say(f"[{self.elapsed:6.1f}s] {self.desc}:{count}{' ' + note if note else ''}")


@contextmanager
def progress(desc: str, total: int | None = None) -> Iterator[Progress]:
    bar = Progress(desc, total)
    yield bar
