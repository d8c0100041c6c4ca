"""CoreDNS of the twin: the DNS server of every running CoreDNS pod (``k8s-app=kube-dns`` in
kube-system), listening on the pod's IP, port 53, UDP and TCP, as the container would. Clients use
the cluster DNS address (the kube-dns ClusterIP, the service CIDR's tenth), which the kube-proxy
forwards to these pods like any Service. Answers come from the API objects (dnszone).
"""

from __future__ import annotations

from labsim.kube.controllers.pods import TERMINAL, is_terminating
from labsim.kube.controllers.workqueue import Key
from labsim.net.dnsserver import TcpDnsServer, UdpDnsServer
from labsim.net.dnszone import SYSTEM, ClusterZone
from labsim.net.listeners import Address, Listeners, ListeningController

SELECTOR = {"k8s-app": "kube-dns"}
DNS_PORT = 53
_PODS = "pods"


class CoreDNS(ListeningController):
    name = "coredns"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.pods = self.res("v1", "Pod")
        self.zone = ClusterZone(self.store)
        self.listeners = Listeners(f"CoreDNS of {cluster.name}")

    def watches(self):
        return [(self.pods, lambda event_type, pod: [_PODS] if _is_coredns(pod) else [])]

    async def reconcile(self, key: Key) -> None:
        wanted = set()
        for pod in self.store.list(self.pods, SYSTEM, labels=SELECTOR):
            status = pod.get("status") or {}
            if status.get("podIP") and status.get("phase") not in TERMINAL and not is_terminating(pod):
                wanted |= {("UDP", status["podIP"], DNS_PORT), ("TCP", status["podIP"], DNS_PORT)}
        await self.listeners.sync(wanted, self._open)

    async def _open(self, address: Address):
        protocol, ip, port = address
        return await (UdpDnsServer if protocol == "UDP" else TcpDnsServer)(self.zone).listen(ip, port)


def _is_coredns(pod: dict) -> bool:
    meta = pod["metadata"]
    return meta.get("namespace") == SYSTEM and (meta.get("labels") or {}).get("k8s-app") == "kube-dns"
