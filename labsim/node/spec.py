"""What a node is, as the hypervisor configured it: the VM's cloud-init and hardware."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NodeSpec:
    vmid: int
    name: str
    ip: str
    user: str
    authorized_keys: list[str]
    cores: int
    memory_mib: int
    disk_bytes: int
    searchdomain: str | None = None
    nameservers: list[str] = field(default_factory=list)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.searchdomain}" if self.searchdomain else self.name
