"""The hypervisor: one PVE node with its VMs, storages, tasks and faults.

Operations check what PVE checks before answering (locks, running state, existence) and run
the rest as worker tasks taking modelled time from the lab clock. Power (power.py) and
snapshots (snapshots.py) are mixed in; booted VMs with cloud-init network and keys become SSH
nodes through ``node_host`` (``labsim.node.host.NodeHost``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from labsim.clock import Clock
from labsim.config import SimConfig
from labsim.pve import vms as v
from labsim.pve.errors import PVEError, TaskError
from labsim.pve.faults import DEFAULT_TASK_ERRORS, Faults
from labsim.pve.params import split_tags
from labsim.pve.power import PowerMixin
from labsim.pve.snapshots import SnapshotMixin, state_volumes
from labsim.pve.storage import GIB, Storage, node_storages
from labsim.pve.tasks import Task, TaskRunner
from labsim.state import StateFile

TEMPLATE_NAME = "ubuntu-2204-cloudinit"
# Modelled durations (seconds of lab time), after a small PVE host with LVM-thin storage.
LINKED_CLONE_S, FULL_CLONE_S_PER_GIB, FULL_CLONE_MIN_S = 4.0, 9.0, 20.0
RESIZE_S, DESTROY_S, CONFIG_S = 1.0, 2.0, 0.5
HOST_CPUS, HOST_MEMORY, HOST_ROOTFS = 16, 64 * GIB, 100 * GIB
HOST_BASE_MEMORY = int(2.5 * GIB)  # what PVE itself uses on an idle host
SAVE_DELAY_S = 0.05  # real seconds: how long a change may wait to reach the state file


class ProxmoxVE(PowerMixin, SnapshotMixin):
    def __init__(self, config: SimConfig, clock: Clock, node_host: Callable[[], Any]) -> None:
        self.config = config
        self.node = config.pve_node
        self.clock = clock
        self.node_host = node_host  # -> NodeHost | None, looked up at call time
        self.vms: dict[int, v.VM] = {}
        self.storages: dict[str, Storage] = node_storages(config.storage)
        self.faults = Faults()
        self.state = StateFile(config.state_dir / "pve" / "state.json")
        self.tasks = TaskRunner(self.node, clock, self.save)
        self.started_at = clock.now()
        self._boots: dict[int, asyncio.Task] = {}
        # VMs whose guest agent has started since their boot: run state, never saved, so that a
        # lab killed between two saves cannot leave an agent latched down (see agent_running).
        self._agents: set[int] = set()
        self._save_pending: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- state

    def load(self) -> None:
        doc = self.state.load()
        if doc is None:
            template = v.template_config(TEMPLATE_NAME, self.config.storage, self.config.bridge,
                                         self.config.template_vmid)
            self.vms[self.config.template_vmid] = v.VM(self.config.template_vmid, template)
            self.save()
            return
        self.vms = {int(k): v.VM.from_state(d) for k, d in doc["vms"].items()}
        self.tasks.load(doc.get("tasks", []))
        for vm in self.vms.values():
            if vm.lock in ("clone", "create"):  # a worker the lab's stop interrupted
                vm.config.pop("lock")

    def save(self) -> None:
        """Persist soon: changes within SAVE_DELAY share one write (a burst of 24 clones is one)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._save_pending is None:
            self._save_pending = loop.call_later(SAVE_DELAY_S, self.flush)

    def flush(self) -> None:
        if self._save_pending is not None:
            self._save_pending.cancel()
            self._save_pending = None
        self.state.save({
            "vms": {str(k): vm.to_state() for k, vm in self.vms.items()},
            "tasks": self.tasks.to_state(),
        })

    async def close(self) -> None:
        for boot in self._boots.values():
            boot.cancel()
        await asyncio.gather(*self._boots.values(), return_exceptions=True)
        await self.tasks.close()
        self.flush()

    # ---------------------------------------------------------------- lookups

    def vm(self, vmid: int) -> v.VM:
        vm = self.vms.get(vmid)
        if vm is None:
            raise PVEError(500, f"Configuration file 'nodes/{self.node}/qemu-server/{vmid}.conf' does not exist")
        return vm

    def check_node(self, node: str) -> None:
        if node != self.node:
            raise PVEError(500, f"hostname lookup '{node}' failed - failed to get address info for: {node}: "
                                "Name or service not known")

    def storage(self, name: str) -> Storage:
        if name not in self.storages:
            raise PVEError(500, f"storage '{name}' does not exist")
        return self.storages[name]

    def storage_used(self, name: str) -> int:
        disks = sum(d.size for vm in self.vms.values() for d in vm.disks().values() if d.storage == name)
        states = sum(size for vm in self.vms.values() for volid, size in state_volumes(vm)
                     if volid.split(":", 1)[0] == name)
        return disks + states

    def storage_status(self, name: str) -> dict[str, Any]:
        return self.storage(name).status(self.storage_used(name), name in self.faults.storage_full)

    def next_id(self) -> int:
        return next(i for i in range(100, 1_000_000_000) if i not in self.vms)

    def memory_used(self) -> int:
        running = (vm.memory_mib << 20 for vm in self.vms.values() if vm.status == "running")
        return HOST_BASE_MEMORY + sum(running)

    def guest(self, vm: v.VM) -> v.GuestNetwork:
        return v.guest_network(vm, [str(self.config.subnet.network_address + 1)], None)

    # ---------------------------------------------------------------- faults

    def fail_next_task(self, kind: str, message: str | None = None) -> None:
        """The next task of type ``kind`` (``qmclone``, ``qmstart``...) ends in TASK ERROR."""
        text = message or DEFAULT_TASK_ERRORS.get(kind, f"{kind} failed")
        self.tasks.failures.setdefault(kind, []).append(text)

    def hold_lock(self, vmid: int, lock: str = "backup") -> None:
        self.vm(vmid).config["lock"] = lock
        self.save()

    def release_lock(self, vmid: int) -> None:
        self.vm(vmid).config.pop("lock", None)
        self.save()

    def clear_faults(self) -> None:
        self.faults = Faults()
        self.tasks.failures.clear()

    # ---------------------------------------------------------------- create, clone, template

    def create(self, vmid: int, options: dict[str, Any], user: str) -> Task:
        if vmid in self.vms:
            raise PVEError(500, f"unable to create VM {vmid} - VM {vmid} already exists on node '{self.node}'")
        vm = v.VM(vmid, {"lock": "create", **_without_disks(options)})
        self.vms[vmid] = vm

        async def work(task: Task) -> None:
            await self.clock.sleep(CONFIG_S, f"pve create {vmid}")
            for key, value in options.items():
                if v.DISK_KEYS.match(key):
                    vm.config[key] = self._allocate(vm, key, value, task)
            vm.config.pop("lock", None)
        return self._start_task("qmcreate", vmid, user, work, undo=lambda: self.vms.pop(vmid, None))

    def clone(self, vmid: int, newid: int, opts: dict[str, Any], user: str) -> Task:
        """A copy (full) or a thin snapshot (linked) of each disk: of a template's base volumes, or
        of a VM's disks now or at one of its snapshots (``snapname``). The guest's files follow."""
        source = self.vm(vmid)
        source.check_unlocked()
        snapname = opts.get("snapname")
        old = self.snapshot_of(source, snapname)["config"] if snapname else source.config
        full = bool(opts.get("full", not source.is_template))
        target_storage = opts.get("storage", self.config.storage)
        if not full and "storage" in opts:
            raise PVEError(500, "parameter 'storage' not allowed for linked clones")
        self.storage(target_storage)
        if newid in self.vms:
            raise PVEError(500, f"unable to create VM {newid}: config file already exists")
        disks = v.VM(vmid, old).disks()
        # LVM-thin makes linked clones of base volumes and of snapshots, not of a VM's live disk.
        if not full and not source.is_template and snapname is None and disks:
            raise PVEError(500, f"Linked clone feature is not supported for drive '{next(iter(disks))}'")
        # As on PVE, a disk enters the new config once it is copied: until then (or if the lab stops
        # mid-clone) the VM never points at its source's volumes.
        config = {k: val for k, val in old.items() if k not in ("template", "lock", "meta", "parent", *disks)}
        config.update(name=opts.get("name", f"Copy-of-VM-{source.name}"), lock="clone")
        if "description" in opts:
            config["description"] = opts["description"]
        clone = v.VM(newid, config)
        self.vms[newid] = clone
        self.save()

        async def work(task: Task) -> None:
            size_gib = sum(d.size for d in disks.values()) / GIB
            task.log(f"create {'full' if full else 'linked'} clone of drive scsi0 ({disks['scsi0'].volid})"
                     if "scsi0" in disks else "clone without disks")
            if full and target_storage in self.faults.storage_full:
                await self.clock.sleep(1)
                raise TaskError(f"clone failed: lvcreate 'pve/vm-{newid}-disk-0' error:   Volume group \"pve\" "
                                "has insufficient free space (0 extents): 550 required.")
            await self.clock.sleep(max(FULL_CLONE_MIN_S, size_gib * FULL_CLONE_S_PER_GIB) if full else LINKED_CLONE_S,
                                   f"pve {'full' if full else 'linked'} clone {vmid} -> {newid}")
            for n, (key, drive) in enumerate(disks.items()):
                clone.config[key] = v.Drive(key, _clone_volid(drive, newid, n, full, target_storage),
                                            drive.options).with_options()
                if full:
                    task.log(f"transferred {drive.size} of {drive.size} bytes (100.00%)")
            for key, value in list(clone.config.items()):
                if v.DISK_KEYS.match(key) and v.Drive.parse(key, value).is_cdrom and "cloudinit" in value:
                    clone.config[key] = f"{target_storage}:vm-{newid}-cloudinit,media=cdrom"
            clone.config["net0"] = _new_mac(clone.config.get("net0", ""))
            self._disk_call("clone_disk", vmid, newid, snapname)
            clone.config.pop("lock", None)
        return self._start_task("qmclone", vmid, user, work, undo=lambda: self.vms.pop(newid, None))

    def template(self, vmid: int, user: str) -> Task:
        vm = self.vm(vmid)
        vm.check_unlocked()
        if vm.is_template:
            raise PVEError(500, "you can't convert a template to a template")
        if vm.status == "running":
            raise PVEError(500, "you can't convert a VM to template if VM is running")
        if vm.snapshots:
            raise PVEError(500, "unable to create template, because VM contains snapshots")

        async def work(task: Task) -> None:
            await self.clock.sleep(CONFIG_S, f"pve template {vmid}")
            for key, drive in vm.disks().items():
                base = drive.volume.replace("vm-", "base-", 1)
                vm.config[key] = v.Drive(key, f"{drive.storage}:{base}", drive.options).with_options()
            vm.config["template"] = 1
        return self._start_task("qmtemplate", vmid, user, work)

    def _allocate(self, vm: v.VM, key: str, value: str, task: Task | None) -> str:
        """``STORAGE:SIZE_GIB`` (or ``STORAGE:cloudinit``) allocates a volume as PVE does."""
        drive = v.Drive.parse(key, value)
        store, _, spec = drive.volid.partition(":")
        if spec == "cloudinit":
            return f"{store}:vm-{vm.vmid}-cloudinit,media=cdrom"
        if not spec.replace(".", "", 1).isdigit():
            return value
        self.storage(store)
        n = sum(1 for d in vm.disks().values() if d.storage == store)
        if store in self.faults.storage_full:
            raise PVEError(500, f"lvcreate 'pve/vm-{vm.vmid}-disk-{n}' error:   Volume group \"pve\" has "
                                "insufficient free space")
        if task is not None:
            task.log(f"  Logical volume \"vm-{vm.vmid}-disk-{n}\" created.")
        size = int(float(spec) * GIB)
        return v.Drive(key, f"{store}:vm-{vm.vmid}-disk-{n}", drive.options).with_options(size=v.format_size(size))

    # ---------------------------------------------------------------- config

    def update_config(self, vmid: int, values: dict[str, Any], user: str, background: bool) -> Task | None:
        """PUT (``background=False``) applies at once; POST runs a ``qmconfig`` task."""
        vm = self.vm(vmid)
        vm.check_unlocked(bool(values.pop("skiplock", 0)))
        if not values:
            raise PVEError(500, "no options specified")
        digest = values.pop("digest", None)
        if digest and digest != vm.digest():
            raise PVEError(500, "checksum mismatch (file change by other user?)")
        deletes = [k for k in _split(values.pop("delete", "")) if k]
        reverts = [k for k in _split(values.pop("revert", "")) if k]
        for key in values:
            if v.DISK_KEYS.match(key) and key in vm.config and values[key] != vm.config[key]:
                drive = v.Drive.parse(key, values[key])
                if drive.volid != v.Drive.parse(key, vm.config[key]).volid and not drive.is_cdrom:
                    raise PVEError(500, f"unable to change volume of {key}: use move_disk")
        if background:
            async def work(task: Task) -> None:
                await self.clock.sleep(CONFIG_S, f"pve config {vmid}")
                self._apply_config(vm, values, deletes, reverts, task)
            return self._start_task("qmconfig", vmid, user, work)
        self._apply_config(vm, values, deletes, reverts, None)
        self.save()
        return None

    def _apply_config(self, vm: v.VM, values: dict[str, Any], deletes: list[str], reverts: list[str],
                      task: Task | None) -> None:
        running = vm.status == "running"
        for key in reverts:
            vm.pending.pop(key, None)
            if key in vm.pending_delete:
                vm.pending_delete.remove(key)
        for key, value in values.items():
            if v.DISK_KEYS.match(key):
                value = self._allocate(vm, key, value, task)
            if running and key in v.NOT_HOTPLUGGED and vm.config.get(key) != value:
                vm.pending[key] = value
            else:
                vm.config[key] = value
            if key == "tags":
                vm.config[key] = ";".join(split_tags(value))
        for key in deletes:
            if running and key in v.NOT_HOTPLUGGED:
                vm.pending_delete.append(key)
            else:
                vm.config.pop(key, None)

    def pending(self, vmid: int) -> list[dict[str, Any]]:
        vm = self.vm(vmid)
        keys = sorted(set(vm.config) | set(vm.pending) | set(vm.pending_delete))
        out = []
        for key in keys:
            entry: dict[str, Any] = {"key": key}
            if key in vm.config:
                entry["value"] = vm.config[key]
            if key in vm.pending:
                entry["pending"] = vm.pending[key]
            if key in vm.pending_delete:
                entry["delete"] = 1
            out.append(entry)
        return out

    def _apply_pending(self, vm: v.VM) -> None:
        vm.config.update(vm.pending)
        for key in vm.pending_delete:
            vm.config.pop(key, None)
        vm.pending, vm.pending_delete = {}, []

    def resize(self, vmid: int, disk: str, size: str, user: str, skiplock: bool) -> Task:
        """As PVE 8+: a ``resize`` task that checks the disk and refuses to shrink it."""
        vm = self.vm(vmid)

        async def work(task: Task) -> None:
            vm.check_unlocked(skiplock)
            drive = vm.disks().get(disk)
            if drive is None:
                raise TaskError(f"disk '{disk}' does not exist")
            new_size = drive.size + v.parse_size(size) if size.startswith("+") else v.parse_size(size)
            if new_size < drive.size:
                raise TaskError("shrinking disks is not supported")
            if drive.storage in self.faults.storage_full and new_size > drive.size:
                raise TaskError(f"command '/sbin/lvextend -L {new_size // 1024}k pve/{drive.volume}' failed: "
                                "exit code 5")
            task.log(f"  Size of logical volume pve/{drive.volume} changed from {v.format_size(drive.size)} "
                     f"to {v.format_size(new_size)}.")
            await self.clock.sleep(RESIZE_S, f"pve resize {vmid} {disk}")
            vm.config[disk] = drive.with_options(size=v.format_size(new_size))
            if vm.booted:
                await self._node_call("update_node", self.node_spec(vm))
        return self._start_task("resize", vmid, user, work)

    # ---------------------------------------------------------------- destroy

    def destroy(self, vmid: int, user: str, skiplock: bool = False) -> Task:
        vm = self.vm(vmid)
        if vm.status == "running":
            raise PVEError(500, f"VM {vmid} is running - destroy failed")
        if vm.config.get("protection"):
            raise PVEError(500, f"can't remove VM {vmid} - protection mode enabled")

        async def work(task: Task) -> None:
            vm.check_unlocked(skiplock)
            for drive in vm.disks().values():
                if any(vmid_of_base(d.volid) == vmid for other in self.vms.values() if other is not vm
                       for d in other.disks().values()):
                    raise TaskError(f"base volume '{drive.volid}' is still in use by linked cloned")
            await self.clock.sleep(DESTROY_S, f"pve destroy {vmid}")
            for volid, _ in state_volumes(vm):
                task.log(f"  Logical volume \"{volid.split(':', 1)[1]}\" successfully removed.")
            for drive in vm.disks().values():
                for snapname in vm.snapshots:
                    task.log(f"  Logical volume \"snap_{drive.volume}_{snapname}\" successfully removed.")
                task.log(f"  Logical volume \"{drive.volume}\" successfully removed.")
            self.vms.pop(vmid, None)
            await self._node_call("delete_node", vmid)  # the guest's disk, files and host key go
        return self._start_task("qmdestroy", vmid, user, work)

    # ---------------------------------------------------------------- helpers

    def _disk_call(self, method: str, *args: Any) -> None:
        """The guest's disk (its node's files) follows a volume operation."""
        host = self.node_host()
        if host is not None:
            getattr(host, method)(*args)

    def _start_task(self, kind: str, vmid: int, user: str, work: Callable[[Task], Any],
                    undo: Callable[[], Any] | None = None) -> Task:
        injected = self.tasks.take_failure(kind)

        async def run(task: Task) -> None:
            try:
                if injected is not None:
                    await self.clock.sleep(1)
                    raise TaskError(injected.replace("{id}", str(vmid)))
                await work(task)
            except BaseException:
                if undo is not None:
                    undo()
                raise
            finally:
                self.save()
        return self.tasks.start(kind, str(vmid), user, run)


def vmid_of_base(volid: str) -> int | None:
    """The template a linked clone's volume ``local-lvm:base-9000-disk-0/vm-120-disk-0`` hangs off."""
    volume = volid.split(":", 1)[-1]
    if "/" not in volume or not volume.startswith("base-"):
        return None
    return int(volume.split("-")[1])


def _clone_volid(drive: v.Drive, newid: int, n: int, full: bool, target_storage: str) -> str:
    """A full copy lands on the target storage; a linked clone stays beside its origin, named
    after its base volume when it has one (a snapshot's clone does not name its origin)."""
    volume = f"vm-{newid}-disk-{n}"
    if full:
        return f"{target_storage}:{volume}"
    if drive.volume.startswith("base-"):
        return f"{drive.storage}:{drive.volume}/{volume}"
    return f"{drive.storage}:{volume}"


def _split(text: str) -> list[str]:
    return [k.strip() for k in text.replace(";", ",").replace(" ", ",").split(",")]


def _without_disks(options: dict[str, Any]) -> dict[str, Any]:
    return {k: val for k, val in options.items() if not v.DISK_KEYS.match(k)}


def _new_mac(net: str) -> str:
    model, _, rest = net.partition("=")
    tail = rest.split(",", 1)[1] if "," in rest else ""
    return f"{model}={v.new_mac()}" + (f",{tail}" if tail else "")
