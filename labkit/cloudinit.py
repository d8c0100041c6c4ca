"""The cloud-init settings a lab node gets through Proxmox VE, and how PVE spells them.

PVE keeps cloud-init settings in the VM config (``ciuser``, ``sshkeys``, ``ipconfig0``...) and
renders them into the VM's cloud-init drive at boot. ``sshkeys`` must be URL-encoded (PVE
decodes it once), spaces as ``%20``: the classic pitfall of PVE's API.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from labkit.params import Lab, Node


def encode_sshkeys(keys: list[str]) -> str:
    """PVE's form of ``sshkeys``: one key per line, percent-encoded (``safe=''``: PVE wants ``%20``, not ``+``)."""
    return quote("\n".join(k.strip() for k in keys) + "\n", safe="")


def decode_sshkeys(value: str) -> list[str]:
    return [line.strip() for line in unquote(value).splitlines() if line.strip()]


def ipconfig(lab: Lab, node: Node) -> str:
    """Static ``ipconfig0``: address with the subnet's prefix, and the gateway."""
    return f"ip={node.ip}/{lab.network.subnet.prefixlen},gw={lab.network.gateway}"


def settings(lab: Lab, node: Node, public_key: str) -> dict[str, str]:
    """The cloud-init part of a node's VM config, as PVE stores it."""
    return {
        "ciuser": lab.ssh.user,
        "sshkeys": encode_sshkeys([public_key]),
        "ipconfig0": ipconfig(lab, node),
        "nameserver": " ".join(str(ip) for ip in lab.network.dns),
        "searchdomain": lab.network.search_domain,
    }
