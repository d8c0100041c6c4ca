"""What an app model running as a pod's process needs of the cluster, as a real pod gets it: the
Kubernetes API through its ServiceAccount (``KUBERNETES_SERVICE_HOST`` and the token and CA
mounted at /var/run/secrets/kubernetes.io/serviceaccount), and names resolved by the cluster DNS
(the nameserver and search domains of the container's /etc/resolv.conf: this machine's resolver
knows no Service names). Paths are relative: the process runs in the container's root folder."""

from __future__ import annotations

import json
import os
import ssl
import urllib.parse
import urllib.request
from pathlib import Path

import dns.exception
import dns.resolver

SA_DIR = Path("var/run/secrets/kubernetes.io/serviceaccount")


def api_get(path: str, timeout: float = 10) -> dict:
    """GET an API path (``/api/v1/configmaps?labelSelector=…``) as the pod's ServiceAccount."""
    return json.loads(api_text(path, timeout))


def api_text(path: str, timeout: float = 10) -> str:
    """The body of a GET of an API path (e.g. a pods/log) as the pod's ServiceAccount."""
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    context = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))  # its certificate names the ClusterIP
    request = urllib.request.Request(f"https://{host}:{port}{path}",
                                     headers={"Authorization": f"Bearer {(SA_DIR / 'token').read_text().strip()}"})
    with urllib.request.urlopen(request, timeout=timeout, context=context) as reply:
        return reply.read().decode(errors="replace")


def resolve_url(url: str) -> str:
    """``url`` with its host name replaced by the address the cluster DNS gives it."""
    parts = urllib.parse.urlsplit(url)
    address = resolve(parts.hostname or "")
    netloc = address + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def resolve(host: str) -> str:
    """The IPv4 address of ``host`` through the container's resolv.conf (search domains tried as
    ndots:5 says), or ``host`` itself when it is an address or nothing answers."""
    if not host or host.replace(".", "").isdigit():
        return host
    nameservers, search = _resolv_conf()
    if not nameservers:
        return host
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.lifetime = nameservers, 3
    names = [f"{host}.{domain}" for domain in search] + [host] if host.count(".") < 5 else [host]
    for name in names:
        try:
            return resolver.resolve(name.rstrip(".") + ".", "A")[0].address
        except dns.exception.DNSException:
            continue
    return host


def _resolv_conf() -> tuple[list[str], list[str]]:
    try:
        text = Path("etc/resolv.conf").read_text()
    except OSError:
        return [], []
    nameservers, search = [], []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"]:
            nameservers += words[1:2]
        elif words[:1] == ["search"]:
            search = words[1:]
    return nameservers, search
