"""04's fault-fired drill: a real alert from a real condition, followed to the phone and back.

One node's disk is filled past NodeDiskAlmostFull's threshold; the real Prometheus evaluates the
lab's rule on node-exporter's numbers, Alertmanager routes the alert, ntfy receives the page; then
the fill is removed and the alert resolves. Each step is timed (fault -> pending -> firing -> page
at ntfy; cleared -> resolved -> resolution at ntfy).

How the disk is filled (destructive only to what the drill creates):

- a real lab: over SSH, ``fallocate`` one file, FILL_PATH in /var/tmp, sized from ``df`` so that
  ``percent`` of that filesystem is used; afterwards ``rm -f`` of that one path.
- the embedded lab: its fault endpoint's ``disk_full`` for the node, then ``disk_clear`` (the
  twin's node-exporter reports the node model's filesystem, which files written over SSH do not
  fill; so the SSH branch above is not exercised by the tests).

The lab's rule waits ``for: 5m``, and a real lab's Prometheus runs on real time. So the drill
applies a copy of the lab's rule (same expression, labels and annotations) with ``for: DRILL_FOR``,
evaluated every DRILL_INTERVAL and labelled drill="true" (Alertmanager's drill route: resolved
within one group_wait), in a PrometheusRule of its own that it removes afterwards. The copy fires on
exactly the condition the lab's rule fires on; the lab's rule and its promtool tests stay as they are.

The bounds are a real lab's: ``timeout`` for each state, and for the page the group_wait
Alertmanager runs (its loaded configuration's) + PAGE_MARGIN. The embedded lab's Prometheus and
Alertmanager keep the lab's clock (at a time scale below 1 they run these waits shorter): the
drill then ends sooner, and its checks and timeline name the ``for`` and group_wait the programs ran.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pandas as pd
import requests
import yaml
from kubernetes import client

from labkit import manifests, observe, polling, ssh
from labkit.changes import Check
from labkit.params import Lab, duration_seconds

ALERT = "NodeDiskAlmostFull"
DRILL_FOR = "10s"  # long enough to show the pending state, short enough for a notebook
DRILL_INTERVAL = "5s"  # the drill group's evaluation interval (the lab's is 30 s)
DRILL_SET = "observability-drill"  # labkit.manifests' set of the drill's PrometheusRule
RULE_KIND = ("monitoring.coreos.com/v1", "PrometheusRule")
FILL_PATH = "/var/tmp/labkit-drill-fill"
PAGE_MARGIN = 30.0  # seconds past group_wait for the page to reach ntfy once the alert fires
LOOKS_PER_EVALUATION = 4  # the drill's states change once per evaluation: looked at so often, at most each second
RELOAD_LOOK = 0.25  # seconds between looks for the copy, loaded and evaluated after Prometheus' reload
T = TypeVar("T")


class DrillError(observe.ObserveError):
    pass


# -- the rule's drill copy ---------------------------------------------------------------------------------

def drill_rule(lab: Lab) -> dict:
    """The PrometheusRule holding the drill copy of the lab's ALERT rule."""
    obs = lab.observability
    assert obs is not None
    for path in sorted(Path(obs.rules).glob("*.yaml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups") or []:
            rule = next((r for r in group.get("rules") or [] if r.get("alert") == ALERT), None)
            if rule is not None:
                copy = {**rule, "for": DRILL_FOR, "labels": {**(rule.get("labels") or {}), "drill": "true"}}
                return {"apiVersion": RULE_KIND[0], "kind": RULE_KIND[1],
                        "metadata": {"name": "labkit-drill", "namespace": obs.namespace,
                                     "labels": {"release": "kube-prometheus-stack", "role": "alert-rules"}},
                        "spec": {"groups": [{"name": f"{group['name']}-drill", "interval": DRILL_INTERVAL,
                                             "rules": [copy]}]}}
    raise DrillError(f"{obs.rules}: no alerting rule {ALERT}; the disk drill fires that rule")


# -- filling a node's disk ---------------------------------------------------------------------------------

def fill_disk(lab: Lab, node: str, percent: float) -> None:
    """``percent`` of the node's disk used from now on (see the module's docstring for how)."""
    if lab.kind == "embedded":
        _embedded_fault(lab, {"fault": "disk_full", "node": node, "percent": percent})
        return
    session = ssh.connect(lab)
    size, avail = map(int, session.run(node, f"df -B1 --output=size,avail {Path(FILL_PATH).parent} | tail -1")
                      .stdout.split())
    wanted = avail - int(size * (100 - percent) / 100)
    if wanted > 0:
        session.run(node, f"rm -f {FILL_PATH} && fallocate -l {wanted} {FILL_PATH}")


def clear_disk(lab: Lab, node: str) -> None:
    if lab.kind == "embedded":
        _embedded_fault(lab, {"fault": "disk_clear", "node": node})
    else:
        ssh.connect(lab).run(node, f"rm -f {FILL_PATH}")


def _embedded_fault(lab: Lab, fault: dict) -> dict:
    """The embedded lab's fault endpoint (its stand-in for hands on the hardware); its fault list."""
    pve = lab.proxmox
    try:
        answer = requests.post(f"https://{pve.host}:{pve.port}/labsim/faults", json=fault, timeout=60,
                               headers={"Authorization": f"PVEAPIToken={pve.token_id}={lab.secret(pve.token_secret)}"},
                               verify=str(pve.ca_file) if pve.ca_file else True)
    except requests.RequestException as exc:
        raise DrillError(f"the embedded lab's fault endpoint does not answer: {exc}") from None
    if answer.status_code != 200:
        raise DrillError(f"the embedded lab refused {fault['fault']}: HTTP {answer.status_code}: {answer.text[:200]}")
    return answer.json()["data"]


# -- the drill -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiskDrill:
    node: str
    instance: str  # the alert's instance label
    filled: datetime
    pending: datetime | None
    firing: datetime | None
    delivered: datetime | None  # the page seen at ntfy
    cleared: datetime | None
    resolved: datetime | None  # gone from Prometheus' alerts
    resolution_delivered: datetime | None
    page: observe.NtfyMessage | None
    error: str = ""
    held_for: float | None = None  # seconds: the copy's `for` as Prometheus runs it (observe.rule_timing)
    group_wait: float | None = None  # seconds: the lab file's routing.group_wait
    held_group: float | None = None  # seconds: the group_wait Alertmanager runs (observe.group_wait)

    def checks(self) -> list[Check]:
        page = self.page
        return [Check(f"a full disk on {self.node} fires {ALERT} in Prometheus", self.firing is not None,
                      f"firing {_seconds(self.filled, self.firing)} after the fault ({self._for()})" if self.firing
                      else self.error or "not firing"),
                Check(f"{ALERT} pages at ntfy (title, severity critical, priority 5)",
                      page is not None and page.title == f"🚨 Alert: {ALERT}" and page.priority == 5
                      and "Severity: critical" in page.message,
                      f"{page.title!r}, priority {page.priority}, "
                      f"{_seconds(self.firing, self.delivered)} after firing{self._group_wait()}" if page
                      else self.error or "no page"),
                Check("the disk is cleared and the alert resolves, at ntfy too", self.resolution_delivered is not None,
                      f"resolved {_seconds(self.cleared, self.resolved)} after clearing, at ntfy "
                      f"{_seconds(self.resolved, self.resolution_delivered)} later" if self.resolution_delivered
                      else self.error or "no resolution at ntfy")]

    def timeline(self) -> pd.DataFrame:
        rows = [("disk filled -> pending", self.filled, self.pending),
                (f"pending -> firing ({self._for()})", self.pending, self.firing),
                ("firing -> page at ntfy", self.firing, self.delivered),
                ("disk cleared -> resolved", self.cleared, self.resolved),
                ("resolved -> resolution at ntfy", self.resolved, self.resolution_delivered)]
        return pd.DataFrame([{"step": s, "start": a, "end": b, "seconds": (b - a).total_seconds()}
                             for s, a, b in rows if a and b], columns=["step", "start", "end", "seconds"])

    def _for(self) -> str:
        """The copy's ``for``, and what Prometheus runs when that differs: the figures are the lab clock's."""
        held = self.held_for
        clock = "" if held is None or held == duration_seconds(DRILL_FOR) else f", {held:g} s on the lab's clock"
        return f"for: {DRILL_FOR}{clock}"

    def _group_wait(self) -> str:
        """Alertmanager's group_wait when it runs another than the lab file's (the lab's clock)."""
        held = self.held_group
        return "" if held is None or held == self.group_wait else f" (group_wait {held:g} s on the lab's clock)"


def _seconds(start: datetime | None, end: datetime | None) -> str:
    return f"{(end - start).total_seconds():.1f} s" if start and end else "?"


@contextlib.contextmanager
def rule_copy(api: client.ApiClient, lab: Lab) -> Iterator[str]:
    """The drill copy of the lab's ALERT rule deployed for the block (yields its rule group's name),
    removed at its end whatever happens. Deployed ahead of the drill (monitoring.verify: before its
    probes), Prometheus' reload and the Alertmanagers it forgets meanwhile pass while they run."""
    rule = drill_rule(lab)
    manifests.deploy(api, DRILL_SET, [rule])
    try:
        yield rule["spec"]["groups"][0]["name"]
    finally:
        manifests.deploy(api, DRILL_SET, [], prune_kinds=[RULE_KIND])


def run(api: client.ApiClient, stack: observe.Stack, lab: Lab, *, node: str | None = None, percent: float = 95,
        timeout: float = 240, page_margin: float = PAGE_MARGIN) -> DiskDrill:
    """The drill with its rule copy deployed for it (``rule_copy``, then ``follow``)."""
    node = _drill_node(lab, node)  # before anything is deployed
    with rule_copy(api, lab) as group:
        return follow(stack, lab, group, node=node, percent=percent, timeout=timeout, page_margin=page_margin)


def follow(stack: observe.Stack, lab: Lab, group: str, *, node: str | None = None, percent: float = 95,
           timeout: float = 240, page_margin: float = PAGE_MARGIN) -> DiskDrill:
    """With the rule copy's ``group`` deployed (``rule_copy``): once Prometheus evaluates it, fill
    ``node``'s disk (default: the last node), follow ALERT to ntfy (within the group_wait
    Alertmanager runs + ``page_margin`` once firing), clear, follow its resolution; the disk is
    cleared whatever happens.

    The reload that loaded the copy also left Prometheus without Alertmanagers until its discovery
    next sends (each 5 s). The drill does not wait for that: the copy's ``for`` outlasts it on a real
    lab, and an alert that fires sooner (the embedded lab's clock) is sent again after Prometheus'
    resend delay, which the embedded lab keeps on its clock too."""
    node = _drill_node(lab, node)
    obs = lab.observability
    assert obs is not None  # the copy was made from its rules
    _until(lambda: _evaluated(stack, group), timeout, "the drill rule to load and be evaluated", most=RELOAD_LOOK)
    (held, every), waits = observe.rule_timing(stack, group, ALERT), observe.group_wait(stack)
    group_wait = duration_seconds(obs.routing.group_wait)
    page_within = (group_wait if waits is None else waits) + page_margin  # Alertmanager holds a new group so long
    look = 1.0 if every is None else min(1.0, every / LOOKS_PER_EVALUATION)
    return replace(_drill(stack, lab, node, percent, timeout, page_within, look), held_for=held,
                   held_group=waits, group_wait=group_wait)


def _drill_node(lab: Lab, node: str | None) -> str:
    """The node whose disk the drill fills (default: the last node); a clear error for a name the
    lab does not have."""
    name = node or lab.nodes[-1].name
    lab.node(name)
    return name


def _drill(stack: observe.Stack, lab: Lab, node: str, percent: float, timeout: float,
           page_within: float, look: float) -> DiskDrill:
    """The drill itself, looking at Prometheus and ntfy at most ``look`` seconds apart."""
    since = str(int(time.time()) - 1)
    seen: dict[str, datetime] = {}
    instance, page, error, polls = "", None, "", [""]  # polls[-1]: ntfy's last poll error
    filled = datetime.now(UTC)
    try:
        fill_disk(lab, node, percent)  # inside: a fill that failed halfway is removed too

        def fired() -> bool:
            nonlocal instance
            for alert in _drill_alerts(stack):
                instance = alert["labels"].get("instance", "")
                seen.setdefault(alert["state"], datetime.now(UTC))
                seen.setdefault("pending", seen[alert["state"]])  # one evaluation may go straight past it
            return "firing" in seen

        def paged() -> bool:
            nonlocal page
            page = _ntfy(lab, since, f"🚨 Alert: {ALERT}", instance, polls)
            if page is not None:
                seen["delivered"] = datetime.now(UTC)
            return page is not None
        error = _until(fired, timeout, f"{ALERT} to fire in Prometheus", raising=False, most=look)
        error = error or _until(paged, page_within, f"{ALERT} to reach ntfy after firing", raising=False, most=look)
        error += f" (last ntfy poll: {polls[-1]})" if error and polls[-1] else ""
        error += " (Prometheus knows no Alertmanager)" if error and _no_alertmanager(stack) else ""
    finally:
        clear_disk(lab, node)
    cleared = datetime.now(UTC)
    if not error:
        def resolved() -> bool:
            if "resolved" not in seen and not _drill_alerts(stack):
                seen["resolved"] = datetime.now(UTC)
            if "resolved" in seen and _ntfy(lab, since, f"✅ Resolved: {ALERT}", instance, polls):
                seen["resolution"] = datetime.now(UTC)
            return "resolution" in seen
        error = _until(resolved, timeout, f"{ALERT} to resolve at ntfy", raising=False, most=look)
    return DiskDrill(node, instance, filled, seen.get("pending"), seen.get("firing"), seen.get("delivered"), cleared,
                     seen.get("resolved"), seen.get("resolution"), page, error)


def _drill_alerts(stack: observe.Stack) -> list[dict]:
    return [a for a in observe.prometheus_alerts(stack)
            if a["labels"].get("alertname") == ALERT and a["labels"].get("drill") == "true"]


def _no_alertmanager(stack: observe.Stack) -> bool:
    """Whether Prometheus answers that it knows no Alertmanager (a failing drill's likely cause)."""
    try:
        return not observe.alertmanagers(stack)
    except observe.ObserveError:
        return False


def _evaluated(stack: observe.Stack, group: str) -> bool:
    rules = observe.loaded_rules(stack).rules
    mine = rules[rules["group"] == group]
    return not mine.empty and (mine["health"] == "ok").all()


def _ntfy(lab: Lab, since: str, title: str, instance: str, polls: list[str]) -> observe.NtfyMessage | None:
    """The first message with this title about ``instance`` (known once Prometheus shows the alert);
    a poll that fails is None, its error appended to ``polls``."""
    if not instance:
        return None
    try:
        messages = observe.ntfy_poll(lab, since=since)
    except observe.ObserveError as exc:
        polls.append(str(exc))
        return None
    return next((m for m in messages if m.title == title and f"Instance: {instance}" in m.message), None)


def _until(condition: Callable[[], T], timeout: float, what: str, *, raising: bool = True, most: float = 1.0) -> str:
    """Poll ``condition`` (labkit.polling: the first looks fast, then each ``most`` seconds) until
    true: "" then, else what did not happen (raised if ``raising``)."""
    if polling.until(condition, bool, timeout=timeout, most=most):
        return ""
    message = f"waited {timeout:g} s for {what}"
    if raising:
        raise DrillError(message)
    return message
