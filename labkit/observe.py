"""Observability: the lab's alert rules as code, checked and unit-tested with Prometheus' promtool.

``check_rules(folder)`` runs ``promtool check rules`` on every rule file (PrometheusRule groups,
``parameters/alerts/*.yaml``); ``test_rules(folder, tests)`` runs ``promtool test rules`` on every
``*.test.yaml`` and tells, per rule, how many of its test cases passed. A rule no test names is
reported (0 cases, not passed), so "every rule is tested" is a check like the others.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit import localfiles, yamlfile
from labkit.errors import LabError

# Debian's prometheus package, extracted by `make programs` into the checkout's .tools.
BUNDLED_PROMTOOL = Path(__file__).resolve().parents[1] / ".tools" / "prometheus" / "usr" / "bin" / "promtool"
TIMEOUT = 60  # seconds; promtool checks a lab's rules in well under one


def promtool() -> str:
    """The promtool to run: on PATH, else the one `make programs` extracts."""
    found = shutil.which("promtool") or (str(BUNDLED_PROMTOOL) if BUNDLED_PROMTOOL.exists() else None)
    if found is None:
        raise LabError("promtool is not installed: run `make programs` (it extracts Debian's prometheus "
                       f"package into .tools/prometheus) or put promtool on PATH; looked in PATH and {BUNDLED_PROMTOOL}")
    return found


def _run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT)


def _files(folder: Path, pattern: str) -> list[Path]:
    files = sorted(Path(folder).glob(pattern))
    if not files:
        raise LabError(f"no {pattern} files in {folder}; give the folder holding them")
    return files


def _yaml(path: Path) -> dict:
    doc = yamlfile.load(localfiles.read_text(path))
    return doc if isinstance(doc, dict) else {}


@dataclass(frozen=True)
class RuleFileCheck:
    file: Path
    ok: bool
    output: str  # promtool's report: the rule count, or what does not parse and where


@dataclass(frozen=True)
class RulesCheck:
    files: list[RuleFileCheck]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"file": f.file.name, "ok": f.ok, "promtool": f.output} for f in self.files],
                            columns=["file", "ok", "promtool"])


def check_rules(folder: str | Path) -> RulesCheck:
    """``promtool check rules`` on each rule file of ``folder`` (one run per file, so a broken
    file is named and the others still checked)."""
    checks = []
    for path in _files(Path(folder), "*.yaml"):
        done = _run("check", "rules", path)
        checks.append(RuleFileCheck(path, done.returncode == 0, (done.stdout + done.stderr).strip()))
    return RulesCheck(checks)


@dataclass(frozen=True)
class Rule:
    file: Path
    group: str
    alert: str


def rules(folder: str | Path) -> list[Rule]:
    """The alerting rules of the rule files in ``folder``, in file and group order."""
    return [Rule(path, group.get("name", ""), rule["alert"])
            for path in _files(Path(folder), "*.yaml")
            for group in _yaml(path).get("groups") or []
            for rule in group.get("rules") or [] if "alert" in rule]


@dataclass(frozen=True)
class RuleTest:
    group: str
    alert: str
    test_file: str  # the test files naming this alert, comma-separated
    cases: int  # alert_rule_test entries naming this alert
    failed: int

    @property
    def passed(self) -> bool:
        return self.cases > 0 and self.failed == 0


@dataclass(frozen=True)
class RuleTests:
    results: list[RuleTest]
    strays: list[str]  # alert names the tests name that no rule has (a typo tests nothing)
    output: str  # promtool's reports, one per test file

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.results) and not self.strays

    def table(self) -> pd.DataFrame:
        rows = [{"rule group": r.group, "rule": r.alert, "test file": r.test_file, "cases": r.cases,
                 "failed": r.failed, "passed": r.passed} for r in self.results]
        return pd.DataFrame(rows, columns=["rule group", "rule", "test file", "cases", "failed", "passed"])


def _cases(test_file: Path) -> dict[str, int]:
    """alert_rule_test entries per alert name in one promtool test file."""
    counts: dict[str, int] = {}
    for group in _yaml(test_file).get("tests") or []:
        for case in group.get("alert_rule_test") or []:
            counts[case.get("alertname", "")] = counts.get(case.get("alertname", ""), 0) + 1
    return counts


def _failures(output: str, cases: dict[str, int], returncode: int) -> dict[str, int]:
    """Failed cases per alert from promtool's report; a file that did not run at all (a rule
    file that does not parse, a bad test file) fails every case it holds."""
    failed = {name: len(re.findall(rf"alertname: {re.escape(name)}, time:", output)) for name in cases}
    if returncode != 0 and not any(failed.values()):
        return dict(cases)
    return failed


def test_rules(folder: str | Path, tests: str | Path) -> RuleTests:
    """``promtool test rules`` on each ``*.test.yaml`` in ``tests``, per rule of ``folder``."""
    cases: dict[str, int] = {}
    failed: dict[str, int] = {}
    named_in: dict[str, list[str]] = {}
    reports = []
    for path in _files(Path(tests), "*.test.yaml"):
        done = _run("test", "rules", path)
        reports.append((done.stdout + done.stderr).strip())
        here = _cases(path)
        for name, count in _failures(done.stdout + done.stderr, here, done.returncode).items():
            failed[name] = failed.get(name, 0) + count
        for name, count in here.items():
            cases[name] = cases.get(name, 0) + count
            named_in.setdefault(name, []).append(path.name)
    known = rules(folder)
    results = [RuleTest(r.group, r.alert, ", ".join(named_in.get(r.alert, [])), cases.get(r.alert, 0),
                        failed.get(r.alert, 0)) for r in known]
    strays = sorted(set(cases) - {r.alert for r in known})
    return RuleTests(results, strays, "\n\n".join(reports))
