"""The ledger of modelled operations: what the lab spent lab-clock time on, and when.

``Clock.sleep(seconds, what=...)`` records one entry when a named wait ends (a clone, a boot, a
pod's image pull, a PVC's provisioning...): the name, the modelled seconds and the wall-clock
interval it really took. Periodic waits (a probe's period, a poll) are left unnamed and unrecorded:
they are not operations anything waits for. A lab writes its ledger to ``operations.jsonl`` in its
state folder, from its start, so that a benchmark can compute the critical path of a run
(``benchmarks/bench_series_path.py``).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

LEDGER_FILE = "operations.jsonl"
KEPT = 10_000  # entries kept in memory: a lab left running for days stays bounded


@dataclass(frozen=True)
class Operation:
    what: str
    modelled_s: float
    start: float  # wall-clock epoch seconds, when the wait began and ended
    end: float


class Ledger:
    """The operations recorded so far, in memory and (when given a file) appended to it."""

    def __init__(self, path: Path | None = None) -> None:
        self.entries: deque[Operation] = deque(maxlen=KEPT)
        self._file = path.open("w", buffering=1, encoding="utf-8") if path is not None else None

    def record(self, operation: Operation) -> None:
        self.entries.append(operation)
        if self._file is not None:
            self._file.write(json.dumps(asdict(operation)) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_ledger(path: Path) -> list[Operation]:
    """The operations a lab wrote to its ledger file (none when it never started)."""
    if not path.exists():
        return []
    return [Operation(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
