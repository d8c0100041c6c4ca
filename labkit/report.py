"""What a notebook proves and changes: plans, checks, step timings, and the record for the runner.

A notebook builds one ``Report``: plan tables from ``Change`` lists, ``report.check(...)`` for each
verification, ``with report.step(...)`` around timed work, ``report.applied(changes)`` for what it
changed. ``record(report)`` at the end hands all of it to the runner (as a display output of its
own MIME type, so the executed notebook carries its results) and fails the notebook, naming the
failed checks, if any check failed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import pandas as pd

from labkit.changes import Change, Plan
from labkit.errors import ChecksFailed
from labkit.progress import say

RECORD_MIME = "application/vnd.labkit.record+json"


def plan_table(changes: Iterable[Change]) -> pd.DataFrame:
    rows = [asdict(c) for c in changes]
    return pd.DataFrame(rows, columns=["target", "action", "detail", "needs_reboot"])


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Timing:
    name: str
    target: str
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass
class Report:
    notebook: str
    checks: list[Check] = field(default_factory=list)
    steps: list[Timing] = field(default_factory=list)
    planned: list[Change] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)

    def check(self, name: str, passed: bool, detail: str = "") -> Check:
        result = Check(name, bool(passed), detail)
        self.checks.append(result)
        return result

    def plan(self, plan: Plan | Iterable[Change]) -> pd.DataFrame:
        """Remember a plan and return its table."""
        changes = plan.changes() if isinstance(plan, Plan) else list(plan)
        self.planned.extend(c for c in changes if c.is_change)
        return plan_table(changes)

    def applied(self, changes: Iterable[Change]) -> None:
        """Count changes that were actually made (not merely planned)."""
        self.changed.extend(c for c in changes if c.is_change)

    @contextmanager
    def step(self, name: str, target: str = "") -> Iterator[None]:
        """Time a step, and say when it starts and ends: long waits show progress as they happen."""
        what = f"{name} {target}".strip()
        start = datetime.now(UTC)
        say(f"→ {what}")
        ok = False
        try:
            yield
            ok = True
        finally:
            end = datetime.now(UTC)
            self.steps.append(Timing(name, target, start, end))
            seconds = (end - start).total_seconds()
            say(f"{'✓' if ok else '✗'} {what} {'' if ok else 'failed after '}({seconds:.1f} s)")

    def add_timing(self, name: str, target: str, start: datetime, end: datetime) -> None:
        """A step timed elsewhere (concurrent work measured per target)."""
        self.steps.append(Timing(name, target, start, end))

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def checks_table(self) -> pd.DataFrame:
        rows = [{"check": c.name, "result": "pass" if c.passed else "FAIL", "detail": c.detail} for c in self.checks]
        return pd.DataFrame(rows, columns=["check", "result", "detail"])

    def timings(self) -> pd.DataFrame:
        rows = [{"step": t.name, "target": t.target, "start": t.start, "end": t.end, "seconds": t.seconds}
                for t in self.steps]
        return pd.DataFrame(rows, columns=["step", "target", "start", "end", "seconds"])

    def to_dict(self) -> dict:
        return {
            "notebook": self.notebook,
            "checks": [asdict(c) for c in self.checks],
            "planned": [asdict(c) for c in self.planned],
            "changes": [asdict(c) for c in self.changed],
            "steps": [{"name": t.name, "target": t.target, "start": t.start.isoformat(),
                       "end": t.end.isoformat(), "seconds": round(t.seconds, 3)} for t in self.steps],
        }

    def summary(self) -> str:
        passed = len(self.checks) - len(self.failed)
        changes = f"{len(self.changed)} change(s) made" if self.changed else "no changes"
        return f"{self.notebook}: {passed}/{len(self.checks)} checks passed, {changes}"


def record(report: Report, **extra: object) -> None:
    """Hand the notebook's results to the runner; fail naming the failed checks, if any."""
    data = report.to_dict() | {"extra": extra, "recorded_at": time.time()}
    _display({RECORD_MIME: data, "text/plain": report.summary()})
    if report.failed:
        names = "; ".join(f"{c.name} ({c.detail})" if c.detail else c.name for c in report.failed)
        raise ChecksFailed(f"{len(report.failed)} check(s) failed: {names}")


def _display(bundle: dict) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain Python: print the summary line only
        print(bundle["text/plain"])
        return
    if get_ipython() is None:
        print(bundle["text/plain"])
    else:
        display(bundle, raw=True)


def records_in(notebook: dict) -> list[dict]:
    """The labkit records an executed notebook (as a JSON dict) carries, in order."""
    found = []
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) or []:
            data = output.get("data", {}).get(RECORD_MIME)
            if data is not None:
                found.append(json.loads(data) if isinstance(data, str) else data)
    return found
