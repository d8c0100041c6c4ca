"""What a notebook proves and changes: plans, checks, step timings, and the record for the runner.

A notebook builds one ``Report``: plan tables from plans, ``report.require(...)`` for a gate that
stops the notebook, ``report.verify(checks)`` and ``report.check(...)`` for verifications,
``with report.step(...)`` (or ``step=report.step`` passed to an operation) around timed work,
``report.applied(changes)`` for what it changed, ``report.inventory(section, table)`` for what
the lab holds once it is done (compact facts the runs' drift is computed from). ``record(report)`` at the end hands all of it to
the runner (as a display output of its own MIME type, so the executed notebook carries its
results) and fails the notebook, naming the failed checks, if any check failed. In a dry run
(``Report(name, dry_run=True)``) checks are shown with what they found but never fail.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import pandas as pd

from labkit import tables
from labkit.changes import Change, Check, Plan
from labkit.display import when_shell
from labkit.errors import ChecksFailed
from labkit.progress import say
from labkit.records import APPLIED_MIME, RECORD_MIME

when_shell(tables.install)  # a notebook that reports shows its tables labkit's way (no 0..n index, long ones folded)


def plan_table(changes: Iterable[Change]) -> pd.DataFrame:
    rows = [asdict(c) for c in changes]
    return pd.DataFrame(rows, columns=["target", "action", "detail", "needs_reboot"])


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
    dry_run: bool = False
    checks: list[Check] = field(default_factory=list)
    steps: list[Timing] = field(default_factory=list)
    planned: list[Change] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    lab_state: dict[str, dict[str, dict]] = field(default_factory=dict)  # section -> item -> facts

    def check(self, name: str, passed: bool, detail: str = "") -> Check:
        result = Check(name, bool(passed), detail, enforced=not self.dry_run)
        self.checks.append(result)
        return result

    def verify(self, checks: Iterable[Check]) -> pd.DataFrame:
        """Record checks an operation made (``proxmox.verify``...); returns the checks table."""
        for c in checks:
            self.check(c.name, c.passed, c.detail)
        return self.checks_table()

    def require(self, name: str, passed: bool, detail: str = "") -> Check:
        """A check the rest of the notebook depends on: if it fails, stop now, naming it."""
        result = self.check(name, passed, detail)
        if result.enforced and not result.passed:
            raise ChecksFailed(f"{name}: {detail}" if detail else name)
        return result

    def plan(self, plan: Plan | Iterable[Change]) -> pd.DataFrame:
        """Remember a plan and return its table."""
        changes = plan.changes() if isinstance(plan, Plan) else list(plan)
        self.planned.extend(c for c in changes if c.is_change)
        return plan_table(changes)

    def applied(self, changes: Iterable[Change]) -> None:
        """Count changes that were actually made (not merely planned), as they are made: each call
        leaves an output of its own, so a notebook that fails later still tells what it changed."""
        made = [c for c in changes if c.is_change]
        self.changed.extend(made)
        if made:
            _display({APPLIED_MIME: [asdict(c) for c in made],
                      "text/plain": "applied: " + "; ".join(f"{c.action} {c.target}" for c in made)})

    def inventory(self, section: str, items: pd.DataFrame | Mapping[str, Mapping], key: str = "name",
                  columns: Iterable[str] | None = None) -> None:
        """What the lab holds in ``section`` after this notebook: item name -> facts (a table: one
        item per row, named by ``key``; ``columns`` picks the facts worth comparing between runs).
        A later notebook that inventories the same section replaces it in the run's inventory."""
        if isinstance(items, pd.DataFrame):
            frame = items if columns is None else items[[key, *columns]]
            items = {str(row[key]): {c: _plain(v) for c, v in row.items() if c != key}
                     for row in frame.to_dict("records")}
        self.lab_state[section] = {str(k): {f: _plain(v) for f, v in facts.items()} for k, facts in items.items()}

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

    def add_timings(self, name: str, rows: pd.DataFrame, by: str = "node") -> None:
        """Steps timed elsewhere, one per row: its target in column ``by``, ``start``, ``end``."""
        for row in rows.to_dict("records"):
            self.add_timing(name, row[by], row["start"], row["end"])

    def until(self, name: str, reached: dict[str, datetime], since: datetime) -> None:
        """Per target, the wait from the end of its last timed step (or ``since``, for a target
        this notebook did not touch) until ``reached`` says it got there."""
        for target, at in reached.items():
            start = max((t.end for t in self.steps if t.target == target), default=since)
            self.add_timing(name, target, start, max(at, start))

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.enforced and not c.passed]

    def checks_table(self) -> pd.DataFrame:
        def result(c: Check) -> str:
            return ("pass" if c.passed else "FAIL") if c.enforced else f"dry run: {'pass' if c.passed else 'would fail'}"

        rows = [{"check": c.name, "result": result(c), "detail": c.detail} for c in self.checks]
        return pd.DataFrame(rows, columns=["check", "result", "detail"])

    def timings(self) -> pd.DataFrame:
        rows = [{"step": t.name, "target": t.target, "start": t.start, "end": t.end, "seconds": t.seconds}
                for t in self.steps]
        return pd.DataFrame(rows, columns=["step", "target", "start", "end", "seconds"])

    def to_dict(self) -> dict:
        return {
            "notebook": self.notebook,
            "dry_run": self.dry_run,
            "checks": [asdict(c) for c in self.checks],
            "planned": [asdict(c) for c in self.planned],
            "changes": [asdict(c) for c in self.changed],
            "inventory": self.lab_state,
            "steps": [{"name": t.name, "target": t.target, "start": t.start.isoformat(),
                       "end": t.end.isoformat(), "seconds": round(t.seconds, 3)} for t in self.steps],
        }

    def summary(self) -> str:
        enforced = [c for c in self.checks if c.enforced]
        changes = f"{len(self.changed)} change(s) made" if self.changed else "no changes"
        checks = "dry run, checks not enforced" if self.dry_run else \
            f"{len(enforced) - len(self.failed)}/{len(enforced)} checks passed"
        return f"{self.notebook}: {checks}, {changes}"


def _plain(value: object) -> object:
    """A JSON scalar: numpy numbers become Python ones, anything else its string."""
    if hasattr(value, "item"):
        value = value.item()
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


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
