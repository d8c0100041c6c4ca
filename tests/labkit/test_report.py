"""Report: steps are timed and announced as they start and end; plans count only real changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from labkit import tables
from labkit.changes import Change
from labkit.errors import ChecksFailed
from labkit.report import Report, record


def test_a_step_is_timed_and_announced(capsys):
    report = Report("01-test")
    with report.step("clone", "k3s-master"):
        print("working")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "→ clone k3s-master" and out[1] == "working" and out[2].startswith("✓ clone k3s-master (")
    timings = report.timings()
    assert list(timings[["step", "target"]].itertuples(index=False, name=None)) == [("clone", "k3s-master")]
    assert timings["seconds"].iloc[0] >= 0


def test_a_failed_step_is_still_recorded(capsys):
    report = Report("01-test")
    with pytest.raises(RuntimeError), report.step("boot", "k3s-worker-01"):
        raise RuntimeError("no")
    assert "✗ boot k3s-worker-01 failed after" in capsys.readouterr().out
    assert len(report.steps) == 1


def test_plans_and_changes_count_only_real_changes():
    report = Report("01-test")
    table = report.plan([Change("vm 120", "create"), Change("vm 121", "unchanged")])
    assert list(table["action"]) == ["create", "unchanged"]
    report.applied([Change("vm 120", "create"), Change("vm 121", "unchanged")])
    assert [c.target for c in report.planned] == ["vm 120"] and [c.target for c in report.changed] == ["vm 120"]


def test_record_fails_naming_the_failed_checks(capsys):
    report = Report("02-test")
    report.check("nodes Ready", False, "2/3")
    report.check("versions", True)
    with pytest.raises(ChecksFailed, match=r"1 check\(s\) failed: nodes Ready \(2/3\)"):
        record(report)
    assert "02-test: 1/2 checks passed, no changes" in capsys.readouterr().out


def test_require_stops_naming_the_check_but_only_outside_a_dry_run():
    report = Report("01-test")
    report.require("template exists", True)
    with pytest.raises(ChecksFailed, match=r"plan fits the host: memory: 2.0 GiB over"):
        report.require("plan fits the host", False, "memory: 2.0 GiB over")
    dry = Report("01-test", dry_run=True)
    dry.require("plan fits the host", False, "memory: 2.0 GiB over")  # shown, not enforced
    assert dry.failed == [] and list(dry.checks_table()["result"]) == ["dry run: would fail"]
    record(dry)  # a dry run's checks never fail the notebook


def test_timings_from_rows_and_waits_until_a_state_is_reached():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    report = Report("02-test")
    report.add_timings("ssh", pd.DataFrame([{"node": "a", "start": start, "end": start + timedelta(seconds=3)}]))
    report.until("until Ready", {"a": start + timedelta(seconds=10), "b": start - timedelta(seconds=5)}, since=start)
    seconds = {(t.name, t.target): t.seconds for t in report.steps}
    # a: from the end of its last step; b: untouched here, Ready before ``since``: no wait
    assert seconds == {("ssh", "a"): 3, ("until Ready", "a"): 7, ("until Ready", "b"): 0}


def test_tables_hide_the_range_index_and_fold_long_tables():
    short = tables.to_html(pd.DataFrame({"name": ["k3s-master"], "cpu": [2]}))
    assert "k3s-master" in short and "<details>" not in short and "row_heading" not in short
    named = tables.to_html(pd.DataFrame({"cpu": [2]}, index=pd.Index(["k3s-master"], name="name")))
    assert "row_heading" in named  # a meaningful index is kept
    long = tables.to_html(pd.DataFrame({"name": [f"pod-{i}" for i in range(tables.FOLD_AFTER + 1)]}))
    assert long.startswith(f"<details><summary>{tables.FOLD_AFTER + 1} rows (name)</summary>")
