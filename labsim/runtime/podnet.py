"""What a container's connections reach: names through its cluster's DNS (the nameserver, search
list and ndots of its /etc/resolv.conf, asked over the wire as a pod's resolver does), and its
cluster's addresses: pod IPs, ClusterIPs at their Services' ports, node and load-balancer
addresses. ``localhost`` and 127.0.0.1 are the pod itself (its pod IP here). A ClusterIP at a
port its Service does not have times out, as kube-proxy's iptables rules route it nowhere;
anything else is unreachable."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from labsim.node.network import NetworkUnreachable, NoSuchHost, TimedOut

if TYPE_CHECKING:
    from labsim.kube.cluster import Cluster

DNS_SECONDS = 5.0  # the resolver's whole budget per name (musl/glibc: 5 s timeout)


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
        hosts = _hosts(fs.read("/etc/hosts").decode(errors="replace") if fs.is_file("/etc/hosts") else "")
        if name in hosts:
            return self.pod_ip if hosts[name] == "127.0.0.1" else hosts[name]
        resolver = _resolver(fs.read("/etc/resolv.conf").decode(errors="replace") if fs.is_file("/etc/resolv.conf")
                             else "")
        try:
            answer = await resolver.resolve(name, "A", search=True)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers, dns.exception.Timeout):
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


def _hosts(text: str) -> dict[str, str]:
    names = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            names.setdefault(name, fields[0])
    return names


def _resolver(resolv_conf: str) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.lifetime = DNS_SECONDS
    for line in resolv_conf.splitlines():
        fields = line.split()
        if fields[:1] == ["nameserver"] and len(fields) > 1:
            resolver.nameservers = [*resolver.nameservers, fields[1]]
        elif fields[:1] == ["search"]:
            resolver.search = [dns.name.from_text(domain) for domain in fields[1:]]
        elif fields[:1] == ["options"]:
            for option in fields[1:]:
                if option.startswith("ndots:"):
                    resolver.ndots = int(option.split(":", 1)[1])
    resolver.use_search_by_default = True
    return resolver
