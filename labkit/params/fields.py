"""Field types of the lab file: addresses, names, secret references, and the strict base of every section."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from labkit import secrets

IPv4 = ipaddress.IPv4Address
EXCERPT = 60  # characters of an offending value a message quotes


def excerpt(value: Any) -> str:
    """A value as a message quotes it: short, and a mapping or a list named, never printed whole
    (a huge or nested value would flood the terminal, or hold a secret)."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    text = repr(value if isinstance(value, bool | int | float | None) else str(value))
    return text if len(text) <= EXCERPT else f"{text[:EXCERPT - 4]}...{text[-1]}"


def parse_ipv4(value: Any) -> IPv4:
    try:
        return IPv4(str(value))
    except ValueError:
        raise ValueError(f"{excerpt(value)} is not an IPv4 address") from None


def parse_subnet(value: Any) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError:
        raise ValueError(f"{excerpt(value)} is not an IPv4 subnet like 192.168.2.0/24 (host bits zero)") from None


DNS_NAME = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)


def parse_host(value: Any) -> str:
    """An IPv4 address or a DNS name (a name's last label is not all digits: 192.168.2.300 is neither)."""
    if isinstance(value, str):
        try:
            return str(IPv4(value))
        except ValueError:
            if DNS_NAME.fullmatch(value) and not value.rsplit(".", 1)[-1].isdigit() and len(value) <= 253:
                return value
    raise ValueError(f"{excerpt(value)} is not an IPv4 address or a DNS name")


def secret_reference(value: Any) -> secrets.SecretRef:
    # The message must never contain the value: it may be a secret pasted by mistake.
    if not isinstance(value, str) or not secrets.is_reference(value):
        raise ValueError("must be a secret reference (env:NAME or file:PATH#key), not a value; "
                         "move the secret out of the lab file")
    return secrets.parse(value)


def no_secret_after_equals(value: Any) -> Any:
    # PVE shows a new token as `user@realm!name=SECRET`: pasted whole, the secret must not be echoed.
    if isinstance(value, str) and "=" in value:
        raise ValueError("holds '=' and what follows it, as PVE's `user@realm!name=SECRET` does: give the id "
                         "only (like root@pam!labkit) and the secret as a reference in proxmox.token_secret")
    return value


def matching(regex: str, hint: str):
    compiled = re.compile(regex)

    def check(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"{excerpt(value)} {hint}")
        return value

    return check


Address = Annotated[IPv4, BeforeValidator(parse_ipv4)]
Subnet = Annotated[ipaddress.IPv4Network, BeforeValidator(parse_subnet)]
SecretField = Annotated[secrets.SecretRef, BeforeValidator(secret_reference)]
Host = Annotated[str, BeforeValidator(parse_host)]
PathField = Annotated[Path, BeforeValidator(lambda v: Path(str(v)).expanduser())]
Hostname = Annotated[str, AfterValidator(matching(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", "is not a valid host name: lowercase letters, digits and '-', at most 63"))]
DomainName = Annotated[str, AfterValidator(matching(
    r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
    "is not a valid DNS name: dot-separated labels of lowercase letters, digits and '-'"))]
VmId = Annotated[int, Field(ge=100, le=999_999_999)]
Port = Annotated[int, Field(ge=1, le=65535)]
EMBEDDED_SSH_PORT = 2222
EMBEDDED_K3S_CIDRS = {"cluster_cidr": "127.42.0.0/16", "service_cidr": "127.43.0.0/16"}
K3S_COMPONENTS = ("coredns", "servicelb", "traefik", "local-storage", "metrics-server", "runtimes")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # strict: `cores: true` is no 1


def pinned_version(value: Any) -> str:
    text = str(value) if isinstance(value, str | int | float) else ""
    if not re.fullmatch(r"v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?", text):
        raise ValueError(f"{value!r} is not a pinned chart version: give an exact version like 1.19.1 "
                         "(no ranges, no 'latest'), so a re-run installs the same chart")
    return text


def pinned_image(value: Any) -> str:
    # A tag that names a release (not latest, not absent) or a digest: a re-run pulls the same image.
    match = re.fullmatch(r"[a-z0-9][a-z0-9._/-]*(:(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(@sha256:[0-9a-f]{64})?",
                         value if isinstance(value, str) else "")
    if match is None:
        raise ValueError(f"{excerpt(value)} is not an image reference like ollama/ollama:0.12.6")
    if "@sha256:" not in value and match["tag"] in (None, "latest"):
        raise ValueError(f"{excerpt(value)} is not pinned: give the image's release tag, like "
                         f"{value.split(':')[0]}:1.2.3 (':latest' or no tag pulls whatever is newest)")
    return value


ObjectName = Annotated[str, AfterValidator(matching(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", "is not a Kubernetes name: lowercase letters, digits and '-', at most 63"))]
