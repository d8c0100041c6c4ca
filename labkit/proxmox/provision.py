"""Provisioning: the VMs the lab file asks for, compared with those that exist (``plan``), checked
against the host (``check_capacity``), then made so (``apply``): clones one at a time per PVE
node, since parallel clones of one template fight over its lock."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from labkit import cloudinit
from labkit.changes import Change, Drift, Plan, StepTimer, untimed
from labkit.errors import ProxmoxError
from labkit.params import Lab, Node
from labkit.proxmox.api import Api, call, run_task, with_lock_retry
from labkit.proxmox.guests import AgentReport, wait_agent
from labkit.proxmox.inventory import GIB, MIB, Capacity, Vm, boot_disk, disk_bytes, list_vms, memory_mib

# Settings that only take effect when the VM restarts (PVE hot-plugs disk, network and usb by
# default; cloud-init settings are read from the cloud-init drive at boot).
REBOOT_FIELDS = {"cores", "memory", "agent", "ciuser", "sshkeys", "ipconfig0", "nameserver", "searchdomain"}


def desired_config(lab: Lab, node: Node) -> dict[str, Any]:
    """The VM config the lab file asks for (what ``apply`` writes and ``plan`` compares)."""
    public_key = lab.ssh.public_key.read_text().strip()
    return {"cores": node.cores, "memory": node.memory_mib, **cloudinit.settings(lab, node, public_key),
            "agent": "1", "onboot": 1, "tags": ";".join(node.tags)}


def _normalize(key: str, value: Any) -> Any:
    """PVE's stored form of a setting, made comparable with the desired one."""
    text = str(value if value is not None else "")
    if key == "sshkeys":
        return sorted(cloudinit.decode_sshkeys(text))
    if key == "tags":
        return sorted(t for t in re.split(r"[;, ]+", text) if t)
    if key == "agent":
        return "1" if re.match(r"(enabled=)?1", text) else "0"
    if key == "nameserver":
        return text.split()
    if key == "memory":
        return memory_mib(value)
    return text


def config_drift(vm: Vm, want: dict[str, Any], disk_gib: int) -> Drift:
    """Fields whose observed value differs from the desired one: ``{field: (have, want)}``."""
    drift = {key: (vm.config.get(key), value) for key, value in want.items()
             if _normalize(key, vm.config.get(key)) != _normalize(key, value)}
    try:
        disk = boot_disk(vm.config)
    except ProxmoxError:
        state = f"its clone is still running (lock: {vm.lock})" if vm.lock else "a clone was interrupted"
        raise ProxmoxError(f"VM {vm.vmid} ({vm.name}) has no boot disk: {state}. Wait for the task, or "
                           f"destroy the VM in PVE (`qm destroy {vm.vmid}`) and run again.") from None
    size = disk_bytes(str(vm.config.get(disk, "")))
    if size < disk_gib * GIB:
        drift["disk"] = (f"{size / GIB:.1f}G", f"{disk_gib}G")
    return drift


@dataclass(frozen=True)
class VmPlan:
    """What to do with one VM: ``create``, ``start`` (exists, stopped), ``drift``, ``unchanged`` or ``destroy``."""

    name: str
    vmid: int
    action: str
    drift: Drift = field(default_factory=dict)
    running: bool = True

    @property
    def needs_reboot(self) -> bool:
        return bool(REBOOT_FIELDS & set(self.drift))

    def change(self) -> Change:
        if self.action == "drift":
            fields = ", ".join(f"{k}: {_show(k, have)} -> {_show(k, want)}" for k, (have, want) in self.drift.items())
            return Change(f"{self.name} ({self.vmid})", "drift", fields, self.needs_reboot)
        details = {"create": "clone, configure, resize, start",
                   "start": "exists but is stopped: start", "destroy": "stop and delete, with its disks"}
        return Change(f"{self.name} ({self.vmid})", self.action, details.get(self.action, ""))


def _show(key: str, value: Any) -> str:
    if key == "sshkeys" and value:
        return f"{len(cloudinit.decode_sshkeys(str(value)))} key(s)"
    return str(value)



def plan(api: Api, lab: Lab, destroy: list[str] | tuple[str, ...] = ()) -> Plan[VmPlan]:
    """Compare the lab file's nodes with the VMs that exist. A vmid or name held by a different
    VM is an error: provisioning never overwrites a VM it does not own."""
    vms = list_vms(api)
    by_id, by_name = {v.vmid: v for v in vms}, {v.name: v for v in vms}
    template = by_id.get(lab.proxmox.template_vmid)
    if template is None or not template.template:
        state = "is not a template" if template else "does not exist"
        raise ProxmoxError(f"proxmox.template_vmid: VM {lab.proxmox.template_vmid} {state}; create the "
                           "Ubuntu cloud-init template first (with qemu-guest-agent installed)")
    problems, planned = [], []
    for node in lab.nodes:
        vm = by_id.get(node.vmid)
        other = by_name.get(node.name)
        if vm is not None and vm.name != node.name:
            problems.append(f"vmid {node.vmid} is taken by VM {vm.name!r}, not {node.name!r}: "
                            "choose a free vmid for the node in the lab file")
        elif vm is None and other is not None:
            problems.append(f"a VM named {node.name!r} already exists as vmid {other.vmid}, "
                            f"but the lab file says vmid {node.vmid}: fix the lab file or rename that VM")
        elif vm is None:
            planned.append(VmPlan(node.name, node.vmid, "create"))
        else:
            planned.append(_existing_plan(vm, lab, node))
    if problems:
        raise ProxmoxError("the plan cannot be made:\n" + "\n".join(f"  {p}" for p in problems))
    planned += _destroy_plan(by_name, destroy, {n.name for n in lab.nodes})
    return Plan(planned)


def _existing_plan(vm: Vm, lab: Lab, node: Node) -> VmPlan:
    drift = config_drift(vm, desired_config(lab, node), node.disk_gib)
    if drift:
        return VmPlan(node.name, node.vmid, "drift", drift, running=vm.status == "running")
    return VmPlan(node.name, node.vmid, "start" if vm.status != "running" else "unchanged")


def _destroy_plan(by_name: dict[str, Vm], names: list[str] | tuple[str, ...], lab_names: set[str]) -> list[VmPlan]:
    out = []
    for name in dict.fromkeys(names):
        vm = by_name.get(name)
        if name in lab_names:
            raise ProxmoxError(f"destroy: {name!r} is a node of the lab file; remove it from nodes first "
                               "(to re-create it: destroy it in one run, provision it in the next)")
        if vm is not None and vm.template:
            raise ProxmoxError(f"destroy: {name!r} is a template; labkit never deletes templates")
        if vm is not None:
            out.append(VmPlan(name, vm.vmid, "destroy", running=vm.status == "running"))
    return out


# -- capacity ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityCheck:
    """Memory and storage the plan adds, against what the host allows."""

    usage: pd.DataFrame  # resource, requested, available (GiB)
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_capacity(plan_: Plan[VmPlan], lab: Lab, cap: Capacity, *, memory_overcommit: float = 1.0,
                   storage_overcommit: float = 1.0) -> CapacityCheck:
    """Memory committed to VMs after the plan vs host memory x ``memory_overcommit``; new disk
    space vs free storage x ``storage_overcommit``. 1.0 = no over-commit."""
    adds_memory = adds_disk = 0
    for vm in plan_.items:
        node = next((n for n in lab.nodes if n.name == vm.name), None)
        if node is None:
            continue
        if vm.action == "create":
            adds_memory += node.memory_mib * MIB
            adds_disk += node.disk_gib * GIB
        elif "memory" in vm.drift:
            adds_memory += (node.memory_mib - memory_mib(vm.drift["memory"][0])) * MIB
    memory_want = cap.committed_memory + adds_memory
    memory_limit = cap.memory_total * memory_overcommit
    storage_limit = cap.storage_avail * storage_overcommit
    problems = []
    if memory_want > memory_limit:
        problems.append(f"memory: VMs would have {memory_want / GIB:.1f} GiB on a host allowing "
                        f"{memory_limit / GIB:.1f} GiB (x{memory_overcommit} of {cap.memory_total / GIB:.1f} GiB): "
                        f"{(memory_want - memory_limit) / GIB:.1f} GiB over")
    if adds_disk > storage_limit:
        problems.append(f"storage {cap.storage}: new disks need {adds_disk / GIB:.1f} GiB, "
                        f"{storage_limit / GIB:.1f} GiB allowed: {(adds_disk - storage_limit) / GIB:.1f} GiB over")
    usage = pd.DataFrame([
        {"resource": "memory (GiB)", "requested": memory_want / GIB, "available": memory_limit / GIB},
        {"resource": f"new disk on {cap.storage} (GiB)", "requested": adds_disk / GIB, "available": storage_limit / GIB},
    ])
    usage.attrs["unit"] = "GiB"
    return CapacityCheck(usage, problems)


# -- apply ---------------------------------------------------------------------------------------


@dataclass
class Applied:
    """What ``apply`` did, and what it left undone (with the parameter that would do it)."""

    changes: list[Change] = field(default_factory=list)
    skipped: list[Change] = field(default_factory=list)
    agents: list[AgentReport] = field(default_factory=list)  # VMs booted here whose agent answered


def apply(api: Api, lab: Lab, plan_: Plan[VmPlan], *, reconcile: bool = False, confirm_destroy: bool = False,
          task_timeout: float = 600, lock_timeout: float = 60, agent_timeout: float | None = None,
          step: StepTimer = untimed) -> Applied:
    """Make exactly the planned changes. Drift is fixed only with ``reconcile``; VMs are destroyed
    only with ``confirm_destroy``. Clones run one after another (PVE's clone lock); each cloned VM
    is started right away so that boots overlap with the next clone, and with ``agent_timeout``
    its guest agent is awaited in the background meanwhile."""
    result = Applied()
    ops = _Ops(api, lab, task_timeout, lock_timeout)
    with ThreadPoolExecutor(max_workers=8) as waits:
        agents = []
        for vm in plan_.items:
            if vm.action == "unchanged":
                continue
            if (vm.action == "drift" and not reconcile) or (vm.action == "destroy" and not confirm_destroy):
                why = "set reconcile=True to fix drift" if vm.action == "drift" else "set confirm_destroy=True"
                result.skipped.append(Change(vm.change().target, vm.action, f"not done: {why}", vm.needs_reboot))
                continue
            booted = ACTIONS[vm.action](ops, vm, step)
            result.changes.append(vm.change())
            if booted and agent_timeout is not None:
                agents.append(waits.submit(_await_agent, api, lab, vm.name, agent_timeout, step))
        result.agents = [a.result() for a in agents]
    return result


def _await_agent(api: Api, lab: Lab, name: str, timeout: float, step: StepTimer) -> AgentReport:
    with step("agent", name):
        return wait_agent(api, lab, lab.node(name), timeout)


# Each planned action; returns whether the VM was (re)booted.


def _create(ops: _Ops, vm: VmPlan, step: StepTimer) -> bool:
    node = ops.lab.node(vm.name)
    with step("clone", vm.name):
        ops.clone(node)
    with step("configure", vm.name):
        ops.configure(node)
        ops.resize(node)
    with step("boot", vm.name):
        ops.start(vm.vmid, vm.name)
    return True


def _start(ops: _Ops, vm: VmPlan, step: StepTimer) -> bool:
    with step("boot", vm.name):
        ops.start(vm.vmid, vm.name)
    return True


def _reconcile(ops: _Ops, vm: VmPlan, step: StepTimer) -> bool:
    """Write the desired config; a running VM reboots if a changed setting needs it, a stopped one starts."""
    node = ops.lab.node(vm.name)
    with step("reconcile", vm.name):
        ops.configure(node)
        ops.resize(node)
    if vm.running and not vm.needs_reboot:
        return False
    with step("boot", vm.name):
        (ops.reboot if vm.running else ops.start)(vm.vmid, vm.name)
    return True


def _destroy(ops: _Ops, vm: VmPlan, step: StepTimer) -> bool:
    with step("destroy", vm.name):
        ops.destroy(vm.vmid, vm.name)
    return False


ACTIONS: dict[str, Callable[[_Ops, VmPlan, StepTimer], bool]] = {
    "create": _create, "start": _start, "drift": _reconcile, "destroy": _destroy}


@dataclass(frozen=True)
class _Ops:
    api: Api
    lab: Lab
    task_timeout: float
    lock_timeout: float

    @property
    def node(self) -> str:
        return self.lab.proxmox.node

    def _task(self, what: str, request: Callable[[], Any]) -> None:
        run_task(self.api, self.node, what, request, timeout=self.task_timeout, lock_timeout=self.lock_timeout)

    def _vm(self, vmid: int):
        return self.api.nodes(self.node).qemu(vmid)

    def clone(self, node: Node) -> None:
        template = self.lab.proxmox.template_vmid
        self._task(f"clone {template} -> {node.vmid} ({node.name})", lambda: self._vm(template).clone.post(
            newid=node.vmid, name=node.name, full=1, storage=self.lab.proxmox.storage, target=self.node))

    def configure(self, node: Node) -> None:
        """Write the desired config. A pending change (made on the running VM, waiting for a
        reboot) whose current value is already the desired one is reverted rather than rewritten."""
        config = desired_config(self.lab, node)
        pending = call(f"pending config of {node.name}", lambda: self._vm(node.vmid).pending.get())
        revert = [e["key"] for e in pending if "pending" in e and e["key"] in config
                  and _normalize(e["key"], e.get("value")) == _normalize(e["key"], config[e["key"]])]
        config = {k: v for k, v in config.items() if k not in revert}
        if revert:
            config["revert"] = ",".join(revert)
        net0 = next((str(e.get("value", "")) for e in pending if e["key"] == "net0"), "")
        if net0:
            config["net0"] = re.sub(r"bridge=[^,]+", f"bridge={self.lab.proxmox.bridge}", net0)
        with_lock_retry(f"configure {node.name} ({node.vmid})", lambda: self._vm(node.vmid).config.put(**config),
                        self.lock_timeout)

    def resize(self, node: Node) -> None:
        config = call(f"config of {node.name}", lambda: self._vm(node.vmid).config.get())
        disk = boot_disk(config)
        if disk_bytes(str(config[disk])) < node.disk_gib * GIB:
            self._task(f"resize {disk} of {node.name} to {node.disk_gib}G",
                       lambda: self._vm(node.vmid).resize.put(disk=disk, size=f"{node.disk_gib}G"))

    def start(self, vmid: int, name: str) -> None:
        self._task(f"start {name} ({vmid})", lambda: self._vm(vmid).status.start.post())

    def reboot(self, vmid: int, name: str) -> None:
        self._task(f"reboot {name} ({vmid})", lambda: self._vm(vmid).status.reboot.post())

    def destroy(self, vmid: int, name: str) -> None:
        status = call(f"status of {name}", lambda: self._vm(vmid).status.current.get())
        if status.get("status") == "running":
            self._task(f"stop {name} ({vmid})", lambda: self._vm(vmid).status.stop.post())
        self._task(f"delete {name} ({vmid})",
                   lambda: self._vm(vmid).delete(purge=1, **{"destroy-unreferenced-disks": 1}))


