"""The twin's kube-proxy: every Service's front addresses forward to its ready endpoints.

For each port of a ClusterIP, NodePort or LoadBalancer Service it listens on the ClusterIP(s),
the externalIPs, the load-balancer ingress IPs (port) and every Ready node's InternalIP
(nodePort), and forwards TCP connections and UDP datagrams to a ready endpoint of the port, read
from the Service's EndpointSlices. A front whose port has no ready endpoint is not listened on, so
clients get "connection refused" as with kube-proxy's iptables REJECT rule. Endpoints are picked
at random per connection; session affinity and traffic policies (Local) are not modelled.
One kube-proxy serves the whole cluster: every node's addresses are on this machine's loopback.
NodePorts are served on the address of every node whose machine runs (a node's rules stay while
its k3s is stopped). What it programs (``ProxyRules``: the table and its listeners, iptables
rules on a real node) outlives the kube-proxy, as iptables rules outlive k3s' process: while k3s
is stopped Services answer with the last table, the next kube-proxy takes them over, and they
go with the cluster (``Cluster.close``) or the server's machine.

A load-balancer address that is not a node's own (MetalLB's, not ServiceLB's) is reached from
the LAN only while a speaker announces it: once MetalLB's ServiceL2Status kind is served, such
an address is listened on only while a ServiceL2Status names its Service (re-checked every
second while one waits), so a pool without an L2Advertisement hands out addresses nobody reaches.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from labsim.kube.controllers.workqueue import Controller, Key
from labsim.net.forward import Backend, TcpForwarder, UdpForwarder
from labsim.net.listeners import Address, Listeners, is_loopback

SERVICE_NAME = "kubernetes.io/service-name"
PROTOCOLS = ("TCP", "UDP")  # SCTP is not modelled
_TABLE = "table"  # the one key: any change recomputes the whole table, as kube-proxy's sync does
L2_STATUS = ("metallb.io/v1beta1", "ServiceL2Status")
UNANNOUNCED_RETRY = 1.0  # real seconds before an unannounced load-balancer address is looked at again


class ProxyRules:
    """The forwarding table and the listeners that serve it."""

    def __init__(self, owner: str) -> None:
        self.listeners = Listeners(owner)
        self.table: dict[Address, list[Backend]] = {}
        self._rng = random.Random()

    async def sync(self, table: dict[Address, list[Backend]]) -> None:
        self.table = table
        await self.listeners.sync({a for a, backends in table.items() if backends}, self._open)

    def pick(self, address: Address) -> Backend | None:
        backends = self.table.get(address)
        return self._rng.choice(backends) if backends else None

    async def _open(self, address: Address):
        protocol, ip, port = address
        forwarder = (TcpForwarder if protocol == "TCP" else UdpForwarder)(lambda: self.pick(address))
        return await forwarder.listen(ip, port)

    def close(self) -> None:
        self.listeners.close()


class KubeProxy(Controller):
    name = "kube-proxy"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.services = self.res("v1", "Service")
        self.slices = self.res("discovery.k8s.io/v1", "EndpointSlice")
        self.nodes = self.res("v1", "Node")
        # The rules the kube-proxy before this one (k3s restarted) left, else new ones.
        self.rules = cluster.outlive(self.name, lambda: ProxyRules(f"kube-proxy of {cluster.name}"))
        self._withheld = False  # a load-balancer address waits for its announcement

    def watches(self):
        return [(res, lambda event_type, obj: [_TABLE]) for res in (self.services, self.slices, self.nodes)]

    async def reconcile(self, key: Key) -> None:
        self._withheld = False
        table = self._table()
        if self._withheld:
            asyncio.get_running_loop().call_later(UNANNOUNCED_RETRY, self.queue.add, _TABLE)
        await self.rules.sync(table)

    # -- the table --------------------------------------------------------------------------------
    def _table(self) -> dict[Address, list[Backend]]:
        node_ips = self._running_node_ips()
        reachable = self._lb_reachable()
        table: dict[Address, list[Backend]] = defaultdict(list)
        for svc in self.store.list(self.services):
            spec = svc.get("spec") or {}
            if spec.get("type") == "ExternalName" or spec.get("clusterIP") in (None, "", "None"):
                continue  # headless Services are DNS only
            slices = self.store.list(self.slices, svc["metadata"]["namespace"],
                                     labels={SERVICE_NAME: svc["metadata"]["name"]})
            for port in spec.get("ports") or []:
                protocol = port.get("protocol", "TCP")
                if protocol not in PROTOCOLS:
                    continue
                backends = _ready_backends(slices, port.get("name", ""), protocol)
                for ip, front_port in _fronts(svc, port, node_ips, reachable):
                    table[(protocol, ip, front_port)].extend(backends)
        return dict(table)

    def _lb_reachable(self):
        """Which load-balancer addresses the LAN reaches: all, or (MetalLB installed) the nodes'
        and those of announced Services; a withheld one brings a re-sync in a second."""
        if not self.store.catalog.by_kind(*L2_STATUS):
            return lambda svc, ip: True
        nodes = {a["address"] for n in self.store.list(self.nodes) for a in (n.get("status") or {}).get("addresses") or []}
        labels = [s["metadata"].get("labels") or {} for s in self.store.list(self.res(*L2_STATUS))]
        announced = {(lb.get("metallb.io/service-namespace"), lb.get("metallb.io/service-name")) for lb in labels}

        def reachable(svc: dict, ip: str) -> bool:
            if ip in nodes or (svc["metadata"]["namespace"], svc["metadata"]["name"]) in announced:
                return True
            self._withheld = True
            return False
        return reachable

    def _running_node_ips(self) -> list[str]:
        """The nodes' addresses, of machines that run: a node whose k3s is stopped (NotReady) keeps
        its rules; the twin's addresses all answer on loopback, so a powered-off one is left out."""
        ips = [a["address"] for node in self.store.list(self.nodes)
               for a in (node.get("status") or {}).get("addresses") or [] if a["type"] == "InternalIP"]
        return [ip for ip in ips if self.cluster.machine_runs(ip)]


def _fronts(svc: dict, port: dict, node_ips: list[str], reachable) -> list[tuple[str, int]]:
    spec, status = svc["spec"], svc.get("status") or {}
    ips = [*(spec.get("clusterIPs") or [spec["clusterIP"]]), *(spec.get("externalIPs") or [])]
    ips += [i["ip"] for i in (status.get("loadBalancer") or {}).get("ingress") or [] if i.get("ip")
            and reachable(svc, i["ip"])]
    fronts = [(ip, port["port"]) for ip in dict.fromkeys(ips)]
    if spec.get("type") in ("NodePort", "LoadBalancer") and port.get("nodePort"):
        fronts += [(ip, port["nodePort"]) for ip in node_ips]
    return fronts


def _ready_backends(slices: list[dict], port_name: str, protocol: str) -> list[Backend]:
    backends = []
    for endpoint_slice in slices:
        ports = [p for p in endpoint_slice.get("ports") or []
                 if p.get("name", "") == port_name and p.get("protocol", "TCP") == protocol and p.get("port")]
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue  # unset means ready, as the API documents
            # Only loopback backends: an EndpointSlice written by hand must not send traffic off the machine.
            backends += [(address, p["port"]) for address in endpoint.get("addresses") or [] if is_loopback(address)
                         for p in ports]
    return backends
