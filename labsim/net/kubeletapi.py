"""The kubelets' HTTPS endpoint (port 10250 on each Ready node's InternalIP): ``/metrics``,
``/metrics/cadvisor`` and ``/metrics/probes``, as kube-prometheus-stack's ``kubelet`` job scrapes them.

Like the real kubelet it authenticates the bearer token with the API server's authenticator and
authorizes ``get nodes/metrics`` on the node with its authorizer (403 otherwise); its serving
certificate is signed by the cluster's CA for the node's address and name. ``/metrics`` carries
the kubelet's own gauges (running pods and containers on the node, node name, build info);
``/metrics/cadvisor`` carries each running container's CPU seconds and memory from the twin's
resource-usage model (labsim.kube.metrics, what ``kubectl top`` shows), with cAdvisor's labels
(namespace, pod, container, image, name, id). ``/metrics/probes`` carries ``prober_probe_total``
per container, probe type and result for the probes the twin checks for real (labsim.runtime.probes).
"""

from __future__ import annotations

import asyncio
import calendar
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from labsim import pki
from labsim.kube import authn
from labsim.kube.authz import Attributes
from labsim.kube.controllers.kubelet import _internal_ip
from labsim.kube.controllers.pods import is_ready
from labsim.kube.controllers.workqueue import Key
from labsim.kube.metrics import _container_usage
from labsim.net.listeners import Address, Listeners, ListeningController
from labsim.runtime.probes import Health

PORT = 10250
_NODES = "nodes"


class KubeletApi(ListeningController):
    name = "kubelet-api"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.nodes = self.res("v1", "Node")
        self.listeners = Listeners(f"kubelets of {cluster.name}")

    def watches(self):
        return [(self.nodes, lambda event_type, node: [_NODES])]

    async def reconcile(self, key: Key) -> None:
        wanted = {("TCP", ip, PORT) for node in self.store.list(self.nodes)
                  if is_ready(node) and (ip := _internal_ip(node))}
        await self.listeners.sync(wanted, self._open)

    async def _open(self, address: Address):
        node = next(n for n in self.store.list(self.nodes) if _internal_ip(n) == address[1])
        return await NodeServer(self.cluster, node["metadata"]["name"]).listen(address[1], address[2])


class NodeServer:
    def __init__(self, cluster, node: str) -> None:
        self.cluster, self.node = cluster, node
        self._server: asyncio.Server | None = None

    async def listen(self, ip: str, port: int) -> NodeServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(web.Server(self._handle), ip, port, ssl=self._tls(ip))
        return self

    def _tls(self, ip: str) -> ssl.SSLContext:
        folder = self.cluster.state_dir / "tls"
        ca = pki.KeyPair.load(folder / "ca.crt", folder / "ca.key")
        pair = pki.issue(ca, f"{self.node}@kubelet", sans=[ip, self.node])
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as tmp:
            pair.save(Path(tmp) / "cert", Path(tmp) / "key")
            context.load_cert_chain(Path(tmp) / "cert", Path(tmp) / "key")
        return context

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        if request.path not in ("/metrics", "/metrics/cadvisor", "/metrics/probes"):
            return web.Response(status=404, text="404 page not found\n")
        user = authn.authenticate(self.cluster, None, request.headers.get("Authorization", ""))
        if user is None:
            return web.Response(status=401, text="Unauthorized")
        allowed, _ = self.cluster.authorizer.authorize(Attributes(user, "get", True, "", "", "nodes", "metrics",
                                                                  self.node))
        if not allowed:
            return web.Response(status=403, text=f"Forbidden (user={user.name}, verb=get, resource=nodes, "
                                                 f"subresource=metrics)")
        # Selected in the store, so only this node's pods are copied: a copy of every pod at each of the
        # kubelets' scrapes (three paths, each second, per node) was most of an idle 12-node lab's CPU.
        pods = self.cluster.store.list(self.cluster.store.resource("v1", "Pod"),
                                       fields={"spec.nodeName": self.node, "status.phase": "Running"})
        if request.path.endswith("probes"):
            text = prober(pods, self.cluster.runtime.health)
        else:
            text = cadvisor(pods) if request.path.endswith("cadvisor") else kubelet(self.node, pods, self.cluster.version)
        return web.Response(text=text, content_type="text/plain")

    def close(self, *, connections: bool = False) -> None:
        if self._server is not None:
            self._server.close()


def kubelet(node: str, pods: list[dict], version: str) -> str:
    running = sum(1 for p in pods for cs in p["status"].get("containerStatuses") or [] if "running" in cs.get("state", {}))
    return "\n".join([
        "# HELP kubelet_node_name [ALPHA] The node's name. The count is always 1.", "# TYPE kubelet_node_name gauge",
        f'kubelet_node_name{{node="{node}"}} 1',
        "# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox",
        "# TYPE kubelet_running_pods gauge", f"kubelet_running_pods {len(pods)}",
        "# HELP kubelet_running_containers [ALPHA] Number of containers currently running",
        "# TYPE kubelet_running_containers gauge", f'kubelet_running_containers{{container_state="running"}} {running}',
        "# HELP kubernetes_build_info [ALPHA] A metric with a constant '1' value labeled by major, minor, git "
        "version, git commit, git tree state, build date, Go version, and compiler from which Kubernetes was built, "
        "and platform on which it is running.", "# TYPE kubernetes_build_info gauge",
        f'kubernetes_build_info{{git_version="{version}"}} 1']) + "\n"


def prober(pods: list[dict], health: Callable[[dict], dict[str, Health]]) -> str:
    lines = ["# HELP prober_probe_total [BETA] Cumulative number of a liveness, readiness or startup probe for a "
             "container by result.", "# TYPE prober_probe_total counter"]
    for pod in pods:
        meta = pod["metadata"]
        for container, found in sorted(health(pod).items()):
            for (probe_type, result), count in sorted(found.counts.items()):
                lines.append(f'prober_probe_total{{container="{container}",namespace="{meta["namespace"]}",'
                             f'pod="{meta["name"]}",pod_uid="{meta["uid"]}",probe_type="{probe_type}",'
                             f'result="{result}"}} {count}')
    return "\n".join(lines) + "\n"


def cadvisor(pods: list[dict]) -> str:
    cpu = ["# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.",
           "# TYPE container_cpu_usage_seconds_total counter"]
    memory = ["# HELP container_memory_working_set_bytes Current working set in bytes.",
              "# TYPE container_memory_working_set_bytes gauge"]
    now = time.time()
    for pod in pods:
        meta = pod["metadata"]
        statuses = {cs["name"]: cs for cs in pod["status"].get("containerStatuses") or []}
        for container in pod["spec"].get("containers") or []:
            started = ((statuses.get(container["name"]) or {}).get("state") or {}).get("running", {}).get("startedAt")
            if not started:
                continue
            nano, working_set = _container_usage(container)
            seconds = max(0.0, now - calendar.timegm(time.strptime(started, "%Y-%m-%dT%H:%M:%SZ")))
            labels = (f'container="{container["name"]}",id="/kubepods/pod{meta["uid"]}/{container["name"]}",'
                      f'image="{container.get("image", "")}",name="{container["name"]}",'
                      f'namespace="{meta["namespace"]}",pod="{meta["name"]}"')
            cpu.append(f"container_cpu_usage_seconds_total{{{labels}}} {nano / 1e9 * seconds:.6f}")
            memory.append(f"container_memory_working_set_bytes{{{labels}}} {working_set}")
    return "\n".join(cpu + memory) + "\n"
