"""CoreDNS of the twin: the DNS server of every running CoreDNS pod (``k8s-app=kube-dns`` in
kube-system), listening on the pod's IP, port 53, UDP and TCP, as the container would. Clients use
the cluster DNS address (the kube-dns ClusterIP, the service CIDR's tenth), which the kube-proxy
forwards to these pods like any Service. Answers come from the API objects (dnszone).

The Corefile's ``prometheus :9153`` plugin is served too: ``/metrics`` on the pod's IP, port 9153,
with CoreDNS' names for what these servers answered (requests by type, responses by rcode) and
its build info, for a ServiceMonitor such as kube-prometheus-stack's ``coredns`` job.

The servers are the CoreDNS pods' processes: they outlive k3s' process as containers do
(KillMode=process): kept in ``cluster.outliving`` while k3s is stopped, taken over by the next
controller, closed with the cluster or the server's machine.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import dns.rcode
import dns.rdatatype
from aiohttp import web

from labsim.kube.controllers.pods import TERMINAL, is_terminating
from labsim.kube.controllers.workqueue import Controller, Key
from labsim.net.dnsserver import TcpDnsServer, UdpDnsServer
from labsim.net.dnszone import SYSTEM, ClusterZone
from labsim.net.listeners import Address, Listeners

SELECTOR = {"k8s-app": "kube-dns"}
DNS_PORT = 53
METRICS_PORT = 9153
VERSION = "1.13.1"
_PODS = "pods"


class Servers:
    """The CoreDNS pods' servers: their listeners and the zone they answer from."""

    def __init__(self, cluster) -> None:
        self.zone = CountingZone(ClusterZone(cluster.store))
        self.listeners = Listeners(f"CoreDNS of {cluster.name}")

    def close(self) -> None:
        self.listeners.close()


class CoreDNS(Controller):
    name = "coredns"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.pods = self.res("v1", "Pod")
        servers = cluster.outlive(self.name, lambda: Servers(cluster))  # those before a k3s restart, else new
        self.zone, self.listeners = servers.zone, servers.listeners

    def watches(self):
        return [(self.pods, lambda event_type, pod: [_PODS] if _is_coredns(pod) else [])]

    async def reconcile(self, key: Key) -> None:
        wanted = set()
        for pod in self.store.list(self.pods, SYSTEM, labels=SELECTOR):
            status = pod.get("status") or {}
            if status.get("podIP") and status.get("phase") not in TERMINAL and not is_terminating(pod):
                wanted |= {("UDP", status["podIP"], DNS_PORT), ("TCP", status["podIP"], DNS_PORT),
                           ("TCP", status["podIP"], METRICS_PORT)}
        await self.listeners.sync(wanted, self._open)

    async def _open(self, address: Address):
        protocol, ip, port = address
        if port == METRICS_PORT:
            return await MetricsServer(self.zone).listen(ip, port)
        return await (UdpDnsServer if protocol == "UDP" else TcpDnsServer)(self.zone).listen(ip, port)


def _is_coredns(pod: dict) -> bool:
    meta = pod["metadata"]
    return meta.get("namespace") == SYSTEM and (meta.get("labels") or {}).get("k8s-app") == "kube-dns"


class CountingZone:
    """The zone, counting the queries it answers (by type) and its answers (by rcode)."""

    def __init__(self, zone: ClusterZone) -> None:
        self.zone, self.requests, self.responses = zone, Counter(), Counter()

    def answer(self, query):
        for question in query.question:
            self.requests[dns.rdatatype.to_text(question.rdtype)] += 1
        response = self.zone.answer(query)
        self.responses[dns.rcode.to_text(response.rcode())] += 1
        return response

    def __getattr__(self, name: str):
        return getattr(self.zone, name)


class MetricsServer:
    """CoreDNS' prometheus plugin: GET /metrics."""

    def __init__(self, zone: CountingZone) -> None:
        self.zone = zone
        self._server = None

    async def listen(self, ip: str, port: int) -> MetricsServer:
        self._server = await asyncio.get_running_loop().create_server(web.Server(self._handle), ip, port)
        return self

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        if request.path != "/metrics":
            return web.Response(status=404, text="404 page not found\n")
        server = 'server="dns://:53",zone="."'
        lines = ["# HELP coredns_build_info A metric with a constant '1' value labeled by version, revision, "
                 "and goversion from which CoreDNS was built.", "# TYPE coredns_build_info gauge",
                 f'coredns_build_info{{goversion="go1.24.6",revision="labsim",version="{VERSION}"}} 1',
                 "# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.",
                 "# TYPE coredns_dns_requests_total counter"]
        lines += [f'coredns_dns_requests_total{{{server},type="{t}"}} {n}' for t, n in sorted(self.zone.requests.items())]
        lines += ["# HELP coredns_dns_responses_total Counter of response status codes.",
                  "# TYPE coredns_dns_responses_total counter"]
        lines += [f'coredns_dns_responses_total{{{server},rcode="{r}"}} {n}' for r, n in sorted(self.zone.responses.items())]
        lines += ["# HELP coredns_plugin_enabled A metric that indicates whether a plugin is enabled on per server "
                  "and zone basis.", "# TYPE coredns_plugin_enabled gauge"]
        lines += [f'coredns_plugin_enabled{{name="{p}",{server}}} 1' for p in ("cache", "errors", "forward", "health",
                                                                              "kubernetes", "prometheus", "ready")]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    def close(self, *, connections: bool = False) -> None:
        if self._server is not None:
            self._server.close()
