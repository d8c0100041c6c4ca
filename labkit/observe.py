"""Observability: the lab's alert rules as code, checked and unit-tested with Prometheus' promtool;
and the running stack used as an operator uses it (PromQL, targets, rules, Alertmanager, ntfy,
LogQL, Grafana), each call returning typed results or DataFrames.

``check_rules(folder)`` runs ``promtool check rules`` on every rule file (PrometheusRule groups,
``parameters/alerts/*.yaml``); ``test_rules(folder, tests)`` runs ``promtool test rules`` on every
``*.test.yaml`` and tells, per rule, how many of its test cases passed. A rule no test names is
reported (0 cases, not passed), so "every rule is tested" is a check like the others.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import requests
from kubernetes import client

from labkit import localfiles, polling, yamlfile
from labkit.changes import Check
from labkit.errors import LabError
from labkit.params import Lab, duration_seconds

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


def _run_each(command: tuple[str, str], paths: list[Path]) -> list[subprocess.CompletedProcess]:
    """``promtool <command> <path>`` for each path, side by side (each run is mostly promtool's own
    start), in the order of ``paths``."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda path: _run(*command, path), paths))


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
    paths = _files(Path(folder), "*.yaml")
    return RulesCheck([RuleFileCheck(path, done.returncode == 0, (done.stdout + done.stderr).strip())
                       for path, done in zip(paths, _run_each(("check", "rules"), paths), strict=True)])


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
    paths = _files(Path(tests), "*.test.yaml")
    for path, done in zip(paths, _run_each(("test", "rules"), paths), strict=True):
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


# == the running stack: PromQL, targets, rules, Alertmanager, ntfy, LogQL, Grafana =====================
# Prometheus, Alertmanager and Loki are reached through the API server's pods/portforward (what
# `kubectl port-forward` does: nothing needs exposing); Grafana over HTTPS through Traefik with the
# ingress certificate, as a person opens it; ntfy at its own server, with the lab's token.

PODS = {"prometheus": ("app.kubernetes.io/name=prometheus", 9090),
        "alertmanager": ("app.kubernetes.io/name=alertmanager", 9093),
        "loki": ("app=loki", 3100)}
HTTP_TIMEOUT = 15
# The waits below look this often (seconds): what they wait for comes at the programs' own moments
# (a discovery batch, each 5 s in Prometheus; a scrape; an evaluation), and a look is a request or
# two on a kept connection (Stack.session).
LOOK = 0.25


class ObserveError(LabError):
    pass


@dataclass
class Stack:
    """Local URLs of the stack's APIs (port-forwards kept open until ``close``). Requests go through
    one keep-alive session: each new connection to a forwarded port is a new tunnel through the API
    server (a websocket, about 25 ms), a kept one costs nothing more. 04's two drills share it from
    two threads: its connection pool is thread-safe, and these APIs set no cookies."""

    urls: dict[str, str]
    _forwards: contextlib.ExitStack
    session: requests.Session = field(default_factory=requests.Session)

    def url(self, component: str) -> str:
        return self.urls[component]

    def get(self, component: str, path: str, **params) -> dict:
        """GET ``path`` of a component's API: its JSON answer (an ObserveError otherwise)."""
        return self._answer(component, path, params).json()

    def text(self, component: str, path: str) -> str:
        """GET ``path`` of a component (its /metrics): the body (an ObserveError otherwise)."""
        return self._answer(component, path, {}).text

    def _answer(self, component: str, path: str, params: dict) -> requests.Response:
        url = self.url(component) + path
        try:
            answer = self.session.get(url, params=params, timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            raise ObserveError(f"GET {url}: {exc}") from None
        if answer.status_code != 200:
            raise ObserveError(f"GET {url}: HTTP {answer.status_code}: {answer.text[:300]}")
        return answer

    def close(self) -> None:
        self.session.close()
        self._forwards.close()


def connect(api: client.ApiClient, lab: Lab) -> Stack:
    """Port-forwards to the Ready Prometheus, Alertmanager and Loki pods of the lab's namespace."""
    from labkit.postgres import forward  # the one port-forward helper (pods/portforward, as kubectl does)

    ns, core = _namespace(lab), client.CoreV1Api(api)
    forwards, urls = contextlib.ExitStack(), {}
    for component, (selector, port) in PODS.items():
        pods = [p for p in core.list_namespaced_pod(ns, label_selector=selector).items if _ready(p)]
        if not pods:
            forwards.close()
            raise ObserveError(f"no Ready {component} pod in {ns} (selector {selector}); deploy 04's stack first")
        local = forwards.enter_context(forward(api, ns, pods[0].metadata.name, port))
        urls[component] = f"http://127.0.0.1:{local}"
    return Stack(urls, forwards)


def _namespace(lab: Lab) -> str:
    if lab.observability is None:
        raise ObserveError(f"{lab.path}: no observability section (see parameters/sim.yaml)")
    return lab.observability.namespace


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


# -- PromQL ------------------------------------------------------------------------------------------------

def query(stack: Stack, promql: str) -> pd.DataFrame:
    """An instant PromQL query: one row per series, its labels as columns and ``value``."""
    data = stack.get("prometheus", "/api/v1/query", query=promql)["data"]
    rows = [{**r["metric"], "value": float(r["value"][1])} for r in data["result"]]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["value"])


def query_range(stack: Stack, promql: str, *, minutes: float = 15, step: str = "30s") -> pd.DataFrame:
    """A range query over the last ``minutes``: rows of (time, series, labels..., value)."""
    end = time.time()
    data = stack.get("prometheus", "/api/v1/query_range", query=promql, start=end - minutes * 60,
                end=end, step=step)["data"]
    rows = [{"time": pd.Timestamp(t, unit="s", tz="UTC"), "series": _series(r["metric"]), **r["metric"],
             "value": float(v)} for r in data["result"] for t, v in r["values"]]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["time", "series", "value"])


def _series(labels: dict) -> str:
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "value"


# -- targets -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Targets:
    targets: pd.DataFrame  # job, instance, health, lastError, scrapeUrl, pool (the scrape pool)

    def table(self) -> pd.DataFrame:
        """Jobs x up/down, with the first error of a job that has targets down."""
        rows = []
        for job, group in self.targets.groupby("job", sort=True):
            down = group[group["health"] == "down"]
            rows.append({"job": job, "up": int((group["health"] == "up").sum()), "down": len(down),
                         "not scraped yet": int((group["health"] == "unknown").sum()),
                         "down targets": ", ".join(down["instance"]),
                         "last error": down["lastError"].iloc[0] if len(down) else ""})
        return pd.DataFrame(rows, columns=["job", "up", "down", "not scraped yet", "down targets", "last error"])

    def checks(self, expected: list[str]) -> list[Check]:
        table = self.table().set_index("job")
        checks = []
        for job in expected:
            if job not in table.index:
                checks.append(Check(f"target {job} is scraped", False, "no such job in Prometheus' targets"))
                continue
            row = table.loc[job]
            detail = f"{row['up']} up" + (f", {row['not scraped yet']} not scraped yet" if row["not scraped yet"] else "")
            if row["down"]:
                detail = f"{row['down']} down ({row['down targets']}): {row['last error']}"
            passed = bool(row["down"] == 0 and row["not scraped yet"] == 0 and row["up"] > 0)
            checks.append(Check(f"target {job} is up", passed, detail))
        return checks


def targets(stack: Stack) -> Targets:
    active = stack.get("prometheus", "/api/v1/targets", state="active")["data"]["activeTargets"]
    rows = [{"job": t["labels"].get("job", t.get("scrapePool", "")), "instance": t["labels"].get("instance", ""),
             "health": t["health"], "lastError": t.get("lastError", ""), "scrapeUrl": t.get("scrapeUrl", ""),
             "pool": t.get("scrapePool", "")} for t in active]
    return Targets(pd.DataFrame(rows, columns=["job", "instance", "health", "lastError", "scrapeUrl", "pool"]))


def scrape_pools(stack: Stack) -> set[str] | None:
    """The scrape pools (jobs as configured) Prometheus runs (``/api/v1/scrape_pools``, Prometheus
    2.42 and later; None from an older one)."""
    try:
        return set(stack.get("prometheus", "/api/v1/scrape_pools")["data"]["scrapePools"])
    except ObserveError:
        return None


def discovered_jobs(stack: Stack, *, timeout: float = 180, settle: float = 3) -> list[str]:
    """The jobs Prometheus scrapes, once it has found them: after a (re)load, service discovery and
    the scrape manager take a few seconds to list the targets (an empty list then means "not yet",
    not "none"). Found means every scrape pool Prometheus is configured with has targets; or, when
    one has none (a ServiceMonitor selecting no Service, a Prometheus without the scrape pools API),
    the list has stayed the same for ``settle`` seconds."""
    deadline, seen, since, pause = time.monotonic() + timeout, None, time.monotonic(), polling.pauses(most=LOOK)
    while True:
        found, pools = targets(stack).targets, scrape_pools(stack)
        jobs = sorted(found["job"].unique())
        if jobs != seen:
            seen, since = jobs, time.monotonic()
        complete = bool(pools) and pools <= set(found["pool"])
        if (jobs and (complete or time.monotonic() - since >= settle)) or time.monotonic() > deadline:
            return jobs
        time.sleep(next(pause))


def wait_targets(stack: Stack, expected: list[str], *, timeout: float = 180) -> Targets:
    """Targets once every expected job has all its targets up, or as they are at the timeout."""
    return polling.until(lambda: targets(stack), lambda found: all(c.passed for c in found.checks(expected)),
                         timeout=timeout, most=LOOK)


# -- rules loaded --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadedRules:
    rules: pd.DataFrame  # group, rule, type, health, state, lastError

    def checks(self, wanted: list[str]) -> list[Check]:
        alerts = self.rules[self.rules["type"] == "alerting"].set_index("rule")
        missing = [name for name in wanted if name not in alerts.index]
        broken = self.rules[self.rules["health"] == "err"]
        return [Check("the lab's alert rules are loaded by Prometheus", not missing,
                      f"missing: {', '.join(missing)}" if missing else f"{len(wanted)} of {len(wanted)} loaded"),
                Check("no rule has an evaluation error", broken.empty,
                      "; ".join(f"{r.rule}: {r.lastError}" for r in broken.itertuples()) or
                      f"{len(self.rules)} rules evaluated")]


def loaded_rules(stack: Stack) -> LoadedRules:
    groups = stack.get("prometheus", "/api/v1/rules")["data"]["groups"]
    rows = [{"group": g["name"], "rule": r["name"], "type": r["type"], "health": r.get("health", ""),
             "state": r.get("state", ""), "lastError": r.get("lastError", "")}
            for g in groups for r in g["rules"]]
    return LoadedRules(pd.DataFrame(rows, columns=["group", "rule", "type", "health", "state", "lastError"]))


def wait_rules(stack: Stack, wanted: list[str], *, timeout: float = 180, skip: tuple[str, ...] = ()) -> LoadedRules:
    """The rules once the wanted alerts are loaded and every rule has been evaluated once; the rule
    groups named in ``skip`` (a drill's copy, loaded meanwhile) left out."""
    def look() -> LoadedRules:
        rules = loaded_rules(stack).rules
        return LoadedRules(rules[~rules["group"].isin(skip)].reset_index(drop=True))

    def done(found: LoadedRules) -> bool:
        evaluated = not found.rules.empty and (found.rules["health"] != "unknown").all()
        return bool(evaluated and found.checks(wanted)[0].passed)
    return polling.until(look, done, timeout=timeout, most=LOOK)


def rule_timing(stack: Stack, group: str, alert: str) -> tuple[float | None, float | None]:
    """As Prometheus runs rule group ``group`` (``/api/v1/rules``, one request): the ``for`` it holds
    ``alert`` pending with and the seconds between the group's evaluations (None where not found).
    The rule file's values on a real lab; on the embedded lab below time scale 1, the lab clock's."""
    found = next((g for g in stack.get("prometheus", "/api/v1/rules", type="alert")["data"]["groups"]
                  if g["name"] == group), None)
    if found is None:
        return None, None
    held = next((float(r.get("duration", 0)) for r in found["rules"] if r["name"] == alert), None)
    return held, float(found["interval"]) if found.get("interval") else None


def alertmanagers(stack: Stack) -> list[str]:
    """The Alertmanagers Prometheus sends alerts to now (``/api/v1/alertmanagers``). Right after a
    configuration reload (a new PrometheusRule) the list is empty until discovery finds them again,
    and an alert that fires meanwhile is dropped, sent again after Prometheus' resend delay (1m; the
    embedded lab's clock scales it)."""
    return [a["url"] for a in stack.get("prometheus", "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]]


def prometheus_alerts(stack: Stack) -> list[dict]:
    """Prometheus' pending and firing alerts (``/api/v1/alerts``): labels, annotations, state, activeAt."""
    return stack.get("prometheus", "/api/v1/alerts")["data"]["alerts"]


# -- Alertmanager ------------------------------------------------------------------------------------------

def post_alert(stack: Stack, labels: dict[str, str], annotations: dict[str, str], *,
               ends_at: datetime | None = None) -> None:
    """Post one alert as ``amtool alert add`` does (POST /api/v2/alerts); with ``ends_at``, resolve it."""
    alert = {"labels": labels, "annotations": annotations, "generatorURL": "https://labkit/drill"}
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat()
    url = stack.url("alertmanager") + "/api/v2/alerts"
    try:
        answer = stack.session.post(url, json=[alert], timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        raise ObserveError(f"POST {url}: {exc}") from None
    if answer.status_code != 200:
        raise ObserveError(f"Alertmanager refused the alert: HTTP {answer.status_code}: {answer.text[:300]}")


def group_wait(stack: Stack) -> float | None:
    """How long the running Alertmanager holds a new group (its root route's ``group_wait``, in
    seconds), from the configuration it loaded (``/api/v2/status``): the lab file's on a real lab;
    on the embedded lab at a time scale below 1, the lab clock's."""
    route = (yamlfile.load(stack.get("alertmanager", "/api/v2/status")["config"]["original"]) or {}).get("route")
    return duration_seconds(route["group_wait"]) if isinstance(route, dict) and route.get("group_wait") else None


def alerts(stack: Stack) -> pd.DataFrame:
    """Alertmanager's alerts: name, severity, state, since, receivers."""
    found = stack.get("alertmanager", "/api/v2/alerts")
    rows = [{"alertname": a["labels"].get("alertname", ""), "severity": a["labels"].get("severity", ""),
             "state": a["status"]["state"], "startsAt": a["startsAt"],
             "receivers": ", ".join(r["name"] for r in a.get("receivers") or [])} for a in found]
    return pd.DataFrame(rows, columns=["alertname", "severity", "state", "startsAt", "receivers"])


def notifications(stack: Stack) -> pd.DataFrame:
    """Alertmanager's notification counters per integration: sent, failed (its /metrics)."""
    metrics = stack.text("alertmanager", "/metrics")
    counts: dict[str, dict[str, float]] = {}
    for name, labels, value in re.findall(r'^(alertmanager_notifications(?:_failed)?_total)\{([^}]*)\} (\S+)$',
                                          metrics, re.M):
        integration = dict(re.findall(r'(\w+)="([^"]*)"', labels)).get("integration", "")
        row = counts.setdefault(integration, {"sent": 0.0, "failed": 0.0})
        row["failed" if "failed" in name else "sent"] += float(value)
    used = {k: v for k, v in counts.items() if k == "webhook" or v["sent"] or v["failed"]}  # ntfy's is the webhook
    return pd.DataFrame([{"integration": k, **v} for k, v in sorted(used.items())],
                        columns=["integration", "sent", "failed"])


# -- ntfy ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NtfyMessage:
    time: datetime
    title: str
    message: str
    priority: int
    tags: list[str]


def ntfy_poll(lab: Lab, *, since: str = "all") -> list[NtfyMessage]:
    """The topic's cached messages (``/<topic>/json?poll=1&since=``), with the lab's token."""
    ntfy = lab.observability.ntfy if lab.observability else None
    if ntfy is None:
        raise ObserveError(f"{lab.path}: no observability.ntfy section")
    headers = {"Authorization": f"Bearer {lab.secret(ntfy.access_token)}"} if ntfy.access_token else {}
    try:
        answer = requests.get(f"{ntfy.server}/{ntfy.topic}/json", params={"poll": "1", "since": since},
                              headers=headers, timeout=HTTP_TIMEOUT, verify=str(ntfy.ca_file) if ntfy.ca_file else True)
    except requests.RequestException as exc:
        raise ObserveError(f"ntfy at {ntfy.server} does not answer: {exc}") from None
    if answer.status_code != 200:
        raise ObserveError(f"ntfy {ntfy.server}: HTTP {answer.status_code}: {answer.text[:200]}")
    found = [json.loads(line) for line in answer.text.splitlines() if line.strip()]
    return [NtfyMessage(datetime.fromtimestamp(m["time"], UTC), m.get("title", ""), m.get("message", ""),
                        m.get("priority", 3), m.get("tags") or []) for m in found if m.get("event") == "message"]


# -- the end-to-end drill ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Drill:
    alert: str
    group_wait: float  # seconds, the lab's routing.group_wait
    margin: float
    fired: datetime
    delivered: datetime | None
    resolved: datetime | None
    resolution_delivered: datetime | None
    priority: int | None
    error: str = ""
    running_group_wait: float | None = None  # seconds, as the running Alertmanager holds a group (group_wait())

    @property
    def latency(self) -> float | None:
        return (self.delivered - self.fired).total_seconds() if self.delivered else None

    def checks(self) -> list[Check]:
        bound = self.group_wait + self.margin
        latency = self.latency
        return [Check(f"the drill alert reaches ntfy within group_wait + {self.margin:g} s ({bound:g} s)",
                      latency is not None and latency <= bound,
                      f"delivered after {latency:.1f} s{self._clock()}" if latency is not None
                      else self.error or "not delivered"),
                Check("it pages with ntfy priority 5 (max)", self.priority == 5, f"priority {self.priority}"),
                Check("its resolution reaches ntfy", self.resolution_delivered is not None,
                      f"after {(self.resolution_delivered - self.resolved).total_seconds():.1f} s"
                      if self.resolution_delivered and self.resolved else self.error or "not delivered")]

    def _clock(self) -> str:
        """Said when Alertmanager runs another group_wait than the lab file's: the figure is the lab clock's."""
        running = self.running_group_wait
        if running is None or running == self.group_wait:
            return ""
        return f" (on the lab's clock: Alertmanager runs group_wait {running:g} s for the lab file's {self.group_wait:g} s)"

    def timeline(self) -> pd.DataFrame:
        """The alert's path as timed steps (fired -> delivered, resolved -> delivered)."""
        rows = [("firing: Alertmanager -> ntfy", self.fired, self.delivered),
                ("resolved: Alertmanager -> ntfy", self.resolved, self.resolution_delivered)]
        return pd.DataFrame([{"step": s, "start": a, "end": b, "seconds": (b - a).total_seconds()}
                             for s, a, b in rows if a and b], columns=["step", "start", "end", "seconds"])


def drill(stack: Stack, lab: Lab, *, margin: float = 20, timeout: float = 120) -> Drill:
    """Post a synthetic paging alert to Alertmanager (as amtool does), measure until ntfy holds its
    notification, resolve it and wait for the resolution's notification."""
    obs = lab.observability
    assert obs is not None
    run = uuid.uuid4().hex[:8]
    labels = {"alertname": "LabkitDrill", "severity": obs.routing.page_severities[0], "drill": "true",
              "namespace": obs.namespace, "instance": f"drill-{run}"}
    notes = {"summary": f"labkit end-to-end drill {run}", "description": "posted by 04-observability"}
    running = group_wait(stack)
    since = str(int(time.time()) - 1)
    fired = datetime.now(UTC)
    post_alert(stack, labels, notes)
    firing, error = _wait_message(lab, since, "🚨", run, timeout)
    resolved = datetime.now(UTC)
    post_alert(stack, labels, notes, ends_at=resolved)  # also when it was not delivered: it must not stay firing
    if firing is None:
        return Drill("LabkitDrill", duration_seconds(obs.routing.group_wait), margin, fired, None, None, None, None,
                     f"no ntfy message within {timeout:g} s{error}", running)
    done, _ = _wait_message(lab, since, "✅", run, timeout)
    return Drill("LabkitDrill", duration_seconds(obs.routing.group_wait), margin, fired, firing.time_seen, resolved,
                 done.time_seen if done else None, firing.message.priority, running_group_wait=running)


@dataclass(frozen=True)
class _Seen:
    message: NtfyMessage
    time_seen: datetime


def _wait_message(lab: Lab, since: str, mark: str, run: str, timeout: float) -> tuple[_Seen | None, str]:
    """The first message whose title starts with ``mark`` and whose text names the drill's run; or
    None and, if polling ntfy failed, its last error."""
    deadline, error, pause = time.monotonic() + timeout, "", polling.pauses(most=0.5)
    while time.monotonic() < deadline:
        try:
            for message in ntfy_poll(lab, since=since):
                if message.title.startswith(mark) and run in message.message:
                    return _Seen(message, datetime.now(UTC)), ""
        except ObserveError as exc:
            error = f" (last poll: {exc})"
        time.sleep(next(pause))
    return None, error


# -- LogQL ---------------------------------------------------------------------------------------------------

def logql(stack: Stack, query_text: str, *, minutes: float = 60, limit: int = 100) -> pd.DataFrame:
    """Log lines of a LogQL query over the last ``minutes``: time, namespace, pod, container, line."""
    end = time.time()
    data = stack.get("loki", "/loki/api/v1/query_range", query=query_text, start=int((end - minutes * 60) * 1e9),
                end=int(end * 1e9), limit=limit)["data"]
    rows = [{"time": pd.Timestamp(int(ts), unit="ns", tz="UTC"), "namespace": s["stream"].get("namespace", ""),
             "pod": s["stream"].get("pod", ""), "container": s["stream"].get("container", ""), "line": line}
            for s in data["result"] for ts, line in s["values"]]
    return pd.DataFrame(rows, columns=["time", "namespace", "pod", "container", "line"]).sort_values("time")


def wait_log_line(stack: Stack, query_text: str, *, timeout: float = 120) -> pd.DataFrame:
    """The query's lines once at least one is there (promtail ships every few seconds)."""
    return polling.until(lambda: logql(stack, query_text), lambda found: not found.empty, timeout=timeout)


# -- Grafana over HTTPS ------------------------------------------------------------------------------------

class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to ``address`` with SNI and certificate name ``host`` (Traefik's address, Grafana's name)."""

    def __init__(self, host: str, address: str, context: ssl.SSLContext) -> None:
        super().__init__(host, 443, context=context, timeout=HTTP_TIMEOUT)
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


@dataclass(frozen=True)
class GrafanaProbe:
    url: str
    health: dict
    datasources: pd.DataFrame  # name, type, url, default, health
    dashboards: pd.DataFrame  # title, uid, folder, tags
    error: str = ""

    def checks(self, dashboards_at_least: int = 1) -> list[Check]:
        sources = self.datasources
        healthy = sources[sources["health"] == "OK"]["type"].tolist() if not sources.empty else []
        return [Check(f"Grafana answers {self.url} with a verified certificate and is healthy",
                      self.health.get("database") == "ok", self.error or f"version {self.health.get('version')}"),
                Check("Grafana's Prometheus and Loki datasources work", {"prometheus", "loki"} <= set(healthy),
                      "; ".join(f"{r.name}: {r.health}" for r in sources.itertuples()) or self.error),
                Check("Grafana lists the provisioned dashboards", len(self.dashboards) >= dashboards_at_least,
                      f"{len(self.dashboards)} dashboards")]


def grafana(api: client.ApiClient, lab: Lab) -> GrafanaProbe:
    """Log in to Grafana at https://<grafana.host> through Traefik (verified against the ingress
    issuer's CA) with the admin password of the lab file; its health, datasources (each checked
    by Grafana itself) and dashboards."""
    from labkit.net import traefik_address

    obs = lab.observability
    assert obs is not None
    host, address = obs.grafana.host, traefik_address(api)
    issuer = next((i for i in (lab.tls.issuers if lab.tls else []) if i.name == lab.ingress.issuer), None)
    context = ssl.create_default_context(cafile=str(issuer.ca_file) if issuer and issuer.ca_file else None)
    login = base64.b64encode(f"admin:{lab.secret(obs.grafana.admin_password)}".encode()).decode()

    def call(path: str) -> tuple[int, object]:
        connection = _PinnedHTTPS(host, address, context)
        try:
            connection.request("GET", path, headers={"Authorization": f"Basic {login}", "Host": host})
            answer = connection.getresponse()
            return answer.status, json.loads(answer.read() or b"null")
        finally:
            connection.close()

    url = f"https://{host}"
    try:
        status, health = call("/api/health")
        _, sources = call("/api/datasources")
        _, boards = call("/api/search?type=dash-db")
        checked = [(s, call(f"/api/datasources/uid/{s['uid']}/health")[1]) for s in sources]
    except (OSError, ssl.SSLError, ValueError) as exc:
        return GrafanaProbe(url, {}, pd.DataFrame(columns=["name", "type", "url", "default", "health"]),
                            pd.DataFrame(columns=["title", "uid", "folder", "tags"]), f"{type(exc).__name__}: {exc}")
    sources_table = pd.DataFrame([{"name": s["name"], "type": s["type"], "url": s["url"], "default": s["isDefault"],
                                   "health": (h or {}).get("status", ""), "message": (h or {}).get("message", "")}
                                  for s, h in checked], columns=["name", "type", "url", "default", "health", "message"])
    boards_table = pd.DataFrame([{"title": b["title"], "uid": b["uid"], "folder": b.get("folderTitle", ""),
                                  "tags": ", ".join(b.get("tags") or [])} for b in boards],
                                columns=["title", "uid", "folder", "tags"])
    return GrafanaProbe(url, health if status == 200 else {}, sources_table, boards_table)
