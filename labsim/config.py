"""What labsim reads from a lab file.

labsim never imports labkit, so it reads the few fields it needs from the YAML itself; labkit
validates the whole file. Relative paths resolve against the lab file's folder.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml

from labsim.net.cidrs import SIM_CLUSTER_CIDR, SIM_SERVICE_CIDR

DEFAULT_TIME_SCALE = 0.02


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class SimConfig:
    name: str
    state_dir: Path
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
    # The pod and service networks the twin's k3s uses when config.yaml sets none (lab file k3s.*).
    cluster_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network(SIM_CLUSTER_CIDR)
    service_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network(SIM_SERVICE_CIDR)

    @classmethod
    def from_file(cls, path: Path, state_dir: Path | None = None) -> SimConfig:
        doc = yaml.safe_load(path.read_text()) or {}
        base = path.resolve().parent
        emb, pve, ssh, net = (doc.get(k) or {} for k in ("embedded", "proxmox", "ssh", "network"))
        k3s = doc.get("k3s") or {}
        config = cls(
            name=str(doc.get("name", "sim")),
            state_dir=(state_dir or base / emb.get("state_dir", ".labsim")).resolve(),
            time_scale=float(emb.get("time_scale", DEFAULT_TIME_SCALE)),
            pve_host=str(pve.get("host", "127.0.0.1")),
            pve_port=int(pve.get("port", 8006)),
            pve_node=str(pve.get("node", "pve")),
            token_id=str(pve.get("token_id", "root@pam!labkit")),
            template_vmid=int(pve.get("template_vmid", 9000)),
            storage=str(pve.get("storage", "local-lvm")),
            bridge=str(pve.get("bridge", "vmbr0")),
            ssh_user=str(ssh.get("user", "ubuntu")),
            ssh_port=int(ssh.get("port", 2222)),
            subnet=ipaddress.IPv4Network(str(net.get("subnet", "127.0.2.0/24"))),
            cluster_cidr=ipaddress.IPv4Network(str(k3s.get("cluster_cidr", SIM_CLUSTER_CIDR))),
            service_cidr=ipaddress.IPv4Network(str(k3s.get("service_cidr", SIM_SERVICE_CIDR))),
        )
        config.check_loopback()
        return config

    def check_loopback(self) -> None:
        """The embedded lab binds loopback addresses only: refuse anything else."""
        loopback = ipaddress.IPv4Network("127.0.0.0/8")
        if not ipaddress.IPv4Address(self.pve_host).is_loopback:
            raise ConfigError(f"proxmox.host: {self.pve_host} is not a loopback address; labsim binds 127.0.0.0/8 only")
        if not self.subnet.subnet_of(loopback):
            raise ConfigError(f"network.subnet: {self.subnet} is not inside 127.0.0.0/8; labsim binds loopback only")
        for field in ("cluster_cidr", "service_cidr"):
            if not getattr(self, field).subnet_of(loopback):
                raise ConfigError(f"k3s.{field}: {getattr(self, field)} is not inside 127.0.0.0/8; labsim binds "
                                  "loopback only (e.g. 127.42.0.0/16 and 127.43.0.0/16)")
