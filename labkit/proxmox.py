"""Proxmox VE: connect, observe, plan, and provision the lab's VMs (notebook 01).

Everything goes through PVE's HTTPS API with proxmoxer, an API token, and TLS verification
against the lab's CA file or the certificate's pinned SHA-256 fingerprint. The flow is
plan -> capacity check -> apply -> wait: ``plan`` compares the lab file with the VMs that exist,
``check_capacity`` refuses an over-committing plan, ``apply`` makes exactly the planned changes
(clones one at a time per PVE node, since parallel clones of one template fight over its lock),
and ``wait_agents`` waits for each guest agent to report the VM's address.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import requests
from proxmoxer import ProxmoxAPI, ResourceException
from requests.adapters import HTTPAdapter
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_delay, wait_exponential

from labkit import cloudinit
from labkit.errors import ProxmoxError
from labkit.params import Lab, Node
from labkit.report import Change
from labkit.timing import StepTimer, untimed

GIB = 1024**3
MIB = 1024**2
# Settings that only take effect when the VM restarts (PVE hot-plugs disk, network and usb by
# default; cloud-init settings are read from the cloud-init drive at boot).
REBOOT_FIELDS = {"cores", "memory", "agent", "ciuser", "sshkeys", "ipconfig0", "nameserver", "searchdomain"}


# -- connection ----------------------------------------------------------------------------------


class _FingerprintAdapter(HTTPAdapter):
    """Pins the server certificate's SHA-256 fingerprint (urllib3 checks it on every connection)."""

    def __init__(self, fingerprint: str):
        self._fingerprint = fingerprint.replace(":", "").lower()
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self._fingerprint
        super().init_poolmanager(*args, **kwargs)


def connect(lab: Lab, timeout: float = 15) -> ProxmoxAPI:
    """An API client authenticated with the lab's token, TLS verified; checked with ``/version``."""
    pve = lab.proxmox
    user, token_name = pve.token_id.split("!", 1)
    verify: str | bool = str(pve.ca_file) if pve.ca_file else False
    api = ProxmoxAPI(pve.host, port=pve.port, user=user, token_name=token_name,
                     token_value=lab.secret(pve.token_secret), verify_ssl=verify, timeout=timeout)
    if pve.fingerprint:
        api._store["session"].mount(f"https://{pve.host}:{pve.port}/", _FingerprintAdapter(pve.fingerprint))
    try:
        api.version.get()
    except ResourceException as exc:
        hint = " (check proxmox.token_id and the token secret)" if exc.status_code == 401 else ""
        raise ProxmoxError(f"Proxmox VE at {pve.host}:{pve.port} refused the API token{hint}: {exc}") from None
    except requests.exceptions.SSLError as exc:
        anchor = f"ca_file {pve.ca_file}" if pve.ca_file else f"fingerprint {pve.fingerprint}"
        raise ProxmoxError(f"TLS verification of {pve.host}:{pve.port} failed against {anchor}: {exc}") from None
    except requests.exceptions.ConnectionError as exc:
        raise ProxmoxError(f"cannot reach Proxmox VE at https://{pve.host}:{pve.port}: {exc}") from None
    return api


def _pve_message(exc: ResourceException) -> str:
    text = str(exc.content or exc.status_message).strip()
    if exc.errors:
        text += " " + "; ".join(f"{k}: {v}" for k, v in dict(exc.errors).items())
    return text


def _call(what: str, request: Callable[[], Any]) -> Any:
    """One API request; PVE's refusal becomes a ProxmoxError naming what was attempted."""
    try:
        return request()
    except ResourceException as exc:
        raise ProxmoxError(f"{what}: PVE answered {exc.status_code}: {_pve_message(exc)}") from exc
    except requests.exceptions.RequestException as exc:
        raise ProxmoxError(f"{what}: no answer from Proxmox VE ({_network_reason(exc)}); is the host up "
                           "and reachable? A task it started may still be running: see Tasks in the PVE UI") from exc


def _network_reason(exc: requests.exceptions.RequestException) -> str:
    """'[Errno 111] Connection refused' rather than urllib3's retry report with the whole URL."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return str(reason or exc).rsplit(": ", 1)[-1]


# -- tasks and locks -----------------------------------------------------------------------------


def wait_task(api: ProxmoxAPI, node: str, upid: str, *, what: str, timeout: float = 600) -> None:
    """Wait for a UPID to stop; a task that ends in anything but OK raises with PVE's exit status."""
    deadline, delay = time.monotonic() + timeout, 0.02
    while True:
        status = _call(f"{what}: task status", lambda: api.nodes(node).tasks(upid).status.get())
        if status.get("status") == "stopped":
            break
        if time.monotonic() > deadline:
            raise ProxmoxError(f"{what}: task {upid} still running after {timeout:.0f} s; see Tasks on node {node}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    exitstatus = str(status.get("exitstatus", ""))
    if exitstatus != "OK" and not exitstatus.startswith("WARNINGS"):
        raise ProxmoxError(f"{what} failed: {exitstatus or 'no exit status'} (task {upid})")


def _is_locked(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, ProxmoxError) else exc
    return isinstance(cause, ResourceException) and cause.status_code == 500 and "lock" in str(cause.content)


def with_lock_retry(what: str, request: Callable[[], Any], lock_timeout: float) -> Any:
    """Run ``request``, retrying with exponential backoff while PVE says the VM is locked."""
    retrying = Retrying(retry=retry_if_exception(_is_locked), stop=stop_after_delay(lock_timeout),
                        wait=wait_exponential(multiplier=0.1, max=5), reraise=False)
    try:
        return retrying(_call, what, request)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise ProxmoxError(f"{what}: the VM stayed locked for {lock_timeout:.0f} s ({last}); another task "
                           "holds it: check Tasks in the PVE UI, or `qm unlock VMID` if the lock is stale") from None


def _run_task(api: ProxmoxAPI, node: str, what: str, request: Callable[[], Any], *,
              timeout: float, lock_timeout: float) -> None:
    upid = with_lock_retry(what, request, lock_timeout)
    if isinstance(upid, str) and upid.startswith("UPID:"):
        wait_task(api, node, upid, what=what, timeout=timeout)


# -- observed state ------------------------------------------------------------------------------


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


def capacity(api: ProxmoxAPI, lab: Lab) -> Capacity:
    node, storage = lab.proxmox.node, lab.proxmox.storage
    status = _call(f"status of node {node}", lambda: api.nodes(node).status.get())
    store = _call(f"storage {storage} on {node}", lambda: api.nodes(node).storage(storage).status.get())
    vms = _call("VM list", lambda: api.cluster.resources.get(type="vm"))
    guests = [v for v in vms if not v.get("template") and v.get("node") == node]
    return Capacity(node=node, cpus=int(status["cpuinfo"]["cpus"]), memory_total=int(status["memory"]["total"]),
                    memory_used=int(status["memory"]["used"]), storage=storage,
                    storage_total=int(store["total"]), storage_avail=int(store["avail"]),
                    committed_memory=sum(int(v.get("maxmem", 0)) for v in guests),
                    committed_cpus=sum(int(v.get("maxcpu", 0)) for v in guests))


def list_vms(api: ProxmoxAPI) -> list[Vm]:
    """Every VM and template of the cluster, with its config."""
    vms = []
    for row in _call("VM list", lambda: api.cluster.resources.get(type="vm")):
        if row.get("type") != "qemu":
            continue
        vmid, node = int(row["vmid"]), row["node"]
        config = _call(f"config of VM {vmid}", lambda n=node, v=vmid: api.nodes(n).qemu(v).config.get())
        vms.append(Vm(vmid, str(row.get("name", "")), node, str(row.get("status", "")), bool(row.get("template")),
                      config, int(row.get("uptime", 0) or 0)))
    return vms


# -- desired state and the plan -------------------------------------------------------------------


def desired_config(lab: Lab, node: Node) -> dict[str, Any]:
    """The VM config the lab file asks for (what ``apply`` writes and ``plan`` compares)."""
    public_key = lab.ssh.public_key.read_text().strip()
    return {"cores": node.cores, "memory": node.memory_mib, **cloudinit.settings(lab, node, public_key),
            "agent": "1", "onboot": 1, "tags": ";".join(node.tags)}


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


def config_drift(vm: Vm, want: dict[str, Any], disk_gib: int) -> dict[str, tuple[Any, Any]]:
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
    drift: dict[str, tuple[Any, Any]] = field(default_factory=dict)
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


@dataclass(frozen=True)
class Plan:
    vms: list[VmPlan]
    template: Vm

    def changes(self) -> list[Change]:
        return [v.change() for v in self.vms]

    def of(self, action: str) -> list[VmPlan]:
        return [v for v in self.vms if v.action == action]

    @property
    def is_empty(self) -> bool:
        return all(v.action == "unchanged" for v in self.vms)


def plan(api: ProxmoxAPI, lab: Lab, destroy: list[str] | tuple[str, ...] = ()) -> Plan:
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
    return Plan(planned, template)


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


def check_capacity(plan_: Plan, lab: Lab, cap: Capacity, *, memory_overcommit: float = 1.0,
                   storage_overcommit: float = 1.0) -> CapacityCheck:
    """Memory committed to VMs after the plan vs host memory x ``memory_overcommit``; new disk
    space vs free storage x ``storage_overcommit``. 1.0 = no over-commit."""
    adds_memory = adds_disk = 0
    for vm in plan_.vms:
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


def apply(api: ProxmoxAPI, lab: Lab, plan_: Plan, *, reconcile: bool = False, confirm_destroy: bool = False,
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
        for vm in plan_.vms:
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


def _await_agent(api: ProxmoxAPI, lab: Lab, name: str, timeout: float, step: StepTimer) -> AgentReport:
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
    api: ProxmoxAPI
    lab: Lab
    task_timeout: float
    lock_timeout: float

    @property
    def node(self) -> str:
        return self.lab.proxmox.node

    def _task(self, what: str, request: Callable[[], Any]) -> None:
        _run_task(self.api, self.node, what, request, timeout=self.task_timeout, lock_timeout=self.lock_timeout)

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
        pending = _call(f"pending config of {node.name}", lambda: self._vm(node.vmid).pending.get())
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
        config = _call(f"config of {node.name}", lambda: self._vm(node.vmid).config.get())
        disk = boot_disk(config)
        if disk_bytes(str(config[disk])) < node.disk_gib * GIB:
            self._task(f"resize {disk} of {node.name} to {node.disk_gib}G",
                       lambda: self._vm(node.vmid).resize.put(disk=disk, size=f"{node.disk_gib}G"))

    def start(self, vmid: int, name: str) -> None:
        self._task(f"start {name} ({vmid})", lambda: self._vm(vmid).status.start.post())

    def reboot(self, vmid: int, name: str) -> None:
        self._task(f"reboot {name} ({vmid})", lambda: self._vm(vmid).status.reboot.post())

    def destroy(self, vmid: int, name: str) -> None:
        status = _call(f"status of {name}", lambda: self._vm(vmid).status.current.get())
        if status.get("status") == "running":
            self._task(f"stop {name} ({vmid})", lambda: self._vm(vmid).status.stop.post())
        self._task(f"delete {name} ({vmid})",
                   lambda: self._vm(vmid).delete(purge=1, **{"destroy-unreferenced-disks": 1}))


# -- waiting for guests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentReport:
    name: str
    vmid: int
    ip: str
    started: datetime
    answered: datetime

    @property
    def seconds(self) -> float:
        return (self.answered - self.started).total_seconds()


def agent_addresses(api: ProxmoxAPI, node: str, vmid: int) -> list[str]:
    """IPv4 addresses the guest agent reports (raises ResourceException while the agent is down)."""
    answer = api.nodes(node).qemu(vmid).agent("network-get-interfaces").get()
    interfaces = answer.get("result", []) if isinstance(answer, dict) else []
    return [a["ip-address"] for i in interfaces for a in i.get("ip-addresses", [])
            if a.get("ip-address-type") == "ipv4"]


def wait_agent(api: ProxmoxAPI, lab: Lab, node: Node, timeout: float = 300) -> AgentReport:
    """Poll the guest agent until it reports the node's address. PVE has no event for this."""
    start, delay, last = time.monotonic(), 0.05, "no answer yet"
    started = datetime.now(UTC)
    while time.monotonic() - start < timeout:
        try:
            addresses = agent_addresses(api, lab.proxmox.node, node.vmid)
        except ResourceException as exc:
            last = _pve_message(exc)
            if last == f"VM {node.vmid} is not running":  # nothing starts it while we wait: say so now
                raise ProxmoxError(
                    f"VM {node.vmid} ({node.name}) is not running, so its guest agent cannot answer. Start it, "
                    "or if the plan showed drift for it (e.g. a clone that was interrupted), re-run with "
                    "reconcile=True (`labkit run -p reconcile true`) or destroy and re-create it.") from None
        else:
            if str(node.ip) in addresses:
                return AgentReport(node.name, node.vmid, str(node.ip), started, datetime.now(UTC))
            last = f"agent reports {', '.join(addresses) or 'no IPv4 address'}, expected {node.ip}"
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    raise ProxmoxError(
        f"VM {node.vmid} ({node.name}): the guest agent did not report {node.ip} within {timeout:.0f} s "
        f"(last: {last}). Check that qemu-guest-agent is installed and enabled in template "
        f"{lab.proxmox.template_vmid}, that the VM has agent=1, and its console for cloud-init network errors.")


def wait_agents(api: ProxmoxAPI, lab: Lab, names: list[str], *, timeout: float = 300,
                on_ready: Callable[[AgentReport], None] | None = None) -> list[AgentReport]:
    """Wait for several guests at once (they boot concurrently)."""
    def one(name: str) -> AgentReport:
        report = wait_agent(api, lab, lab.node(name), timeout)
        if on_ready:
            on_ready(report)
        return report

    if not names:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        return list(pool.map(one, names))


# -- the lab's VMs, for the notebook ----------------------------------------------------------------


def vm_table(api: ProxmoxAPI, lab: Lab) -> pd.DataFrame:
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


def task_ids(api: ProxmoxAPI, lab: Lab) -> set[str]:
    """UPIDs of the PVE node's recent tasks: compare two sets to see what really ran in between."""
    rows = _call("task list", lambda: api.nodes(lab.proxmox.node).tasks.get(limit=1000))
    return {str(t["upid"]) for t in rows}
