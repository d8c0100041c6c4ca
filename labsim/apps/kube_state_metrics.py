"""kube-state-metrics as an app model: the ``kube_*`` metrics of the objects in the cluster.

kube-state-metrics does not install here. Like the real one, this model reads the cluster
through the API server with its pod's ServiceAccount (in-cluster: KUBERNETES_SERVICE_HOST,
the projected token and CA), so the chart's RBAC applies, and lists on each scrape rather than
keeping informers (the twin's clusters are small). Metric names, labels and values follow
kube-state-metrics 2.x for pods (info, phase, ready, container restarts, waiting reasons,
running/ready), nodes (info, conditions, capacity), Deployments, StatefulSets, DaemonSets and
PersistentVolumeClaims; ``/livez`` and ``/readyz`` answer the probes.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web

from labsim.apps import serve

SA = Path("var/run/secrets/kubernetes.io/serviceaccount")  # relative: the container's root is the cwd
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
_UNITS = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "m": 1e-3}


def quantity(text: str | int | None) -> float:
    text = str(text or "0")
    for unit, factor in _UNITS.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


class Families:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.declared: set[str] = set()

    def add(self, name: str, labels: dict, value: float, kind: str = "gauge", help_text: str = "") -> None:
        if name not in self.declared:
            self.declared.add(name)
            self.lines += [f"# HELP {name} {help_text or name.replace('_', ' ')}", f"# TYPE {name} {kind}"]
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{text}}} {value:g}" if isinstance(value, float) else f"{name}{{{text}}} {value}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def pods(out: Families, items: list[dict]) -> None:
    for pod in items:
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        ids = {"namespace": meta["namespace"], "pod": meta["name"], "uid": meta["uid"]}
        owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), {})
        out.add("kube_pod_info", {**ids, "host_ip": status.get("hostIP", ""), "pod_ip": status.get("podIP", ""),
                                  "node": spec.get("nodeName", ""), "created_by_kind": owner.get("kind", "<none>"),
                                  "created_by_name": owner.get("name", "<none>"), "priority_class": ""}, 1)
        for phase in PHASES:
            out.add("kube_pod_status_phase", {**ids, "phase": phase}, int(status.get("phase") == phase))
        ready = next((c["status"] for c in status.get("conditions") or [] if c["type"] == "Ready"), "Unknown")
        for value in ("true", "false", "unknown"):
            out.add("kube_pod_status_ready", {**ids, "condition": value}, int(ready.lower() == value))
        for cs in status.get("containerStatuses") or []:
            labels = {**ids, "container": cs["name"]}
            state = cs.get("state") or {}
            out.add("kube_pod_container_status_restarts_total", labels, cs.get("restartCount", 0), "counter")
            out.add("kube_pod_container_status_running", labels, int("running" in state))
            out.add("kube_pod_container_status_waiting", labels, int("waiting" in state))
            out.add("kube_pod_container_status_terminated", labels, int("terminated" in state))
            out.add("kube_pod_container_status_ready", labels, int(bool(cs.get("ready"))))
            if "waiting" in state:
                out.add("kube_pod_container_status_waiting_reason",
                        {**labels, "reason": state["waiting"].get("reason", "")}, 1)
            last = (cs.get("lastState") or {}).get("terminated")
            if last:
                out.add("kube_pod_container_status_last_terminated_reason",
                        {**labels, "reason": last.get("reason", "")}, 1)


def nodes(out: Families, items: list[dict]) -> None:
    for node in items:
        name, status = node["metadata"]["name"], node.get("status") or {}
        info = status.get("nodeInfo") or {}
        internal = next((a["address"] for a in status.get("addresses") or [] if a["type"] == "InternalIP"), "")
        out.add("kube_node_info", {"node": name, "kernel_version": info.get("kernelVersion", ""),
                                   "os_image": info.get("osImage", ""), "container_runtime_version":
                                   info.get("containerRuntimeVersion", ""), "kubelet_version":
                                   info.get("kubeletVersion", ""), "internal_ip": internal,
                                   "provider_id": (node.get("spec") or {}).get("providerID", "")}, 1)
        for cond in status.get("conditions") or []:
            for value in ("true", "false", "unknown"):
                out.add("kube_node_status_condition", {"node": name, "condition": cond["type"], "status": value},
                        int(cond["status"].lower() == value))
        for resource, amount in (status.get("capacity") or {}).items():
            unit = "core" if resource == "cpu" else "byte" if resource in ("memory", "ephemeral-storage") else "integer"
            out.add("kube_node_status_capacity", {"node": name, "resource": resource.replace("-", "_"), "unit": unit},
                    quantity(amount))
        out.add("kube_node_spec_unschedulable", {"node": name}, int(bool((node.get("spec") or {}).get("unschedulable"))))


def workloads(out: Families, kind: str, items: list[dict]) -> None:
    key = kind.lower()
    for obj in items:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        ids = {"namespace": meta["namespace"], key: meta["name"]}
        out.add(f"kube_{key}_metadata_generation", ids, meta.get("generation", 0))
        out.add(f"kube_{key}_status_observed_generation", ids, status.get("observedGeneration", 0))
        if kind == "DaemonSet":
            for field, name in (("desiredNumberScheduled", "desired_number_scheduled"), ("numberReady", "number_ready"),
                                ("numberAvailable", "number_available"), ("numberMisscheduled", "number_misscheduled"),
                                ("currentNumberScheduled", "current_number_scheduled"),
                                ("updatedNumberScheduled", "updated_number_scheduled")):
                out.add(f"kube_daemonset_status_{name}", ids, status.get(field, 0))
            continue
        out.add(f"kube_{key}_spec_replicas" if kind == "Deployment" else f"kube_{key}_replicas", ids,
                spec.get("replicas", 1))
        for field, name in (("replicas", "replicas"), ("readyReplicas", "replicas_ready"),
                            ("availableReplicas", "replicas_available"), ("updatedReplicas", "replicas_updated"),
                            ("currentReplicas", "replicas_current"), ("unavailableReplicas", "replicas_unavailable")):
            if kind == "Deployment" and name in ("replicas_ready", "replicas_current"):
                continue
            if kind == "StatefulSet" and name in ("replicas_unavailable",):
                continue
            out.add(f"kube_{key}_status_{name}", ids, status.get(field, 0))


def claims(out: Families, items: list[dict]) -> None:
    for pvc in items:
        meta, spec, status = pvc["metadata"], pvc.get("spec") or {}, pvc.get("status") or {}
        ids = {"namespace": meta["namespace"], "persistentvolumeclaim": meta["name"]}
        out.add("kube_persistentvolumeclaim_info", {**ids, "storageclass": spec.get("storageClassName", ""),
                                                    "volumename": spec.get("volumeName", "")}, 1)
        for phase in ("Lost", "Bound", "Pending"):
            out.add("kube_persistentvolumeclaim_status_phase", {**ids, "phase": phase}, int(status.get("phase") == phase))
        requested = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        out.add("kube_persistentvolumeclaim_resource_requests_storage_bytes", ids, quantity(requested))


LISTS = {"pods": "/api/v1/pods", "nodes": "/api/v1/nodes", "Deployment": "/apis/apps/v1/deployments",
         "StatefulSet": "/apis/apps/v1/statefulsets", "DaemonSet": "/apis/apps/v1/daemonsets",
         "claims": "/api/v1/persistentvolumeclaims"}


async def collect(session: aiohttp.ClientSession, base: str, token: str, tls: ssl.SSLContext) -> str:
    out = Families()
    headers = {"Authorization": f"Bearer {token}"}
    for what, path in LISTS.items():
        async with session.get(base + path, headers=headers, ssl=tls) as reply:
            reply.raise_for_status()
            items = (await reply.json())["items"]
        if what == "pods":
            pods(out, items)
        elif what == "nodes":
            nodes(out, items)
        elif what == "claims":
            claims(out, items)
        else:
            workloads(out, what, items)
    return out.text()


def make_app(options) -> web.Application:
    base = f"https://{os.environ.get('KUBERNETES_SERVICE_HOST', '')}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
    app = web.Application()

    async def start(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def serve_metrics(request: web.Request) -> web.Response:
        tls = ssl.create_default_context(cafile=str(SA / "ca.crt"))
        try:
            text = await collect(app["session"], base, (SA / "token").read_text().strip(), tls)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            print(f"error listing objects: {error!r}", flush=True)
            return web.Response(status=500, text=f"error listing objects: {error!r}\n")
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/livez", ok)
    app.router.add_get("/readyz", ok)
    return app


if __name__ == "__main__":
    serve.main(make_app)
