"""What users of the lab see while it changes: a background HTTP probe and its figures.

``Probe`` hits a URL every ``interval`` seconds from a thread of its own and records each
answer (time, success, HTTP status, latency, error). ``summary`` turns the records into
availability %, the longest outage and p50/p95 latency, overall and per phase of an operation
(each node's cordon, drain, upgrade...). A probe target the lab does not have yet can be made
with ``probe_workload``: a small nginx Deployment (2 replicas, a PodDisruptionBudget of
minAvailable 1) behind a NodePort Service, removed again with ``remove_probe_workload``.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
from kubernetes import client

from labkit import kube, manifests
from labkit.errors import KubeError
from labkit.kube import until
from labkit.params import Lab

RECORD_COLUMNS = ["time", "ok", "status", "latency_ms", "error"]
SUMMARY_COLUMNS = ["phase", "requests", "failed", "availability_pct", "longest_outage_s", "p50_ms", "p95_ms"]


@dataclass
class Probe:
    """GET ``url`` every ``interval`` seconds until stopped; a 2xx/3xx answer within ``timeout`` is
    a success. HTTPS is verified (``ca_file``, else the system's CAs)."""

    url: str
    interval: float = 0.2
    timeout: float = 2.0
    ca_file: str | None = None
    records: list[dict] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def __enter__(self) -> Probe:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="availability-probe", daemon=True)
        self._thread.start()

    def stop(self) -> pd.DataFrame:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.frame()

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.records), columns=RECORD_COLUMNS)

    def _loop(self) -> None:
        context = ssl.create_default_context(cafile=self.ca_file) if self.url.startswith("https") else None
        while not self._stop.is_set():
            began = time.monotonic()
            self.records.append(self.hit(context))
            self._stop.wait(max(self.interval - (time.monotonic() - began), 0))

    def hit(self, context: ssl.SSLContext | None = None) -> dict:
        at, began = datetime.now(UTC), time.monotonic()
        status, error = 0, ""
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout, context=context) as answer:
                answer.read()
                status = answer.status
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
        except (OSError, urllib.error.URLError) as exc:  # refused, reset, timed out
            error = str(getattr(exc, "reason", exc))
        latency = (time.monotonic() - began) * 1000
        return {"time": at, "ok": 200 <= status < 400, "status": status, "latency_ms": round(latency, 2),
                "error": error}


def summary(records: pd.DataFrame, phases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Availability overall ("whole run") and per phase (rows of ``phases``: node, phase, start,
    end): requests, failures, availability %, longest outage (s), p50/p95 latency of successes (ms)."""
    rows = [_figures("whole run", records)]
    for phase in (phases.to_dict("records") if phases is not None else []):
        inside = records[(records["time"] >= phase["start"]) & (records["time"] <= phase["end"])]
        rows.append(_figures(f"{phase['node']} {phase['phase']}", inside))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _figures(name: str, records: pd.DataFrame) -> dict:
    ok = records[records["ok"]] if not records.empty else records
    latency = ok["latency_ms"] if not ok.empty else pd.Series(dtype=float)
    return {"phase": name, "requests": len(records), "failed": int((~records["ok"]).sum()) if len(records) else 0,
            "availability_pct": round(100 * len(ok) / len(records), 2) if len(records) else None,
            "longest_outage_s": round(longest_outage(records), 3),
            "p50_ms": round(float(latency.quantile(0.5)), 2) if len(latency) else None,
            "p95_ms": round(float(latency.quantile(0.95)), 2) if len(latency) else None}


def longest_outage(records: pd.DataFrame) -> float:
    """Seconds from the first failure of a run of failures to the next success (or the last record)."""
    longest, since = 0.0, None
    for at, ok in zip(records["time"], records["ok"], strict=True):
        if not ok and since is None:
            since = at
        elif ok and since is not None:
            longest, since = max(longest, (at - since).total_seconds()), None
    if since is not None:
        longest = max(longest, (records["time"].iloc[-1] - since).total_seconds())
    return longest


# -- a probe target of its own --------------------------------------------------------------------

PROBE_SET = "availability-probe"
NAMESPACE = "availability-probe"
PORT = 8080
_SITE = f"server {{\n  listen {PORT};\n  location / {{ return 200 \"ok\\n\"; }}\n}}\n"


def probe_objects(replicas: int = 2) -> list[dict]:
    """nginx answering 200 on port 8080 (an unprivileged port), 2 replicas, a budget of
    minAvailable 1 (a drain keeps one answering) and a NodePort Service in front."""
    labels = {"app": "probe"}
    meta = {"namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe-site", **meta},
         "data": {"default.conf": _SITE}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "probe", **meta},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": PORT}],
                                      "readinessProbe": {"httpGet": {"path": "/", "port": PORT}},
                                      "volumeMounts": [{"name": "site", "mountPath": "/etc/nginx/conf.d"}]}],
                      "volumes": [{"name": "site", "configMap": {"name": "probe-site"}}]}}}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "probe", **meta},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probe", **meta},
         "spec": {"type": "NodePort", "selector": labels, "ports": [{"port": PORT, "targetPort": PORT}]}},
    ]


def probe_workload(api: client.ApiClient, lab: Lab, *, timeout: float = 120) -> str:
    """Deploy the probe workload, wait until both replicas are ready, and return its URL: the
    NodePort on the master's address (kube-proxy keeps forwarding there while the master's k3s
    restarts on a real node, its rules stay in the kernel)."""
    manifests.deploy(api, PROBE_SET, probe_objects())
    apps = client.AppsV1Api(api)

    def ready(listing) -> bool | None:
        dep = next(iter(listing.items), None)
        return True if dep and (dep.status.ready_replicas or 0) >= dep.spec.replicas else None

    until(apps.list_namespaced_deployment, ready, what="probe Deployment ready", timeout=timeout,
          namespace=NAMESPACE, field_selector="metadata.name=probe")
    svc = kube.request("read probe Service", lambda: client.CoreV1Api(api).read_namespaced_service("probe", NAMESPACE))
    return f"http://{lab.master.ip}:{svc.spec.ports[0].node_port}/"


def remove_probe_workload(api: client.ApiClient, *, timeout: float = 120) -> None:
    """Delete the probe's namespace (and so everything in it) and wait until it is gone."""
    core = client.CoreV1Api(api)
    try:
        core.delete_namespace(NAMESPACE)
    except client.exceptions.ApiException as exc:
        if exc.status != 404:
            raise KubeError(f"delete namespace {NAMESPACE}: {exc.status} {exc.reason}") from None
    until(core.list_namespace, lambda listing: True if not listing.items else None,
          what=f"namespace {NAMESPACE} deleted", timeout=timeout, field_selector=f"metadata.name={NAMESPACE}")
