"""Report: steps are timed and announced as they start and end; plans count only real changes."""

from __future__ import annotations

import pytest

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
