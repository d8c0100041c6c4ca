"""The lab file's machines and k3s (notebooks 01-02): embedded, proxmox, network, nodes, ssh, k3s."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from labkit.params.fields import (
    K3S_COMPONENTS,
    Address,
    DomainName,
    Host,
    Hostname,
    PathField,
    Port,
    SecretField,
    Section,
    Subnet,
    VmId,
    matching,
    no_secret_after_equals,
)


class Embedded(Section):
    state_dir: PathField = Path(".labsim")
    time_scale: Annotated[float, Field(ge=0, le=10)] = 0.02


class Proxmox(Section):
    host: Host
    port: Port = 8006
    node: Hostname
    token_id: Annotated[str, BeforeValidator(no_secret_after_equals), AfterValidator(matching(
        r"[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9._-]*", "is not an API token id like root@pam!labkit (user@realm!name)"))]
    token_secret: SecretField
    ca_file: PathField | None = None
    fingerprint: Annotated[str, AfterValidator(matching(
        r"([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}",
        "is not a SHA-256 fingerprint (32 hex bytes separated by ':', as PVE shows it)"))] | None = None
    template_vmid: VmId = 9000
    # PVE identifiers (its formats pve-storage-id and pve-bridge-id): they end up in API
    # parameters such as net0, where a comma or '=' would splice in options of their own.
    storage: Annotated[str, AfterValidator(matching(
        r"[A-Za-z][A-Za-z0-9_.-]*[A-Za-z0-9]", "is not a PVE storage id like local-lvm"))] = "local-lvm"
    bridge: Annotated[str, AfterValidator(matching(
        r"[A-Za-z][A-Za-z0-9_.-]{0,14}", "is not a Linux bridge name like vmbr0 (at most 15 characters)"))] = "vmbr0"

    @model_validator(mode="after")
    def _one_trust_anchor(self) -> Proxmox:
        if (self.ca_file is None) == (self.fingerprint is None):
            raise ValueError("give exactly one of ca_file (the PVE CA, PEM) or fingerprint "
                             "(SHA-256 of the PVE certificate): TLS verification stays on")
        return self


class Network(Section):
    subnet: Subnet
    gateway: Address
    dns: Annotated[list[Address], Field(min_length=1)]
    search_domain: DomainName


class Node(Section):
    name: Hostname
    role: Literal["server", "agent"]
    vmid: VmId
    ip: Address
    cores: Annotated[int, Field(ge=1, le=64)] = 2
    memory_mib: Annotated[int, Field(ge=512, le=1_048_576)] = 4096
    disk_gib: Annotated[int, Field(ge=4, le=16_384)] = 32
    tags: list[Annotated[str, AfterValidator(matching(
        r"[a-z0-9_][a-z0-9_.+-]*", "is not a Proxmox tag: lowercase letters, digits, '_', '.', '+', '-'"))]] = []


class Ssh(Section):
    user: Annotated[str, AfterValidator(matching(r"[a-z_][a-z0-9_-]{0,31}", "is not a Linux user name"))] = "ubuntu"
    public_key: PathField
    private_key: SecretField
    port: Port = 22
    known_hosts: PathField


class K3s(Section):
    version: Annotated[str, AfterValidator(matching(
        r"v\d+\.\d+\.\d+\+k3s\d+", "is not a k3s version like v1.34.3+k3s1"))]
    token: SecretField
    tls_san: list[Host] = []
    disable: list[Literal[K3S_COMPONENTS]] = []  # type: ignore[valid-type]
    cluster_init: bool = True
    # Pod and service networks (k3s cluster-cidr/service-cidr); unset = k3s' 10.42.0.0/16 and 10.43.0.0/16.
    cluster_cidr: Subnet | None = None
    service_cidr: Subnet | None = None
