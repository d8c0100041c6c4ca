"""The resource metrics API (metrics.k8s.io/v1beta1) that k3s' metrics-server serves, for
`kubectl top`: usage modelled from what runs where, available while a metrics-server Deployment
in kube-system is available (else 503, as an APIService without a ready backend)."""

from __future__ import annotations

from aiohttp import web

from labsim.kube.handling import Handler, Target
from labsim.kube.responses import json_response
from labsim.kube.selectors import parse_labels
from labsim.kube.store import StoreError

GROUP = "metrics.k8s.io"
WINDOW = "15s"
# What an idle container and the node's own services (k3s, containerd) use, as the model has it.
CONTAINER_CPU_NANO, CONTAINER_MEMORY = 2_000_000, 24 << 20
NODE_CPU_NANO, NODE_MEMORY = 180_000_000, 900 << 20
_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9}


def _cpu_nano(text: str) -> int:
    if text.endswith("m"):
        return int(float(text[:-1]) * 1_000_000)
    return int(float(text) * 1_000_000_000)


def _bytes(text: str) -> int:
    for suffix, factor in _UNITS.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))


def _container_usage(container: dict) -> tuple[int, int]:
    """Half of what the container requests (a steady, plausible load), or an idle baseline."""
    requests = (container.get("resources") or {}).get("requests") or {}
    cpu = _cpu_nano(requests["cpu"]) // 2 if "cpu" in requests else CONTAINER_CPU_NANO
    memory = _bytes(requests["memory"]) // 2 if "memory" in requests else CONTAINER_MEMORY
    return cpu, memory


def _running(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")


def _available(handler: Handler) -> bool:
    store = handler.store
    server = store.get(store.resource("apps/v1", "Deployment"), "kube-system", "metrics-server")
    return bool(server and (server.get("status") or {}).get("availableReplicas"))


def _item(kind: str, meta: dict, now: str, **usage) -> dict:
    keep = {k: meta[k] for k in ("name", "namespace", "labels") if k in meta}
    return {"kind": kind, "apiVersion": f"{GROUP}/v1beta1", "metadata": {**keep, "creationTimestamp": now},
            "timestamp": now, "window": WINDOW, **usage}


def _usage(cpu: int, memory: int) -> dict:
    return {"cpu": f"{cpu}n", "memory": f"{memory // 1024}Ki"}


def pod_metrics(handler: Handler, namespace: str | None) -> list[dict]:
    store, now = handler.store, handler.store.now()
    out = []
    for pod in store.list(store.resource("v1", "Pod"), namespace):
        if _running(pod):
            containers = [{"name": c["name"], "usage": _usage(*_container_usage(c))}
                          for c in pod["spec"].get("containers") or []]
            out.append(_item("PodMetrics", pod["metadata"], now, containers=containers))
    return out


def node_metrics(handler: Handler) -> list[dict]:
    store, now = handler.store, handler.store.now()
    load: dict[str, list[int]] = {}
    for pod in store.list(store.resource("v1", "Pod")):
        node = pod["spec"].get("nodeName")
        if node and _running(pod):
            total = load.setdefault(node, [0, 0])
            for container in pod["spec"].get("containers") or []:
                cpu, memory = _container_usage(container)
                total[0] += cpu
                total[1] += memory
    out = []
    for node in store.list(store.resource("v1", "Node")):
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (node.get("status") or {}).get("conditions") or [])
        if ready:
            cpu, memory = load.get(node["metadata"]["name"], [0, 0])
            out.append(_item("NodeMetrics", node["metadata"], now, usage=_usage(cpu + NODE_CPU_NANO, memory + NODE_MEMORY)))
    return out


def serve(handler: Handler, request: web.Request, target: Target) -> web.StreamResponse:
    if request.method != "GET":
        raise StoreError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    if not _available(handler):
        raise StoreError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
    items = node_metrics(handler) if target.res.kind == "NodeMetrics" else pod_metrics(handler, target.namespace)
    if target.name is not None:
        found = next((i for i in items if i["metadata"]["name"] == target.name), None)
        if found is None:
            raise StoreError.not_found(target.res, target.name)
        return json_response(found)
    selected = parse_labels(request.query.get("labelSelector") or None)
    return json_response({"kind": target.res.list_kind, "apiVersion": target.res.api_version, "metadata": {},
                          "items": [i for i in items if selected(i)]})
