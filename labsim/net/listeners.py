"""Address binding: a set of TCP and UDP listeners on loopback addresses, opened and closed to
match what a controller wants, all closed when it stops.

Linux answers on every 127.0.0.0/8 address without setup, so binding a pod IP or a ClusterIP
needs nothing but the address. Anything outside 127.0.0.0/8 is refused: the twin never listens
on the machine's real interfaces. Ports below ``net.ipv4.ip_unprivileged_port_start`` (1024 by
default: 53, 80, 443...) need root or CAP_NET_BIND_SERVICE; a bind that fails is logged once and
retried at the next sync, the rest of the lab carries on.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from labsim.kube.controllers.workqueue import Controller

log = logging.getLogger("labsim.net.listeners")

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
Address = tuple[str, str, int]  # (protocol "TCP" | "UDP", IPv4 address, port)


class Listener(Protocol):
    def close(self, *, connections: bool = False) -> None: ...


# What opens one listener for an address (an asyncio Server or a datagram transport).
Opener = Callable[[Address], Awaitable[Listener]]


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.IPv4Address(ip) in LOOPBACK
    except ValueError:
        return False


class Listeners:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._open: dict[Address, Listener] = {}
        self._failed: dict[Address, str] = {}

    @property
    def addresses(self) -> set[Address]:
        return set(self._open)

    async def sync(self, wanted: set[Address], opener: Opener) -> None:
        """Close what is no longer wanted, open what is new."""
        for address in [a for a in self._open if a not in wanted]:
            self._open.pop(address).close()
        self._failed = {a: e for a, e in self._failed.items() if a in wanted}
        for address in sorted(wanted - self._open.keys()):
            if not is_loopback(address[1]):
                self._warn(address, "not a loopback address; the embedded lab binds 127.0.0.0/8 only")
                continue
            try:
                self._open[address] = await opener(address)
                self._failed.pop(address, None)
            except OSError as e:
                self._warn(address, e.strerror or str(e))

    def close(self) -> None:
        """Close every listening socket and the connections it accepted."""
        listeners, self._open = list(self._open.values()), {}
        for listener in listeners:
            listener.close(connections=True)

    def _warn(self, address: Address, why: str) -> None:
        if self._failed.get(address) != why:
            log.warning("%s: cannot listen on %s %s:%d: %s", self.owner, *address, why)
        self._failed[address] = why


class ListeningController(Controller):
    """A controller whose listeners close when it stops (the lab, or k3s, going down)."""

    listeners: Listeners

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            self.listeners.close()
