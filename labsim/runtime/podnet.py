"""What a container's connections reach: names through its cluster's DNS (the nameserver, search
list and ndots of its /etc/resolv.conf, asked over the wire as a pod's resolver does), and its
cluster's addresses: pod IPs, ClusterIPs at their Services' ports, node and load-balancer
addresses. ``localhost`` and 127.0.0.1 are the pod itself (its pod IP here). A ClusterIP at a
port its Service does not have times out, as kube-proxy's iptables rules route it nowhere;
anything else is unreachable."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from labsim.apps.resolver import LOOKUP_ERRORS, dns_resolver, hosts
from labsim.node.network import NetworkUnreachable, NoSuchHost, TimedOut

if TYPE_CHECKING:
    from labsim.kube.cluster import Cluster


class PodNetwork:
    def __init__(self, cluster: Cluster, pod_ip: str) -> None:
        self.cluster, self.pod_ip = cluster, pod_ip

    async def address(self, fs: Any, name: str, port: int) -> str:
        address = await self._lookup(fs, name.strip("[]"))
        self._route(address, port)
        return address

    async def resolve(self, fs: Any, name: str) -> str:
        """The address a name has for this pod (its DNS, its /etc/hosts; localhost is the pod)."""
        return await self._lookup(fs, name.strip("[]"))

    async def _lookup(self, fs: Any, name: str) -> str:
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            return self.pod_ip if address.is_loopback and str(address) in ("127.0.0.1", "::1") else str(address)
        known = hosts(_text(fs, "/etc/hosts"))
        if name in known:
            return self.pod_ip if known[name] == "127.0.0.1" else known[name]
        try:
            answer = await dns_resolver(_text(fs, "/etc/resolv.conf")).resolve(name, "A", search=True)
        except LOOKUP_ERRORS:
            raise NoSuchHost(name) from None
        return str(answer[0])

    def _route(self, address: str, port: int) -> None:
        ip, cluster = ipaddress.ip_address(address), self.cluster
        if ip in ipaddress.ip_network(cluster.service_cidr):
            if not any(port == p.get("port") for p in self._service_ports(address)):
                raise TimedOut(address)
            return
        if ip in ipaddress.ip_network(cluster.cluster_cidr) or address in self._host_addresses():
            return
        raise NetworkUnreachable(address)

    def _service_ports(self, cluster_ip: str) -> list[dict]:
        store = self.cluster.store
        for service in store.list(store.resource("v1", "Service")):
            spec = service.get("spec") or {}
            if cluster_ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]):
                return spec.get("ports") or []
        return []

    def _host_addresses(self) -> set[str]:
        """The nodes' addresses and the load-balancer addresses Services were given."""
        store, found = self.cluster.store, {self.cluster.server_ip}
        for node in store.list(store.resource("v1", "Node")):
            found.update(a["address"] for a in (node.get("status") or {}).get("addresses") or [])
        for service in store.list(store.resource("v1", "Service")):
            ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            found.update(i["ip"] for i in ingress if i.get("ip"))
        return found


def _text(fs: Any, path: str) -> str:
    return fs.read(path).decode(errors="replace") if fs.is_file(path) else ""
