"""The real Prometheus and Alertmanager on the lab's clock: the durations they wait on, scaled by
the lab's time scale in the configuration the programs read (``GoProgram`` rewrites it beside the
container), so that a lab at time scale 0 does not wait 30 s for a scrape or 10 s for a group.

The rule, for each duration the program waits on: its value times the time scale (capped at 1: a
program never waits longer than the lab file says), but not less than a floor of real seconds,
unless the value itself is less (0 stays 0; at time scale 1 nothing changes):

- Prometheus: ``evaluation_interval`` and rule groups' ``interval``, alerting rules' ``for`` and
  ``keep_firing_for``, ``scrape_interval`` (global and per job): floor ``FLOOR`` (1 s). A scrape is
  real work for its target, several of which are the twin's own Python (kubelet, node-exporter,
  kube-state-metrics): each answers in 1 to 30 ms, so an idle 12-node lab scraped every second
  costs about 8 % of one core more than every 5 s (71 % against 63 %, measured for issue 17), and
  an alert on a node's numbers follows the fault within a second or two. ``scrape_timeout`` bounds a real answer, it is not a
  wait: kept, but at most the job's scaled interval (Prometheus refuses a timeout over the interval). Rule files are
  copied, scaled, beside the configuration; the copies are what ``rule_files`` names.
- Not scaled: PromQL inside expressions (range windows like ``rate(x[5m])``, ``offset``,
  ``time()``), the lookback delta, retention. They select samples rather than wait: with shorter
  scrape intervals a window holds more samples and the question stays the one the rule asks (a
  window scaled below two scrape intervals would leave ``rate()`` empty and the rule silent).
- Alertmanager: the route tree's ``group_wait`` and ``group_interval``: floor ``FLOOR``;
  ``repeat_interval``: floor ``REPEAT_FLOOR`` (60 s: an alert that keeps firing is re-sent at most
  once a minute, not on every group flush). Not ``global.resolve_timeout``: it is how long an alert
  posted without an end stays firing, for a client (amtool, labkit's drill) that posts it once on
  real time; at 1 s it would resolve before its group's first notification.

- Prometheus' ``--rules.alert.resend-delay`` (1m: how long before a firing alert is sent again, e.g.
  one it sent while it knew no Alertmanager, in the seconds after a reload): floor ``FLOOR``, passed
  to the process unless the pod's arguments set it (``flags``).

What the API shows (``kubectl get prometheus``, PrometheusRules, the config Secrets) is the user's
value; the program's rewritten configuration (``/api/v1/status/config``, ``/api/v2/status``)
carries the scaled one.
"""

from __future__ import annotations

import glob
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

FLOOR = 1.0  # real seconds
REPEAT_FLOOR = 60.0
RULES_DIR = "prometheus-rules"  # the scaled rule files' folder, beside the rewritten configuration
_DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
# Defaults the programs apply when a key is absent: written out, scaled, when the scale is below 1.
_PROMETHEUS_GLOBAL = {"scrape_interval": "1m", "evaluation_interval": "1m"}
_ALERTMANAGER_ROUTE = {"group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}


def seconds(text: str) -> float:
    """A Prometheus duration (``30s``, ``1h30m``, ``500ms``) in seconds."""
    return sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(str(text)))


def scaled(text: str, scale: float, floor: float = FLOOR) -> str:
    """``text`` on the lab's clock (see the module's docstring), as a Prometheus duration."""
    value = seconds(text)
    if scale >= 1 or value == 0:
        return text
    return _duration(max(value * scale, min(value, floor)))


def flags(defaults: dict[str, str], args: list[str], scale: float) -> list[str]:
    """The program's waits set by flags (``defaults``: flag -> the program's default), scaled, for
    those ``args`` leave to their default (none at time scale 1 and above)."""
    given = {arg.partition("=")[0] for arg in args}
    return [f"{flag}={scaled(default, scale)}" for flag, default in defaults.items()
            if scale < 1 and flag not in given]


def _duration(value: float) -> str:
    ms = round(value * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _scale_keys(node: dict, keys: dict[str, float], scale: float) -> None:
    for key, floor in keys.items():
        if node.get(key):
            node[key] = scaled(node[key], scale, floor)


# -- Prometheus -------------------------------------------------------------------------------------

def prometheus(doc: dict, scale: float, folder: Path) -> dict:
    """prometheus.yml (its paths already this machine's) on the lab's clock; its rule files copied,
    scaled, into ``folder``/RULES_DIR."""
    if scale >= 1:
        return doc
    doc = {**doc, "global": {**_PROMETHEUS_GLOBAL, **(doc.get("global") or {})}}
    glob_ = doc["global"]
    _scale_keys(glob_, {"scrape_interval": FLOOR, "evaluation_interval": FLOOR}, scale)
    _cap_timeout(glob_, glob_["scrape_interval"])
    jobs = []
    for job in doc.get("scrape_configs") or []:
        job = dict(job)
        _scale_keys(job, {"scrape_interval": FLOOR}, scale)
        _cap_timeout(job, job.get("scrape_interval") or glob_["scrape_interval"])
        jobs.append(job)
    if "scrape_configs" in doc:
        doc["scrape_configs"] = jobs
    if doc.get("rule_files"):
        doc["rule_files"] = _scaled_rule_files(doc["rule_files"], scale, folder / RULES_DIR)
    return doc


def _cap_timeout(node: dict, interval: str) -> None:
    if node.get("scrape_timeout") and seconds(node["scrape_timeout"]) > seconds(interval):
        node["scrape_timeout"] = interval


def _scaled_rule_files(patterns: list[str], scale: float, folder: Path) -> list[str]:
    """The files the patterns match, scaled into ``folder`` (emptied first); their paths there."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    copies = []
    for path in (Path(p) for pattern in patterns for p in sorted(glob.glob(pattern)) if Path(p).is_file()):
        copy = folder / path.name
        if copy.exists():  # the same name from another folder
            copy = folder / f"{len(copies)}-{path.name}"
        copy.write_text(_scaled_rules(path.read_text(), scale))
        copies.append(str(copy))
    return copies


def _scaled_rules(text: str, scale: float) -> str:
    """A rule file on the lab's clock; one that does not parse as it is (Prometheus names its error)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        return text
    groups = []
    for group in doc["groups"]:
        if isinstance(group, dict):
            group = dict(group)
            _scale_keys(group, {"interval": FLOOR}, scale)
            group["rules"] = [_scaled_rule(r, scale) for r in group.get("rules") or []]
        groups.append(group)
    return yaml.safe_dump({**doc, "groups": groups}, sort_keys=False)


def _scaled_rule(rule: Any, scale: float) -> Any:
    if not isinstance(rule, dict):
        return rule
    rule = dict(rule)
    _scale_keys(rule, {"for": FLOOR, "keep_firing_for": FLOOR}, scale)
    return rule


# -- Alertmanager -----------------------------------------------------------------------------------

def alertmanager(doc: dict, scale: float, folder: Path) -> dict:
    """alertmanager.yml on the lab's clock (``folder`` is unused: it has no files to copy)."""
    if scale >= 1:
        return doc
    doc = dict(doc)
    if isinstance(doc.get("route"), dict):
        doc["route"] = _scaled_route({**_ALERTMANAGER_ROUTE, **doc["route"]}, scale)
    return doc


def _scaled_route(route: dict, scale: float) -> dict:
    """A route and its sub-routes (which inherit what they do not set, already scaled)."""
    route = dict(route)
    _scale_keys(route, {"group_wait": FLOOR, "group_interval": FLOOR, "repeat_interval": REPEAT_FLOOR}, scale)
    if isinstance(route.get("routes"), list):
        route["routes"] = [_scaled_route(r, scale) if isinstance(r, dict) else r for r in route["routes"]]
    return route
