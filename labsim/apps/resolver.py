"""Host names as an app model's pod resolves them: the container's /etc/hosts, then the cluster
DNS named by its /etc/resolv.conf (nameserver, search list, ndots), asked over the wire. App
models run in the container's root folder, so both files are ``./etc/...``."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver


class NoSuchHost(Exception):
    """The name does not resolve (the message is getaddrinfo's wording, as Node.js reports it)."""


async def resolve(name: str, root: Path = Path()) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    for line in _read(root / "etc" / "hosts").splitlines():
        fields = line.split("#", 1)[0].split()
        if name in fields[1:]:
            return fields[0]
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.lifetime = 5.0
    for line in _read(root / "etc" / "resolv.conf").splitlines():
        fields = line.split()
        if fields[:1] == ["nameserver"] and len(fields) > 1:
            resolver.nameservers = [*resolver.nameservers, fields[1]]
        elif fields[:1] == ["search"]:
            resolver.search = [dns.name.from_text(domain) for domain in fields[1:]]
        elif fields[:1] == ["options"]:
            resolver.ndots = next((int(o[6:]) for o in fields[1:] if o.startswith("ndots:")), resolver.ndots)
    try:
        answer = await resolver.resolve(name, "A", search=True)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers, dns.exception.Timeout):
        raise NoSuchHost(f"getaddrinfo ENOTFOUND {name}") from None
    return str(answer[0])


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
