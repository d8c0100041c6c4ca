"""What labsim reads from a lab file.

labsim never imports labkit, so it reads the few fields it needs from the YAML itself; labkit
validates the whole file. Relative paths resolve against the lab file's folder.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_TIME_SCALE = 0.02
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


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
    # The lab's address ranges, the only ones a node's network reaches (labsim.node.network).
    networks: tuple[ipaddress.IPv4Network, ...] = ()

    @classmethod
    def from_file(cls, path: Path, state_dir: Path | None = None) -> SimConfig:
        doc = yaml.safe_load(path.read_text()) or {}
        base = path.resolve().parent
        emb, pve, ssh, net = (doc.get(k) or {} for k in ("embedded", "proxmox", "ssh", "network"))
        subnet = ipaddress.IPv4Network(str(net.get("subnet", "127.0.2.0/24")))
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
            subnet=subnet,
            networks=(subnet, *lab_ranges(doc)),
        )
        config.check_loopback()
        return config

    def check_loopback(self) -> None:
        """The embedded lab binds loopback addresses only: refuse anything else."""
        if not ipaddress.IPv4Address(self.pve_host).is_loopback:
            raise ConfigError(f"proxmox.host: {self.pve_host} is not a loopback address; labsim binds 127.0.0.0/8 only")
        if not self.subnet.subnet_of(LOOPBACK):
            raise ConfigError(f"network.subnet: {self.subnet} is not inside 127.0.0.0/8; labsim binds loopback only")


def lab_ranges(doc: dict) -> list[ipaddress.IPv4Network]:
    """The MetalLB pool (``A-B`` or a CIDR) and k3s' pod and service CIDRs, when the lab file
    gives them, as far as they lie in 127.0.0.0/8 (a range beyond would open the host's network)."""
    k3s = doc.get("k3s") or {}
    texts = [(doc.get("metallb") or {}).get("addresses"), k3s.get("cluster_cidr"), k3s.get("service_cidr")]
    networks: list[ipaddress.IPv4Network] = []
    for text in filter(None, texts):
        try:
            networks.extend(_networks(str(text)))
        except ValueError:
            continue  # labkit reports a malformed range; it only narrows what nodes reach
    return [network for network in networks if network.subnet_of(LOOPBACK)]


def _networks(text: str) -> list[ipaddress.IPv4Network]:
    if "-" in text:
        first, last = (ipaddress.IPv4Address(part.strip()) for part in text.split("-", 1))
        return list(ipaddress.summarize_address_range(first, last))
    return [ipaddress.IPv4Network(text.strip(), strict=False)]
