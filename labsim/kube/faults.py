"""Faults of a cluster's nodes and workloads that drills inject (over HTTPS through the lab's
admin endpoint, ``/labsim/faults``, or from Python): a node's disk filling up, as its
node-exporter then reports it (labsim.node.nodefiles), and a pod crash-looping with the
kubelet's back-off (its containers exit with a code, ``sim.labsim.io/exit-code``)."""

from __future__ import annotations

from typing import Any

from labsim.kube.controllers.kubelet import EXIT_CODE, RUN_SECONDS
from labsim.kube.store import StoreError
from labsim.node import nodefiles


def _node_folder(cluster: Any, node: str):
    if cluster.store.get(cluster.store.resource("v1", "Node"), None, node) is None:
        raise StoreError(404, "NotFound", f'nodes "{node}" not found')
    return cluster.state_dir / "nodes" / node


def disk_full(cluster: Any, node: str, percent: float = 95.0) -> int:
    """``percent`` of the node's root filesystem used from now on; returns the bytes added."""
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    return nodefiles.fill_disk(_node_folder(cluster, node), percent / 100)


def disk_clear(cluster: Any, node: str | None = None) -> None:
    for folder in [_node_folder(cluster, node)] if node else (cluster.state_dir / "nodes").glob("*"):
        nodefiles.clear_disk(folder)


def full_disks(cluster: Any) -> list[str]:
    return sorted(folder.name for folder in (cluster.state_dir / "nodes").glob("*") if (folder / nodefiles.FILL).exists())


def crash_loop(cluster: Any, namespace: str, pod: str, exit_code: int = 1, run_seconds: float = 1.0) -> None:
    """The pod's containers exit with ``exit_code`` after ``run_seconds`` (lab time) each run:
    the kubelet restarts them with its back-off, ``CrashLoopBackOff`` in between."""
    _annotate(cluster, namespace, pod, {EXIT_CODE: str(exit_code), RUN_SECONDS: str(run_seconds)})


def crash_loop_clear(cluster: Any, namespace: str, pod: str) -> None:
    _annotate(cluster, namespace, pod, {EXIT_CODE: None, RUN_SECONDS: None})


def _annotate(cluster: Any, namespace: str, pod: str, changes: dict[str, str | None]) -> None:
    res = cluster.store.resource("v1", "Pod")
    obj = cluster.store.get(res, namespace, pod)
    if obj is None:
        raise StoreError(404, "NotFound", f'pods "{pod}" not found')
    annotations = dict(obj["metadata"].get("annotations") or {})
    for key, value in changes.items():
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
    obj["metadata"]["annotations"] = annotations
    cluster.store.update(obj)
