"""What PVE has: the node's capacity, the cluster's VMs with their configs, recent tasks, and
the parsing of PVE's config strings (boot disk, disk size, memory)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from labkit.errors import ProxmoxError
from labkit.params import Lab
from labkit.proxmox.api import Api, call

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class Capacity:
    """What the PVE node has: CPUs, memory, and the lab's storage."""

    node: str
    cpus: int
    memory_total: int
    memory_used: int
    storage: str
    storage_total: int
    storage_avail: int
    committed_memory: int  # sum of the memory configured for existing VMs (not templates)
    committed_cpus: int  # sum of the vCPUs configured for existing VMs

    def table(self) -> pd.DataFrame:
        """Totals, what is in use now, and what existing VMs are configured to take."""
        gib = lambda b: round(b / GIB, 1)  # noqa: E731
        storage_used = self.storage_total - self.storage_avail
        return pd.DataFrame([
            {"resource": "CPU (cores)", "total": self.cpus, "in use": None, "allocated to VMs": self.committed_cpus},
            {"resource": "memory (GiB)", "total": gib(self.memory_total), "in use": gib(self.memory_used),
             "allocated to VMs": gib(self.committed_memory)},
            {"resource": f"storage {self.storage} (GiB)", "total": gib(self.storage_total),
             "in use": gib(storage_used), "allocated to VMs": gib(storage_used)},
        ]).astype({"in use": "object"}).fillna("")


@dataclass(frozen=True)
class Vm:
    """A VM as PVE reports it, with its current config."""

    vmid: int
    name: str
    node: str
    status: str
    template: bool
    config: dict[str, Any]
    uptime: int = 0

    @property
    def lock(self) -> str | None:
        return self.config.get("lock")


def capacity(api: Api, lab: Lab) -> Capacity:
    node, storage = lab.proxmox.node, lab.proxmox.storage
    status = call(f"status of node {node}", lambda: api.nodes(node).status.get())
    store = call(f"storage {storage} on {node}", lambda: api.nodes(node).storage(storage).status.get())
    vms = call("VM list", lambda: api.cluster.resources.get(type="vm"))
    guests = [v for v in vms if not v.get("template") and v.get("node") == node]
    return Capacity(node=node, cpus=int(status["cpuinfo"]["cpus"]), memory_total=int(status["memory"]["total"]),
                    memory_used=int(status["memory"]["used"]), storage=storage,
                    storage_total=int(store["total"]), storage_avail=int(store["avail"]),
                    committed_memory=sum(int(v.get("maxmem", 0)) for v in guests),
                    committed_cpus=sum(int(v.get("maxcpu", 0)) for v in guests))


def list_vms(api: Api) -> list[Vm]:
    """Every VM and template of the cluster, with its config."""
    vms = []
    for row in call("VM list", lambda: api.cluster.resources.get(type="vm")):
        if row.get("type") != "qemu":
            continue
        vmid, node = int(row["vmid"]), row["node"]
        config = call(f"config of VM {vmid}", lambda n=node, v=vmid: api.nodes(n).qemu(v).config.get())
        vms.append(Vm(vmid, str(row.get("name", "")), node, str(row.get("status", "")), bool(row.get("template")),
                      config, int(row.get("uptime", 0) or 0)))
    return vms



def boot_disk(config: dict[str, Any]) -> str:
    """The VM's boot disk (``scsi0`` on a cloud image template), from its boot order."""
    order = re.search(r"order=([^,]+)", str(config.get("boot", "")))
    candidates = order.group(1).split(";") if order else []
    candidates += ["scsi0", "virtio0", "sata0", "ide0"]
    for key in candidates:
        value = str(config.get(key, ""))
        if value and "media=cdrom" not in value and "cloudinit" not in value:
            return key
    raise ProxmoxError(f"no boot disk in VM config (boot={config.get('boot')!r}); is the template a cloud image?")


def disk_bytes(spec: str) -> int:
    """Size of a drive from its config string (``local-lvm:vm-120-disk-0,size=32G``)."""
    match = re.search(r"size=(\d+(?:\.\d+)?)([KMGT]?)", spec)
    if not match:
        return 0
    return int(float(match.group(1)) * 1024 ** " KMGT".index(match.group(2) or " "))


def memory_mib(value: Any) -> int:
    """PVE 8+ types ``memory`` as a property string (``4096`` or ``current=4096``)."""
    match = re.search(r"(\d+)", str(value or ""))
    return int(match.group(1)) if match else 0


def vm_table(api: Api, lab: Lab) -> pd.DataFrame:
    """The lab's VMs as PVE sees them now."""
    wanted = {n.vmid: n for n in lab.nodes}
    rows = []
    for vm in list_vms(api):
        if vm.vmid not in wanted:
            continue
        disk = boot_disk(vm.config)
        ip = re.search(r"ip=([\d.]+)", str(vm.config.get("ipconfig0", "")))
        rows.append({"vmid": vm.vmid, "name": vm.name, "node": vm.node, "cores": int(vm.config.get("cores", 1)),
                     "memory_mib": memory_mib(vm.config.get("memory")),
                     "disk_gib": round(disk_bytes(str(vm.config.get(disk, ""))) / GIB, 1),
                     "ip": ip.group(1) if ip else "", "status": vm.status, "uptime_s": vm.uptime,
                     "tags": str(vm.config.get("tags", ""))})
    columns = ["vmid", "name", "node", "cores", "memory_mib", "disk_gib", "ip", "status", "uptime_s", "tags"]
    return pd.DataFrame(rows, columns=columns).sort_values("vmid").reset_index(drop=True)


def task_ids(api: Api, lab: Lab) -> set[str]:
    """UPIDs of the PVE node's recent tasks: compare two sets to see what really ran in between."""
    rows = call("task list", lambda: api.nodes(lab.proxmox.node).tasks.get(limit=1000))
    return {str(t["upid"]) for t in rows}
