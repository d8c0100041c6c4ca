"""What a node's network reaches. The twin runs on the host's loopback, so without a fence a
node's `curl` would reach any service of the host (or of the LAN the host sees). A node reaches
only its lab: the lab's address ranges (``SimConfig.networks``: node subnet, MetalLB pool,
pod and service CIDRs) and itself. ``localhost`` and the rest of 127.0.0.0/8 outside those
ranges are the node's own loopback, as on a real machine: they lead to the node's IP. There is
no DNS: only IP addresses, ``localhost`` and the node's own names resolve.

A container (a node model with a ``pod_network``: labsim.runtime.podnet) resolves names through
its cluster's DNS and reaches its cluster's addresses; ``address`` is what curl and wget ask."""

from __future__ import annotations

import ipaddress
from typing import Any

# Always the node itself, whatever the lab's ranges say (the host's services listen there).
OWN_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


class NoSuchHost(Exception):
    """The name does not resolve on the node."""


class NetworkUnreachable(Exception):
    """The address is outside the lab: no route from the node."""


class TimedOut(Exception):
    """Nothing answers the connection (a ClusterIP on a port its Service does not have: the
    packet is routed nowhere, as with kube-proxy's iptables rules); the connect times out."""


async def address(node: Any, name: str, port: int) -> str:
    """The address a node's (or a container's) TCP connection to ``name``:``port`` goes to."""
    pod_network = getattr(node, "pod_network", None)
    if pod_network is None:
        return resolve(node, name)
    return await pod_network.address(node, name, port)


def resolve(node: Any, name: str) -> str:
    """The address a node connects to for ``name`` (a host name or an IP literal)."""
    if name in ("", "localhost", node.hostname, node.spec.fqdn):
        return node.spec.ip
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        raise NoSuchHost(name) from None
    if address in OWN_LOOPBACK:
        return node.spec.ip
    if any(address in network for network in node.lab.config.networks):
        return str(address)
    if address.is_loopback:
        return node.spec.ip
    raise NetworkUnreachable(name)
