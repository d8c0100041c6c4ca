"""Host names as an app model's pod resolves them: the container's /etc/hosts, then the cluster
DNS named by its /etc/resolv.conf (nameserver, search list, ndots), asked over the wire. App
models run in the container's root folder, so both files are ``./etc/...``. The twin's own
programs' pods (labsim.runtime.podnet) read the same files the same way."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver


class NoSuchHost(Exception):
    """The name does not resolve (the message is getaddrinfo's wording, as Node.js reports it)."""


LOOKUP_ERRORS = (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers, dns.exception.Timeout)
DNS_SECONDS = 5.0  # the resolver's whole budget per name (musl/glibc: 5 s timeout)


async def resolve(name: str, root: Path = Path()) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    known = hosts(_read(root / "etc" / "hosts"))
    if name in known:
        return known[name]
    try:
        answer = await dns_resolver(_read(root / "etc" / "resolv.conf")).resolve(name, "A", search=True)
    except LOOKUP_ERRORS:
        raise NoSuchHost(f"getaddrinfo ENOTFOUND {name}") from None
    return str(answer[0])


def hosts(text: str) -> dict[str, str]:
    """An /etc/hosts file's names and their addresses (the first line naming one wins)."""
    names: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            names.setdefault(name, fields[0])
    return names


def dns_resolver(resolv_conf: str) -> dns.asyncresolver.Resolver:
    """A resolver set up as an /etc/resolv.conf says: nameservers, search list, ndots."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.lifetime = DNS_SECONDS
    for line in resolv_conf.splitlines():
        fields = line.split()
        if fields[:1] == ["nameserver"] and len(fields) > 1:
            resolver.nameservers = [*resolver.nameservers, fields[1]]
        elif fields[:1] == ["search"]:
            resolver.search = [dns.name.from_text(domain) for domain in fields[1:]]
        elif fields[:1] == ["options"]:
            resolver.ndots = next((int(o[6:]) for o in fields[1:] if o.startswith("ndots:")), resolver.ndots)
    return resolver


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
