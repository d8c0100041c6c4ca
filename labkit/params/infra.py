"""The lab file's core infrastructure (notebook 03): metallb, nfs, tls, ingress, charts."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from labkit.params.fields import (
    DomainName,
    Host,
    IPv4,
    ObjectName,
    PathField,
    Port,
    SecretField,
    Section,
    matching,
    parse_ipv4,
    parse_subnet,
    pinned_version,
)


def _address_range(text: str) -> tuple[IPv4, IPv4]:
    """First and last address of ``A-B`` or a CIDR."""
    text = text.strip()
    if "-" in text:
        first, last = (parse_ipv4(part.strip()) for part in text.split("-", 1))
    else:
        net = parse_subnet(text)
        first, last = net.network_address, net.broadcast_address
    if first > last:
        raise ValueError(f"{first} comes after {last}; write FIRST-LAST")
    return first, last


AddressRange = Annotated[str, AfterValidator(lambda v: (_address_range(v), v)[1])]
class Pool(Section):
    """A further MetalLB IPAddressPool (``auto_assign: false``: only for Services that ask for it)."""

    name: ObjectName
    addresses: Annotated[list[AddressRange], Field(min_length=1)]
    auto_assign: bool = True


class MetalLB(Section):
    addresses: AddressRange  # the pool named ``default``, from which Services get addresses
    pools: list[Pool] = []
    l2_advertisement: bool = True  # announce every pool over ARP (MetalLB's L2 mode)

    @cached_property
    def pool(self) -> tuple[IPv4, IPv4]:
        """First and last address of the default pool."""
        return _address_range(self.addresses)

    def pool_ranges(self) -> dict[str, list[tuple[IPv4, IPv4]]]:
        """Pool name -> its ranges (first, last)."""
        return {"default": [self.pool]} | {p.name: [_address_range(t) for t in p.addresses] for p in self.pools}

    def ranges(self) -> list[tuple[str, IPv4, IPv4]]:
        """Every range of every pool, with its YAML path."""
        found = [("metallb.addresses", *self.pool)]
        for i, pool in enumerate(self.pools):
            found += [(f"metallb.pools[{i}].addresses[{j}]", *_address_range(text))
                      for j, text in enumerate(pool.addresses)]
        return found


class Nfs(Section):
    server: Host
    path: Annotated[str, AfterValidator(matching(r"/\S*", "is not an absolute export path like /volume1/k8s-data"))]
    storage_class: ObjectName = "nfs-client"
    default_class: bool = True  # the cluster's default StorageClass (k3s' local-path is then disabled as default)
    reclaim_policy: Literal["Delete", "Retain"] = "Delete"
    archive_on_delete: bool = True  # a released volume's folder is renamed archived-..., not deleted
    mount_options: list[str] = ["nfsvers=4.1"]
    # The NAS over SSH (a Synology with SSH on), to look at the export from its side; the operator's
    # key (ssh.private_key) must be authorized for this user. Unset: ssh.user and ssh.port.
    ssh_user: Annotated[str, AfterValidator(matching(r"[a-z_][a-z0-9_-]{0,31}", "is not a user name"))] | None = None
    ssh_port: Port | None = None


class Dns01(Section):
    provider: Literal["cloudflare"] = "cloudflare"
    api_token: SecretField  # a Cloudflare API token with Zone:DNS:Edit on the domain's zone


class Http01(Section):
    ingress_class: ObjectName = "traefik"


class Solver(Section):
    dns01: Dns01 | None = None
    http01: Http01 | None = None

    @model_validator(mode="after")
    def _one(self) -> Solver:
        if (self.dns01 is None) == (self.http01 is None):
            raise ValueError("give exactly one of dns01 (Cloudflare API token reference) or http01")
        return self


class Issuer(Section):
    name: ObjectName
    server: Annotated[str, AfterValidator(matching(r"https://\S+", "is not an ACME directory URL (https://...)"))]
    # For a test CA (Pebble, LE staging), PEM files; unset: the system's trust store (LE production).
    ca_file: PathField | None = None  # the roots of the certificates it issues: what HTTPS probes trust
    server_ca_file: PathField | None = None  # what the ACME server's own HTTPS is trusted with (caBundle)


LETSENCRYPT = {"letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
               "letsencrypt-prod": "https://acme-v02.api.letsencrypt.org/directory"}


class Tls(Section):
    email: Annotated[str, AfterValidator(matching(r"[^@\s]+@[^@\s]+\.[^@\s]+", "is not an e-mail address"))]
    issuers: Annotated[list[Issuer], Field(min_length=1)] = [Issuer(name=n, server=u) for n, u in LETSENCRYPT.items()]
    solver: Solver


class Ingress(Section):
    domain: DomainName
    issuer: str = "letsencrypt-prod"
    redirect_https: bool = True  # Traefik redirects HTTP to HTTPS on its web entry point
    dashboard: bool = False  # Traefik's dashboard stays off unless asked for
    access_logs: bool = True


class ChartSource(Section):
    """A Helm chart the lab installs (through k3s' HelmChart): the key is the chart's name."""

    repo: Annotated[str, AfterValidator(matching(r"(https|oci)://\S+", "is not a chart repository URL (https:// or oci://)"))]
    version: Annotated[str, BeforeValidator(pinned_version)]
    namespace: ObjectName
    values: PathField | None = None  # a values file, relative to the lab file (parameters/values/<chart>.yaml)


ChartKey = Annotated[str, AfterValidator(matching(
    r"[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?", "is not a chart name: lowercase letters, digits and '-'"))]
