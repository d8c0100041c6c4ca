"""The alert rules as code (parameters/alerts) with their promtool unit tests (tests/alerts), run
with Debian's real promtool: every rule parses, every rule is tested, every test passes, and no
test would pass with its rule deleted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from labkit import observe
from labkit.errors import LabError
from tests.labfiles import REPO

RULES = REPO / "parameters" / "alerts"
TESTS = REPO / "tests" / "alerts"
P1 = {"NodeDiskAlmostFull", "NodeDown", "NodeNotReady", "PodCrashLooping", "CertificateExpiringSoon", "Watchdog"}


def test_the_rule_files_parse_and_hold_the_p1_set_with_annotations():
    check = observe.check_rules(RULES)
    assert check.ok, check.table().to_string()
    assert {f.file.name for f in check.files} == {"general.yaml", "nodes.yaml", "workloads.yaml", "certificates.yaml"}
    assert all("SUCCESS" in f.output for f in check.files)
    assert {r.alert for r in observe.rules(RULES)} == P1
    for path in RULES.glob("*.yaml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                assert rule["labels"]["severity"] in {"critical", "none"}, rule["alert"]
                assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, rule["alert"]


def test_every_rule_has_a_passing_promtool_test():
    result = observe.test_rules(RULES, TESTS)
    table = result.table()
    assert result.ok, result.output
    assert result.strays == []
    assert set(table["rule"]) == P1 and table["passed"].all() and (table["cases"] >= 1).all()
    assert table.set_index("rule").loc["NodeDown", "rule group"] == "nodes"
    assert result.output.count("SUCCESS") == len(list(TESTS.glob("*.test.yaml")))


def _copy_tree(tmp: Path) -> tuple[Path, Path]:
    """The rules and their tests copied with the same relative layout (the tests' rule_files stay valid)."""
    rules, tests = tmp / "parameters" / "alerts", tmp / "tests" / "alerts"
    shutil.copytree(RULES, rules)
    tests.mkdir(parents=True)
    return rules, tests


def _delete_rule(rules: Path, alert: str) -> None:
    for path in rules.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            group["rules"] = [r for r in group["rules"] if r.get("alert") != alert]
        path.write_text(yaml.safe_dump(doc))


def _test_groups() -> list[tuple[str, int, dict, set[str]]]:
    """Each promtool test group (one entry of a file's ``tests:``), with the alerts it names."""
    found = []
    for path in sorted(TESTS.glob("*.test.yaml")):
        doc = yaml.safe_load(path.read_text())
        for i, group in enumerate(doc["tests"]):
            found.append((path.name, i, doc, {c["alertname"] for c in group["alert_rule_test"]}))
    return found


@pytest.mark.parametrize("name,index,doc,alerts", _test_groups(), ids=lambda v: str(v) if isinstance(v, str | int) else None)
def test_no_test_group_passes_with_its_rule_deleted(name, index, doc, alerts, tmp_path):
    """A test group that only checked that nothing fires would pass with no rule at all."""
    assert alerts, f"{name} tests[{index}] names no alert"
    for alert in alerts:
        case = tmp_path / alert
        rules, tests = _copy_tree(case)
        (tests / name).write_text(yaml.safe_dump({**doc, "tests": [doc["tests"][index]]}))
        kept = observe.test_rules(rules, tests)
        assert next(r for r in kept.results if r.alert == alert).passed  # the group alone passes with the rule...
        _delete_rule(rules, alert)
        deleted = observe.test_rules(rules, tests)  # ...and fails without it
        assert "FAILED" in deleted.output and f"alertname: {alert}, time:" in deleted.output


def test_a_rule_that_does_not_parse_is_named_with_promtools_error(tmp_path):
    rules, tests = _copy_tree(tmp_path)
    (rules / "nodes.yaml").write_text((RULES / "nodes.yaml").read_text().replace("== 0\n        for: 2m", "== \n        for: 2m"))
    check = observe.check_rules(rules)
    assert not check.ok
    assert [f.file.name for f in check.files if not f.ok] == ["nodes.yaml"]
    assert "parse error" in check.table().set_index("file").loc["nodes.yaml", "promtool"]
    shutil.copy(TESTS / "nodes.test.yaml", tests)
    result = observe.test_rules(rules, tests)
    assert not result.ok and all(r.failed == r.cases for r in result.results if r.cases)


def test_an_untested_rule_and_a_test_of_no_rule_are_reported(tmp_path):
    rules, tests = _copy_tree(tmp_path)
    doc = yaml.safe_load((TESTS / "general.test.yaml").read_text())
    doc["tests"][0]["alert_rule_test"][0]["alertname"] = "WatchDog"
    (tests / "general.test.yaml").write_text(yaml.safe_dump(doc))
    result = observe.test_rules(rules, tests)
    assert result.strays == ["WatchDog"] and not result.ok
    untested = result.table().query("cases == 0")["rule"]
    assert set(untested) == P1 and not result.table()["passed"].any()


def test_a_missing_promtool_names_make_programs(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(observe, "BUNDLED_PROMTOOL", tmp_path / "promtool")
    with pytest.raises(LabError, match=r"promtool is not installed: run `make programs`"):
        observe.check_rules(RULES)
