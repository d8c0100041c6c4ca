"""Deploying the lab's monitoring (notebook 04): kube-prometheus-stack, Loki and promtail as k3s
HelmCharts (labkit.charts), the alert rules as PrometheusRule objects (labkit.manifests), and the
two Secrets the charts read: Grafana's admin login and Alertmanager's ntfy access (token and the
server's CA, mounted through ``alertmanagerSpec.secrets``).

Each chart's values are its values file (``parameters/values/<chart>.yaml``: the k3s-aware
settings) merged with what the lab file decides (``chart_values``): retention and storage,
Alertmanager's route to ntfy (group_wait etc. from ``observability.routing``), Grafana's admin
Secret and its ingress at ``observability.grafana.host`` with a certificate from the ingress issuer
of 03. A values file may not set what the lab file derives.
"""

from __future__ import annotations

import base64
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from kubernetes import client

from labkit import charts, faultdrill, manifests, observe
from labkit.changes import Change, Check, Plan, StepTimer, untimed
from labkit.errors import LabError
from labkit.params import Lab, Observability

GRAFANA_SECRET = "grafana-admin"  # admin-user / admin-password, read by the grafana chart (admin.existingSecret)
NTFY_SECRET = "ntfy-access"  # token / ca.pem, mounted in Alertmanager at /etc/alertmanager/secrets/ntfy-access
NTFY_DIR = f"/etc/alertmanager/secrets/{NTFY_SECRET}"
SECRETS_SET = "observability-secrets"  # labkit.manifests' set of the namespace and Secrets
RULES_SET = "observability-rules"  # labkit.manifests' set name of the PrometheusRule objects
PRIORITY = {"critical": 5, "warning": 4, "info": 3}  # ntfy's priority per paging severity (5 = max/urgent)
DRILL_LABEL = "drill"  # alerts labelled drill="true" (04's end-to-end drill) resolve within one group_wait


class MonitoringError(LabError):
    pass


def settings(lab: Lab) -> Observability:
    if lab.observability is None:
        raise MonitoringError(f"{lab.path}: no observability section; add one (see parameters/sim.yaml) to run "
                              "04-observability")
    return lab.observability


# -- chart values ----------------------------------------------------------------------------------------

def chart_values(lab: Lab, chart: str) -> dict:
    """What the lab file decides for one of the stack's charts."""
    obs = settings(lab)
    if chart == "kube-prometheus-stack":
        return {"prometheus": {"prometheusSpec": _prometheus_spec(obs)},
                "alertmanager": {"config": alertmanager_config(obs),
                                 "alertmanagerSpec": {"secrets": [NTFY_SECRET]}},
                "grafana": _grafana(lab)}
    if chart in ("loki-stack", "loki"):
        return {"loki": {"persistence": {"enabled": True, "storageClassName": obs.loki.storage_class,
                                         "size": obs.loki.volume_size},
                         "config": {"table_manager": {"retention_deletes_enabled": True,
                                                      "retention_period": obs.loki.retention},
                                    "compactor": {"retention_enabled": True}}}}
    if chart == "promtail":
        return {"config": {"clients": [{"url": f"http://{loki_service(lab)}:3100/loki/api/v1/push"}]}}
    return {}


def loki_service(lab: Lab) -> str:
    """The loki(-stack) release's Service, as its chart names it (the release name, holding 'loki')."""
    return next(name for name in settings(lab).charts if name in ("loki", "loki-stack"))


def _prometheus_spec(obs: Observability) -> dict:
    storage = obs.prometheus
    return {"retention": storage.retention, "retentionSize": storage.retention_size,
            "storageSpec": {"volumeClaimTemplate": {"spec": {
                "storageClassName": storage.storage_class, "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": storage.volume_size}}}}}}


def _grafana(lab: Lab) -> dict:
    host = settings(lab).grafana.host
    return {"admin": {"existingSecret": GRAFANA_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
            "ingress": {"enabled": True, "ingressClassName": "traefik", "hosts": [host], "path": "/",
                        "annotations": {"cert-manager.io/cluster-issuer": lab.ingress.issuer},
                        "tls": [{"secretName": "grafana-tls", "hosts": [host]}]}}


def alertmanager_config(obs: Observability) -> dict:
    """Alertmanager's configuration: the paging severities go to ntfy (through ntfy's alertmanager
    template, with a priority per severity), everything else to the ``null`` receiver. Drill alerts
    (label drill="true") take the same route with group_interval = group_wait, so that their
    resolution is delivered within seconds instead of after the lab's group_interval."""
    timing = {"group_wait": obs.routing.group_wait, "group_interval": obs.routing.group_interval,
              "repeat_interval": obs.routing.repeat_interval}
    routes = [{"receiver": f"ntfy-{severity}", "matchers": [f'severity="{severity}"', f'{DRILL_LABEL}="true"'],
               "group_interval": obs.routing.group_wait} for severity in obs.routing.page_severities]
    routes += [{"receiver": f"ntfy-{severity}", "matchers": [f'severity="{severity}"']}
               for severity in obs.routing.page_severities]
    http = {"tls_config": {"ca_file": f"{NTFY_DIR}/ca.pem"}} if obs.ntfy.ca_file else {}
    if obs.ntfy.access_token is not None:
        http["authorization"] = {"type": "Bearer", "credentials_file": f"{NTFY_DIR}/token"}
    receivers = [{"name": "null"}] + [
        {"name": f"ntfy-{severity}", "webhook_configs": [{
            "url": f"{obs.ntfy.server}/{obs.ntfy.topic}?template=alertmanager&priority={PRIORITY[severity]}"
                   f"&tags=rotating_light", "send_resolved": True, "max_alerts": 10, **({"http_config": http} if http else {})}]}
        for severity in obs.routing.page_severities]
    return {"global": {"resolve_timeout": "5m"},
            "route": {"receiver": "null", "group_by": ["alertname", "namespace"], **timing, "routes": routes},
            "receivers": receivers,
            "inhibit_rules": [{"source_matchers": ["severity=critical"], "target_matchers": ["severity=~warning|info"],
                               "equal": ["namespace", "alertname"]}]}


def charts_of(lab: Lab) -> list[charts.Chart]:
    """The stack's HelmCharts: each values file merged with the lab file's derived values."""
    found = []
    for name, source in settings(lab).charts.items():
        where = f"observability.charts.{name}.values"
        values = charts._values_file(source.values, where)
        derived = chart_values(lab, name)
        clash = sorted(charts._paths(values) & charts._paths(derived))
        if clash:
            raise MonitoringError(f"{where}: {', '.join(clash)} in {source.values} is derived from the lab file "
                                  "(observability section); remove it from the values file")
        found.append(charts.Chart(name, chart=name, version=source.version, repo=source.repo,
                                  target_namespace=source.namespace, values=charts.merge(values, derived)))
    return found


# -- alert rules ---------------------------------------------------------------------------------------

def rule_objects(lab: Lab) -> list[dict]:
    """One PrometheusRule per rule file of ``observability.rules`` (its groups as the spec)."""
    obs = settings(lab)
    found = []
    for path in sorted(Path(obs.rules).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        found.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                      "metadata": {"name": f"homelab-{path.stem}", "namespace": obs.namespace,
                                   "labels": {"release": "kube-prometheus-stack", "role": "alert-rules"}},
                      "spec": {"groups": doc.get("groups") or []}})
    return found


# -- secrets -------------------------------------------------------------------------------------------

def secret_objects(lab: Lab) -> list[dict]:
    """The namespace and the two Secrets, resolved from the lab file's references (registered for
    redaction; labkit.manifests compares Secrets by digest, so a plan never shows a value)."""
    obs = settings(lab)
    ntfy = {"token": lab.secret(obs.ntfy.access_token) if obs.ntfy.access_token is not None else ""}
    if obs.ntfy.ca_file is not None:
        ntfy["ca.pem"] = Path(obs.ntfy.ca_file).read_text()
    admin = {"admin-user": "admin", "admin-password": lab.secret(obs.grafana.admin_password)}

    def secret(name: str, data: dict[str, str]) -> dict:
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": obs.namespace},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": obs.namespace}},
            secret(GRAFANA_SECRET, admin), secret(NTFY_SECRET, ntfy)]


# -- plan / apply / verify ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Planned:
    secrets: Plan[manifests.ObjectPlan]
    charts: Plan[charts.ChartPlan]
    rules: Plan[manifests.ObjectPlan]

    def changes(self) -> list[Change]:
        return self.secrets.changes() + self.charts.changes() + self.rules.changes()

    def values_diffs(self) -> str:
        return "\n".join(item.values_diff for item in self.charts.items if item.values_diff)


def plan(api: client.ApiClient, lab: Lab) -> Planned:
    """Secrets, then the charts, then the rules (their kind exists once the stack's CRDs do)."""
    return Planned(manifests.plan(api, SECRETS_SET, secret_objects(lab)), charts.plan(api, charts_of(lab)),
                   manifests.plan(api, RULES_SET, rule_objects(lab)))


def apply(api: client.ApiClient, lab: Lab, planned: Planned, *, dry_run: bool = False, timeout: float = 900,
          step: StepTimer = untimed) -> list[Change]:
    if dry_run:
        return []
    done = manifests.apply(api, planned.secrets, step=step)
    # The stack's charts roll out side by side: none serves another's install (its objects need only
    # the CRDs of kube-prometheus-stack, in once its helm Job completes).
    done += charts.apply(api, planned.charts, timeout=timeout, step=step, overlap=True)
    with step("alert rules", RULES_SET):  # planned again: the rules' kind exists now that the stack is in
        done += manifests.deploy(api, RULES_SET, rule_objects(lab)).changes()
    left = charts.verify(api, charts_of(lab)) + manifests.verify(api, SECRETS_SET, secret_objects(lab))
    if left:
        raise MonitoringError("after the apply the charts still differ from the lab file: " + "; ".join(left))
    return done


# -- verification by use -----------------------------------------------------------------------------------

KNOWN_LOG_LINE = "Server is ready to receive web requests."  # what the real Prometheus logs once it serves
NODE_CPU = '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[2m])))'
NODE_MEMORY = "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)"
NODE_DISK = '100 * (1 - node_filesystem_avail_bytes{mountpoint="/"} / node_filesystem_size_bytes{mountpoint="/"})'
POD_RESTARTS = "sum by (namespace, pod) (kube_pod_container_status_restarts_total) > 0"


@dataclass(frozen=True)
class Verified:
    """04's verification: what each probe saw (empty tables in a dry run), and its checks."""

    checks: list[Check]
    targets: pd.DataFrame  # jobs x up/down (observe.Targets.table)
    rules: pd.DataFrame  # the rules Prometheus loaded, with health and state
    datasources: pd.DataFrame  # Grafana's, each with Grafana's own health check
    dashboards: pd.DataFrame
    log_lines: pd.DataFrame  # the LogQL query's lines
    drill: pd.DataFrame  # the drill alert's path (observe.Drill.timeline)
    fault_drill: pd.DataFrame  # the disk fault's alert path (faultdrill.DiskDrill.timeline)
    notifications: pd.DataFrame  # Alertmanager's sent/failed counters per integration
    resources: dict[str, pd.DataFrame]  # PromQL series: cpu, memory, disk, restarts
    drill_latency: float | None = None  # seconds from the POST to the ntfy message


_NO_STEPS = pd.DataFrame(columns=["step", "start", "end", "seconds"])


def _nothing(note: str) -> Verified:
    empty = pd.DataFrame(columns=["time", "series", "value"])
    return Verified([Check("the monitoring stack is used (targets, rules, Grafana, logs, drill)", True, note,
                           enforced=False)], pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame(),
                    pd.DataFrame(), _NO_STEPS, _NO_STEPS, pd.DataFrame(),
                    {k: empty for k in ("cpu", "memory", "disk", "restarts")})


def verify(api: client.ApiClient, lab: Lab, *, drill: bool = True, dry_run: bool = False,
           timeout: float = 240) -> Verified:
    """Use the stack: every target up, the lab's rules loaded and evaluated, Grafana over HTTPS with
    its datasources and dashboards, a known log line found with LogQL, and (``drill``) a synthetic
    alert delivered to ntfy and resolved, measured, while a real one runs beside it: a node's disk
    filled until NodeDiskAlmostFull pages, cleared until it resolves (labkit.faultdrill). A dry run
    probes nothing."""
    if dry_run:
        return _nothing("dry run: nothing deployed, nothing probed")
    stack = observe.connect(api, lab)
    # The disk drill's rule copy goes in first: Prometheus reloads and finds its Alertmanagers
    # again (0-5 s) while the probes run, instead of between them and the drill.
    copy = faultdrill.rule_copy(api, lab) if drill else contextlib.nullcontext("")
    try:
        with copy as group:
            jobs = observe.discovered_jobs(stack, timeout=timeout)
            found_targets = observe.wait_targets(stack, jobs, timeout=timeout)
            wanted = [r.alert for r in observe.rules(settings(lab).rules)]
            loaded = observe.wait_rules(stack, wanted, timeout=timeout, skip=(group,))
            probe = observe.grafana(api, lab)
            lines = observe.wait_log_line(stack, f'{{namespace="{settings(lab).namespace}", container="prometheus"}} '
                                                 f'|= "{KNOWN_LOG_LINE}"', timeout=timeout)
            drilled, disk = _drills(stack, lab, group, timeout) if drill else (None, None)
        sent = observe.notifications(stack)
        resources = {name: observe.query_range(stack, expr, minutes=15) for name, expr in
                     (("cpu", NODE_CPU), ("memory", NODE_MEMORY), ("disk", NODE_DISK), ("restarts", POD_RESTARTS))}
    finally:
        stack.close()
    checks = [Check("Prometheus scrapes targets", bool(jobs), f"{len(jobs)} jobs"), *found_targets.checks(jobs),
              *loaded.checks(wanted), *probe.checks(),
              Check("LogQL finds Prometheus' start line in Loki (shipped by promtail)", not lines.empty,
                    f"{len(lines)} line(s) from {', '.join(sorted(set(lines['pod'])))}" if not lines.empty
                    else "no line yet"),
              *(drilled.checks() if drilled else []), *(disk.checks() if disk else [])]
    return Verified(checks, found_targets.table(), loaded.rules, probe.datasources, probe.dashboards, lines,
                    drilled.timeline() if drilled else _NO_STEPS, disk.timeline() if disk else _NO_STEPS, sent,
                    resources, drilled.latency if drilled else None)


def _drills(stack: observe.Stack, lab: Lab, group: str,
            timeout: float) -> tuple[observe.Drill, faultdrill.DiskDrill]:
    """The synthetic alert's drill and the disk drill (its rule copy's ``group`` deployed), side by
    side: they are independent (other alert names, so other Alertmanager groups; each finds its own
    ntfy messages by title and instance), and each is timed on its own."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        synthetic = pool.submit(observe.drill, stack, lab)
        disk = faultdrill.follow(stack, lab, group, timeout=timeout)
        return synthetic.result(), disk
