"""VM snapshots: create (with a ``snapshot`` lock while it runs; with ``vmstate`` the running
guest's RAM goes to a state volume), list with the ``current`` entry, roll back (stopping a
running VM; a snapshot with RAM starts it again from that state), delete (re-parenting the
children).

The guest's disk follows each step through the node host (``snapshot_disk``, ``rollback_disk``,
``delete_disk_snapshot``, ``resume_node``), so a rollback brings the node's files back as they
were. Mixed into ``ProxmoxVE`` (model.py), whose VMs, clock and tasks it uses.
"""

from __future__ import annotations

import logging
from typing import Any

from labsim.pve import vms as v
from labsim.pve.errors import PVEError, TaskError
from labsim.pve.tasks import Task

log = logging.getLogger(__name__)

SNAPSHOT_S = 2.0  # modelled seconds of an LVM-thin snapshot
VMSTATE_S_PER_GIB = 1.5  # modelled seconds to save a GiB of guest RAM
RAM_IN_USE = 0.3  # the share of a guest's memory its saved state holds
MIB = 1 << 20


class SnapshotMixin:
    def snapshot(self, vmid: int, name: str, description: str, user: str, vmstate: bool = False) -> Task:
        vm = self.vm(vmid)
        if name.lower() in ("current", "pending"):
            raise PVEError(500, f"unable to use snapshot name '{name}' (reserved name)")

        async def work(task: Task) -> None:
            vm.check_unlocked()
            if vm.is_template:
                raise TaskError("you can't take a snapshot if it's a template")
            if name in vm.snapshots:
                raise TaskError(f"snapshot name '{name}' already used")
            vm.config["lock"] = "snapshot"
            try:
                await self._snapshot_volumes(vm, name, description, vmstate, task)
            except BaseException:  # as PVE's cleanup after a failed snapshot: no snapshot, no lock
                vm.config.pop("lock", None)
                raise
        return self._start_task("qmsnapshot", vmid, user, work)

    async def _snapshot_volumes(self, vm: v.VM, name: str, description: str, vmstate: bool, task: Task) -> None:
        # As PVE: vmstate on a stopped VM is ignored; RAM is saved before the disks.
        state = await self._save_vmstate(vm, name, task) if vmstate and vm.status == "running" else 0
        for key, drive in vm.disks().items():
            task.log(f"snapshotting 'drive-{key}' ({drive.volid})")
            task.log(f'  Logical volume "snap_{drive.volume}_{name}" created.')
        await self.clock.sleep(SNAPSHOT_S, f"pve snapshot {vm.vmid} {name}")
        self._disk_call("snapshot_disk", vm.vmid, name, bool(state) and vm.booted)
        parent = vm.config.pop("parent", None)
        config = {k: val for k, val in vm.config.items() if k != "lock"}
        vm.snapshots[name] = {"config": config, "snaptime": int(self.clock.now()), "description": description,
                              "parent": parent, "vmstate": state, "booted": bool(state) and vm.booted}
        vm.config["parent"] = name
        vm.config.pop("lock", None)

    async def _save_vmstate(self, vm: v.VM, name: str, task: Task) -> str:
        """The guest's RAM to ``vm-ID-state-NAME`` on the storage of its first disk."""
        storage = next((d.storage for d in vm.disks().values()), self.config.storage)
        volume = f"vm-{vm.vmid}-state-{name}"
        if storage in self.faults.storage_full:
            raise TaskError(f"lvcreate 'pve/{volume}' error:   Volume group \"pve\" has insufficient free space")
        task.log(f'  Logical volume "{volume}" created.')
        task.log(f"saving VM state and RAM using storage '{storage}'")
        saved_gib = vm.memory_mib * RAM_IN_USE / 1024
        seconds = max(1, round(saved_gib * VMSTATE_S_PER_GIB))
        await self.clock.sleep(seconds, f"pve vmstate {vm.vmid} {name}")
        task.log(f"completed saving the VM state in {seconds}s, saved {saved_gib:.2f} GiB")
        return f"{storage}:{volume}"

    def snapshots(self, vmid: int) -> list[dict[str, Any]]:
        vm = self.vm(vmid)
        out = [{"name": n, "description": s["description"], "snaptime": s["snaptime"], "vmstate": int(bool(s["vmstate"])),
                **({"parent": s["parent"]} if s.get("parent") else {})} for n, s in vm.snapshots.items()]
        current = {"name": "current", "description": "You are here!", "running": int(vm.status == "running")}
        if vm.config.get("parent"):
            current["parent"] = vm.config["parent"]
        return [*out, current]

    def rollback(self, vmid: int, name: str, user: str, start: bool = False) -> Task:
        vm = self.vm(vmid)

        async def work(task: Task) -> None:
            snap = self.snapshot_of(vm, name)
            vm.check_unlocked()
            if vm.status == "running":
                await self._power_off(vm)
            vm.config["lock"] = "rollback"
            for drive in v.VM(vmid, snap["config"]).disks().values():
                task.log(f'  Logical volume "{drive.volume}" successfully removed.')
                task.log(f'  Logical volume "{drive.volume}" created.')
            await self.clock.sleep(SNAPSHOT_S, f"pve rollback {vmid} {name}")
            self._disk_call("rollback_disk", vmid, name)
            # As PVE: the snapshot's config replaces the current one, which keeps its description;
            # pending changes are dropped.
            kept = {k: vm.config[k] for k in ("description",) if k in vm.config}
            vm.config = {**{k: val for k, val in snap["config"].items() if k != "description"}, **kept,
                         "parent": name}
            vm.pending, vm.pending_delete = {}, []
            if snap["vmstate"]:
                await self._resume(vm, name, snap)
            elif start:
                self._power_on(vm)
        return self._start_task("qmrollback", vmid, user, work)

    async def _resume(self, vm: v.VM, name: str, snap: dict[str, Any]) -> None:
        """Start from the snapshot's saved RAM: a guest that had booted runs on at once."""
        if not snap.get("booted"):
            self._power_on(vm)
            return
        vm.status, vm.started_at = "running", self.clock.now()
        spec = self.node_spec(vm)
        if spec is not None:
            try:
                await self._node_call("resume_node", spec, name)
            except Exception:  # the VM runs even when its guest cannot serve SSH
                log.exception("VM %s: SSH node did not resume", vm.vmid)
        vm.booted = True
        self._agents.add(vm.vmid)

    def delete_snapshot(self, vmid: int, name: str, user: str) -> Task:
        vm = self.vm(vmid)
        vm.check_unlocked()
        snap = self.snapshot_of(vm, name)

        async def work(task: Task) -> None:
            vm.config["lock"] = "snapshot-delete"
            if snap["vmstate"]:
                task.log(f'  Logical volume "{v.Drive.parse("vmstate", snap["vmstate"]).volume}" successfully removed.')
            for drive in v.VM(vmid, snap["config"]).disks().values():
                task.log(f'  Logical volume "snap_{drive.volume}_{name}" successfully removed.')
            await self.clock.sleep(SNAPSHOT_S / 2, f"pve delete snapshot {vmid} {name}")
            self._disk_call("delete_disk_snapshot", vmid, name)
            for other in vm.snapshots.values():
                if other.get("parent") == name:
                    other["parent"] = snap.get("parent")
            if vm.config.get("parent") == name:
                vm.config["parent"] = snap.get("parent")
                if not snap.get("parent"):
                    vm.config.pop("parent")
            del vm.snapshots[name]
            vm.config.pop("lock", None)
        return self._start_task("qmdelsnapshot", vmid, user, work)

    @staticmethod
    def snapshot_of(vm: v.VM, name: str) -> dict[str, Any]:
        if name not in vm.snapshots:
            raise PVEError(500, f"snapshot '{name}' does not exist")
        return vm.snapshots[name]


def state_volumes(vm: v.VM) -> list[tuple[str, int]]:
    """The RAM state volumes of a VM's snapshots with their sizes: PVE allocates twice the
    guest's memory plus 500 MiB for device state."""
    return [(snap["vmstate"], (v.VM(vm.vmid, snap["config"]).memory_mib * 2 + 500) * MIB)
            for snap in vm.snapshots.values() if snap.get("vmstate")]
