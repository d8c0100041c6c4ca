"""Requests and limits against what the apps use (the metrics API, as `kubectl top pod`)."""

from __future__ import annotations

import pandas as pd
from kubernetes import client

from labkit import kube
from labkit.apps.base import settings
from labkit.changes import Check
from labkit.params import Lab

USAGE = ["app", "pod", "container", "cpu_requests_m", "cpu_limits_m", "cpu_used_m", "memory_requests_mib",
         "memory_limits_mib", "memory_used_mib", "note"]


def usage(api: client.ApiClient, lab: Lab, *, dry_run: bool = False) -> pd.DataFrame:
    """Per app pod: CPU (millicores) and memory (MiB) requested, limited and used (the metrics API,
    metrics.k8s.io, as `kubectl top pod`); usage empty with a note when the API does not answer."""
    if dry_run:
        return pd.DataFrame(columns=USAGE)
    ns = settings(lab).namespace
    pods = client.CoreV1Api(api).list_namespaced_pod(ns).items
    try:
        metrics = client.CustomObjectsApi(api).list_namespaced_custom_object("metrics.k8s.io", "v1beta1", ns, "pods")
        used = {m["metadata"]["name"]: m["containers"] for m in metrics["items"]}
        note = ""
    except client.ApiException as exc:
        used, note = {}, f"metrics API: {exc.status} {exc.reason}"
    rows = []
    for pod in pods:
        if pod.status.phase != "Running":
            continue
        app = (pod.metadata.labels or {}).get("app.kubernetes.io/name", pod.metadata.name)
        for container in pod.spec.containers:
            res = container.resources
            seen = next((c["usage"] for c in used.get(pod.metadata.name, []) if c["name"] == container.name), None)
            rows.append({"app": app, "pod": pod.metadata.name, "container": container.name,
                         **{f"cpu_{k}_m": _milli((getattr(res, k) or {}).get("cpu")) for k in ("requests", "limits")},
                         "cpu_used_m": _milli(seen["cpu"]) if seen else None,
                         **{f"memory_{k}_mib": _mib((getattr(res, k) or {}).get("memory")) for k in ("requests", "limits")},
                         "memory_used_mib": _mib(seen["memory"]) if seen else None, "note": note})
    return pd.DataFrame(rows, columns=USAGE)


def _milli(quantity: str | None) -> float | None:
    if not quantity:
        return None
    if quantity.endswith("n"):
        return int(quantity[:-1]) / 1e6
    return kube.cpu_cores(quantity) * 1000


def _mib(quantity: str | None) -> float | None:
    return kube.memory_bytes(quantity) / 2**20 if quantity else None


def usage_checks(frame: pd.DataFrame) -> list[Check]:
    """Every app container has requests and limits, and uses no more memory than its limit (none
    for an empty table: a dry run)."""
    if frame.empty:
        return []
    unbounded = frame[frame["memory_limits_mib"].isna() | frame["cpu_requests_m"].isna()]
    over = frame[frame["memory_used_mib"].notna() & (frame["memory_used_mib"] > frame["memory_limits_mib"])]
    note = next((n for n in frame["note"] if n), "")
    return [Check("every app container has requests and limits", unbounded.empty and not frame.empty,
                  ", ".join(unbounded["pod"]) or f"{len(frame)} containers"),
            Check("memory used within limits (metrics API)", over.empty and not note,
                  note or ", ".join(over["pod"]) or f"{frame['memory_used_mib'].sum():.0f} MiB used in all")]
