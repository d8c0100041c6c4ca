"""A cluster's address plan, as k3s derives it from `cluster-cidr` and `service-cidr`.

Nodes get a /24 of the cluster CIDR each (kube-controller-manager's node-cidr-mask-size), the
kubernetes Service the service CIDR's first address and CoreDNS its tenth (k3s' cluster-dns).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network
# The twin's defaults when config.yaml sets none: k3s' 10.42/10.43 moved into loopback, since the
# embedded lab binds 127.0.0.0/8 only (the sim lab file sets these explicitly).
SIM_CLUSTER_CIDR = "127.42.0.0/16"
SIM_SERVICE_CIDR = "127.43.0.0/16"
NODE_MASK = 24
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def network(text: str) -> Network:
    return ipaddress.IPv4Network(text, strict=True)


def kubernetes_ip(service_cidr: str) -> str:
    return str(network(service_cidr)[1])


def cluster_dns_ip(service_cidr: str) -> str:
    return str(network(service_cidr)[10])


def static_band(service_cidr: str) -> int:
    """How many low addresses the ClusterIP allocator keeps for fixed IPs (min(max(16, size/16), 256)),
    dynamic allocation prefers the rest as the real allocator does."""
    return min(max(16, network(service_cidr).num_addresses // 16), 256)


def node_cidr(cluster_cidr: str, taken: Iterable[str]) -> str:
    """The first /24 of the cluster CIDR no node holds yet."""
    used = set(taken)
    for subnet in network(cluster_cidr).subnets(new_prefix=NODE_MASK):
        if str(subnet) not in used:
            return str(subnet)
    raise ValueError(f"cluster-cidr {cluster_cidr} has no free /{NODE_MASK} for another node")


def loopback_error(flag: str, value: str) -> str | None:
    """Why the embedded lab cannot use ``value`` for ``flag`` (it binds 127.0.0.0/8 only), or None."""
    try:
        net = network(value)
    except ValueError as e:
        return f"invalid {flag} {value!r}: {e}"
    if not net.subnet_of(LOOPBACK):
        return (f"{flag} {value} is not inside 127.0.0.0/8: the embedded lab binds loopback addresses only "
                "(set it in config.yaml, lab file k3s.cluster_cidr/k3s.service_cidr, e.g. 127.42.0.0/16)")
    if flag == "cluster-cidr" and net.prefixlen > NODE_MASK:
        return f"{flag} {value} is smaller than one node's /{NODE_MASK}"
    return None
