"""A VM as PVE keeps it: a config of typed values (``cores`` is an int, ``memory`` a string as
in PVE 9's schema), a lock, snapshots, pending changes, and its run state.

Also what PVE derives from a config: drives and their sizes, the cloud-init view of the guest.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote

from labsim.pve import params as p
from labsim.pve.errors import PVEError

DISK_KEYS = re.compile(r"^(ide|sata|scsi|virtio)\d+$")
NIC_KEYS = re.compile(r"^net\d+$")
IPCONFIG_KEYS = re.compile(r"^ipconfig\d+$")
# Changes to a running VM that PVE cannot hotplug with its default hotplug set stay pending.
NOT_HOTPLUGGED = {"cores", "sockets", "memory", "cpu", "agent", "balloon", "numa", "scsihw", "bios"}
# Options settable on a VM (POST/PUT config, create), after PVE 9.2's qemu config schema.
CONFIG_PARAMS: dict[str, p.Param] = {
    "name": p.string("dns-name"),
    "description": p.string(max_length=8192),
    "tags": p.string("pve-tag-list"),
    "cores": p.integer(1),
    "sockets": p.integer(1),
    "memory": p.string(pattern=r"(current=)?\d+"),
    "balloon": p.integer(0),
    "cpu": p.string(),
    "numa": p.boolean(),
    "agent": p.string(pattern=r"(enabled=)?[01](,[a-z_-]+=[a-z0-9]+)*"),
    "ostype": p.string(enum=("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10",
                             "win11", "l24", "l26", "solaris")),
    "onboot": p.boolean(),
    "protection": p.boolean(),
    "template": p.boolean(),
    "boot": p.string(),
    "scsihw": p.string(enum=("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas", "pvscsi")),
    "serial0": p.string(),
    "vga": p.string(),
    "ciuser": p.string(),
    "cipassword": p.string(),
    "citype": p.string(enum=("configdrive2", "nocloud", "opennebula")),
    "ciupgrade": p.boolean(),
    "sshkeys": p.string("urlencoded"),
    "nameserver": p.string("address-list"),
    "searchdomain": p.string(),
    **{f"ipconfig{n}": p.string("pve-qm-ipconfig") for n in range(32)},
    **{f"net{n}": p.string() for n in range(32)},
    **{f"scsi{n}": p.string() for n in range(31)},
    **{f"virtio{n}": p.string() for n in range(16)},
    **{f"ide{n}": p.string() for n in range(4)},
    **{f"sata{n}": p.string() for n in range(6)},
}
CONFIG_UPDATE_PARAMS: dict[str, p.Param] = {
    **CONFIG_PARAMS,
    "delete": p.string("pve-configid-list"),
    "revert": p.string("pve-configid-list"),
    "digest": p.string(max_length=40),
    "skiplock": p.boolean(),
}
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass
class VM:
    vmid: int
    config: dict[str, Any]
    status: str = "stopped"  # "stopped" | "running"
    pending: dict[str, Any] = field(default_factory=dict)
    pending_delete: list[str] = field(default_factory=list)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    started_at: float | None = None  # lab time the VM was started (uptime)
    booted: bool = False  # the guest OS finished booting (cloud-init done, sshd up)

    @property
    def name(self) -> str:
        return self.config.get("name", f"VM {self.vmid}")

    @property
    def lock(self) -> str | None:
        return self.config.get("lock")

    @property
    def is_template(self) -> bool:
        return bool(self.config.get("template"))

    @property
    def memory_mib(self) -> int:
        return int(str(self.config.get("memory", "512")).removeprefix("current="))

    @property
    def cpus(self) -> int:
        return int(self.config.get("cores", 1)) * int(self.config.get("sockets", 1))

    @property
    def agent_enabled(self) -> bool:
        value = str(self.config.get("agent", "0"))
        return value.removeprefix("enabled=").split(",")[0] == "1"

    def digest(self) -> str:
        return hashlib.sha1(json.dumps(self.config, sort_keys=True).encode()).hexdigest()

    def disks(self) -> dict[str, Drive]:
        """The VM's hard disks (not CD-ROMs such as the cloud-init drive)."""
        drives = (Drive.parse(key, value) for key, value in self.config.items() if DISK_KEYS.match(key))
        return {d.key: d for d in drives if not d.is_cdrom}

    def disk_bytes(self) -> int:
        return sum(d.size for d in self.disks().values())

    def check_unlocked(self, skiplock: bool = False) -> None:
        if self.lock and not skiplock:
            raise PVEError(500, f"VM {self.vmid} is locked ({self.lock})")

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, doc: dict[str, Any]) -> VM:
        doc = {k: val for k, val in doc.items() if k != "agent_up"}  # saved by earlier labs; now derived
        return cls(**doc)


@dataclass(frozen=True)
class Drive:
    key: str
    volid: str
    options: dict[str, str]

    @classmethod
    def parse(cls, key: str, value: str) -> Drive:
        volid, *rest = value.split(",")
        return cls(key, volid, dict(opt.partition("=")[::2] for opt in rest))

    @property
    def storage(self) -> str:
        return self.volid.split(":", 1)[0]

    @property
    def volume(self) -> str:
        return self.volid.split(":", 1)[-1].rsplit("/", 1)[-1]

    @property
    def is_cdrom(self) -> bool:
        return self.options.get("media") == "cdrom"

    @property
    def size(self) -> int:
        return parse_size(self.options.get("size", "0"))

    def with_options(self, **options: str) -> str:
        merged = {**self.options, **options}
        return ",".join([self.volid, *(f"{k}={v}" for k, v in merged.items())])


def parse_size(text: str) -> int:
    """``32G``, ``2252M``, ``+10G`` (the sign is the caller's business) in bytes."""
    match = re.fullmatch(r"\+?(\d+(?:\.\d+)?)([KMGT]?)", text)
    if not match:
        raise ValueError(f"invalid size '{text}'")
    return int(float(match.group(1)) * _UNITS.get(match.group(2), 1))


def format_size(size: int) -> str:
    """As PVE writes sizes into configs: the largest unit that divides the size exactly."""
    for unit in "TGMK":
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def new_mac() -> str:
    return "BC:24:11:" + ":".join(f"{b:02X}" for b in secrets.token_bytes(3))


def template_config(name: str, storage: str, bridge: str, vmid: int) -> dict[str, Any]:
    """An Ubuntu 22.04 cloud image imported as a template, as the usual PVE recipe leaves it."""
    return {
        "name": name,
        "template": 1,
        "ostype": "l26",
        "cores": 2,
        "sockets": 1,
        "memory": "2048",
        "cpu": "x86-64-v2-AES",
        "scsihw": "virtio-scsi-pci",
        "scsi0": f"{storage}:base-{vmid}-disk-0,size=2252M",
        "ide2": f"{storage}:vm-{vmid}-cloudinit,media=cdrom",
        "boot": "order=scsi0",
        "serial0": "socket",
        "vga": "serial0",
        "agent": "1",
        "net0": f"virtio={new_mac()},bridge={bridge}",
        "smbios1": f"uuid={uuid.uuid4()}",
        "vmgenid": str(uuid.uuid4()),
        "meta": "creation-qemu=9.2.0,ctime=1735689600",
        "description": "Ubuntu 22.04 LTS (jammy) cloud image with cloud-init and qemu-guest-agent",
    }


@dataclass(frozen=True)
class GuestNetwork:
    """What cloud-init configures in the guest from the VM's config."""

    hostname: str
    user: str
    authorized_keys: list[str]
    ip: str | None
    prefix: int | None
    gateway: str | None
    nameservers: list[str]
    searchdomain: str | None
    mac: str | None


def guest_network(vm: VM, host_dns: list[str], host_search: str | None) -> GuestNetwork:
    config = vm.config
    ipconf = dict(part.partition("=")[::2] for part in str(config.get("ipconfig0", "")).split(",") if part)
    ip = prefix = None
    if ipconf.get("ip") not in (None, "dhcp"):
        iface = ipaddress.IPv4Interface(ipconf["ip"])
        ip, prefix = str(iface.ip), iface.network.prefixlen
    nic = str(config.get("net0", ""))
    mac = nic.split(",")[0].partition("=")[2] or None
    return GuestNetwork(
        hostname=vm.name,
        user=str(config.get("ciuser", "ubuntu")),
        authorized_keys=decode_sshkeys(config.get("sshkeys", "")),
        ip=ip,
        prefix=prefix,
        gateway=ipconf.get("gw"),
        # As PVE: without nameserver/searchdomain, the host's settings go to the guest.
        nameservers=str(config["nameserver"]).split() if "nameserver" in config else host_dns,
        searchdomain=config.get("searchdomain", host_search),
        mac=mac,
    )


def decode_sshkeys(value: str) -> list[str]:
    return [line.strip() for line in unquote(value).splitlines() if line.strip()]
