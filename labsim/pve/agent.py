"""The QEMU guest agent of a booted Ubuntu 22.04 guest, as PVE relays it: answers only when the
VM's config enables the agent, the VM runs and the agent inside has started."""

from __future__ import annotations

import hashlib
from typing import Any

from labsim.node import image
from labsim.pve.errors import PVEError
from labsim.pve.vms import VM, GuestNetwork

OS_INFO = {
    "id": "ubuntu",
    "kernel-release": image.KERNEL,
    "kernel-version": image.KERNEL_BUILD,
    "machine": "x86_64",
    "name": "Ubuntu",
    "pretty-name": image.OS_NAME,
    "version": "22.04.5 LTS (Jammy Jellyfish)",
    "version-id": "22.04",
}


def check_available(vm: VM, started: bool) -> None:
    """``started``: the agent inside the guest has started (``ProxmoxVE.agent_running``)."""
    if not vm.agent_enabled:
        raise PVEError(500, "No QEMU guest agent configured")
    if vm.status != "running":
        raise PVEError(500, f"VM {vm.vmid} is not running")
    if not started:
        raise PVEError(500, "QEMU guest agent is not running")


def network_interfaces(vm: VM, guest: GuestNetwork) -> dict[str, Any]:
    eth0: dict[str, Any] = {
        "name": "eth0",
        "hardware-address": (guest.mac or "bc:24:11:00:00:00").lower(),
        "statistics": _stats(vm.vmid),
    }
    if guest.ip:
        eth0["ip-addresses"] = [
            {"ip-address-type": "ipv4", "ip-address": guest.ip, "prefix": guest.prefix},
            {"ip-address-type": "ipv6", "ip-address": _link_local(guest.mac), "prefix": 64},
        ]
    lo = {
        "name": "lo",
        "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [
            {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
            {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128},
        ],
        "statistics": _stats(0),
    }
    return {"result": [lo, eth0]}


def host_name(guest: GuestNetwork) -> dict[str, Any]:
    return {"result": {"host-name": guest.hostname}}


def _link_local(mac: str | None) -> str:
    octets = [int(b, 16) for b in (mac or "bc:24:11:00:00:00").split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    groups = [f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2)]
    return "fe80::" + ":".join(groups)


def _stats(seed: int) -> dict[str, int]:
    base = int(hashlib.sha1(str(seed).encode()).hexdigest()[:6], 16)
    return {"rx-bytes": base * 7, "rx-packets": base // 90, "rx-errs": 0, "rx-dropped": 0,
            "tx-bytes": base * 3, "tx-packets": base // 120, "tx-errs": 0, "tx-dropped": 0}
