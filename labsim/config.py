"""labsim's configuration: a small JSON file, ``config.json`` in the lab's state folder.

labsim does not read the lab file: labkit validates it (the one contract, labkit.params) and
writes this file from the validated lab before it starts labsim (labkit.embedded). Every field is
required and none has a default here, so labsim cannot disagree with the lab file's defaults;
adding a setting is one field below (and one line where labkit writes it).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class SimConfig:
    state_dir: Path  # where config.json lives; not in the file
    name: str
    time_scale: float
    pve_host: str
    pve_port: int
    pve_node: str
    token_id: str
    template_vmid: int
    storage: str
    bridge: str
    ssh_user: str
    ssh_port: int
    subnet: ipaddress.IPv4Network
    cluster_cidr: ipaddress.IPv4Network  # the pod network the twin's k3s uses when config.yaml sets none
    service_cidr: ipaddress.IPv4Network
    metallb_pool: str  # FIRST-LAST, the lab file's metallb.addresses
    nfs_server: str  # the NAS (lab file nfs.server): SSH and NFS on this loopback address
    nfs_path: str  # its export (nfs.path), a folder of the NAS's files
    operator_key_file: str  # the operator's public key (ssh.public_key): the NAS accepts it over SSH
    acme_servers: list[str]  # the ACME directory URLs of tls.issuers: Pebble serves those on loopback
    ntfy_server: str  # observability.ntfy.server ("" without that section): the ntfy model serves it on loopback

    @classmethod
    def load(cls, state_dir: Path) -> SimConfig:
        """The configuration labkit wrote into ``state_dir``."""
        state_dir = Path(state_dir).resolve()
        path = state_dir / CONFIG_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file; labkit writes it when it starts the embedded lab "
                              "(`labkit run --params LAB_FILE`): run that once, or name the state folder "
                              "of a lab it started with --state") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None
        return cls.from_dict(doc, state_dir, source=str(path))

    @classmethod
    def from_dict(cls, doc: dict[str, Any], state_dir: Path, source: str = "config") -> SimConfig:
        names = [f.name for f in fields(cls) if f.name != "state_dir"]
        missing, unknown = [n for n in names if n not in doc], [k for k in doc if k not in names]
        if missing or unknown:
            raise ConfigError(f"{source}: missing {missing or 'nothing'}, unknown {unknown or 'nothing'}; "
                              "it is written by labkit: start the lab with the labkit of this checkout")
        convert = {f.name: CONVERTERS[str(f.type)] for f in fields(cls) if f.name != "state_dir"}
        config = cls(state_dir=Path(state_dir).resolve(), **{n: convert[n](doc[n]) for n in names})
        config.check_loopback()
        return config

    def check_loopback(self) -> None:
        """The embedded lab binds loopback addresses only: refuse anything else."""
        loopback = ipaddress.IPv4Network("127.0.0.0/8")
        if not ipaddress.IPv4Address(self.pve_host).is_loopback:
            raise ConfigError(f"pve_host: {self.pve_host} is not a loopback address; labsim binds 127.0.0.0/8 only")
        if not self.subnet.subnet_of(loopback):
            raise ConfigError(f"subnet: {self.subnet} is not inside 127.0.0.0/8; labsim binds loopback only")
        for field in ("cluster_cidr", "service_cidr"):
            if not getattr(self, field).subnet_of(loopback):
                raise ConfigError(f"{field}: {getattr(self, field)} is not inside 127.0.0.0/8; labsim binds "
                                  "loopback only (e.g. 127.42.0.0/16 and 127.43.0.0/16)")
        if not _is_loopback_ip(self.nfs_server):
            raise ConfigError(f"nfs_server: {self.nfs_server} is not a loopback address; labsim binds 127.0.0.0/8 only")
        if not all(network.subnet_of(loopback) for network in self.metallb_networks):
            raise ConfigError(f"metallb_pool: {self.metallb_pool} is not inside 127.0.0.0/8; labsim binds loopback only")

    @property
    def metallb_networks(self) -> list[ipaddress.IPv4Network]:
        first, last = (ipaddress.IPv4Address(part.strip()) for part in self.metallb_pool.split("-", 1))
        return list(ipaddress.summarize_address_range(first, last))

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network, ...]:
        """The lab's address ranges: the only ones a node's network reaches (labsim.node.network)."""
        return (self.subnet, *self.metallb_networks, self.cluster_cidr, self.service_cidr)


def _is_loopback_ip(text: str) -> bool:
    try:
        return ipaddress.IPv4Address(text).is_loopback
    except ValueError:  # a host name: the embedded lab has no DNS for it
        return False


CONVERTERS = {"str": str, "int": int, "float": float, "ipaddress.IPv4Network": ipaddress.IPv4Network,
              "list[str]": lambda items: [str(item) for item in items]}
