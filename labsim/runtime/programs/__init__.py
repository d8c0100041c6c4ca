"""One adapter per real program: how a container of its image becomes a real process (binary,
arguments, environment and files translated to the container's real paths, the user it runs as).

An adapter may also translate the container's variables (``environment(env, pod_ip)``: a sidecar's
localhost is its pod's IP here). An adapter raises ``CannotStart`` when its container cannot run here (the program is missing, a
port it must bind is privileged): that pod fails with the message, never the lab."""

from __future__ import annotations

import os
from pathlib import Path

_UNPRIVILEGED_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
_CAP_NET_BIND_SERVICE = 10


class CannotStart(Exception):
    """The container cannot run here; the message says why and what to do."""


def lowest_bindable_port() -> int:
    """The lowest TCP port labsim's processes may listen on: any as root (or with
    CAP_NET_BIND_SERVICE), else net.ipv4.ip_unprivileged_port_start (1024 by default)."""
    if os.geteuid() == 0:
        return 0
    status = Path("/proc/self/status").read_text()
    effective = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")), 0)
    if effective >> _CAP_NET_BIND_SERVICE & 1:
        return 0
    try:
        return int(_UNPRIVILEGED_START.read_text())
    except (OSError, ValueError):
        return 1024


def check_ports(image: str, ports: list[int]) -> None:
    """Refuse (CannotStart) a container that must listen below the lowest port allowed here."""
    lowest = lowest_bindable_port()
    below = sorted({port for port in ports if port < lowest})
    if below:
        raise CannotStart(
            f"{image} listens on port {below[0]}, below net.ipv4.ip_unprivileged_port_start ({lowest}), and labsim "
            f"does not run as root: run labsim as root, or set sysctl net.ipv4.ip_unprivileged_port_start={below[0]}")
