"""VM snapshots: create (with a ``snapshot`` lock while it runs), list with the ``current``
entry, roll back (stopping a running VM), delete (re-parenting the children).

Mixed into ``ProxmoxVE`` (model.py), whose VMs, clock and tasks it uses.
"""

from __future__ import annotations

from typing import Any

from labsim.pve import vms as v
from labsim.pve.errors import PVEError, TaskError
from labsim.pve.tasks import Task

SNAPSHOT_S = 2.0  # modelled seconds of an LVM-thin snapshot


class SnapshotMixin:
    def snapshot(self, vmid: int, name: str, description: str, user: str) -> Task:
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
            await self.clock.sleep(SNAPSHOT_S)
            parent = vm.config.pop("parent", None)
            config = {k: val for k, val in vm.config.items() if k != "lock"}
            vm.snapshots[name] = {"config": config, "snaptime": int(self.clock.now()), "description": description,
                                  "parent": parent, "vmstate": 0}
            vm.config["parent"] = name
            vm.config.pop("lock", None)
        return self._start_task("qmsnapshot", vmid, user, work)

    def snapshots(self, vmid: int) -> list[dict[str, Any]]:
        vm = self.vm(vmid)
        out = [{"name": n, "description": s["description"], "snaptime": s["snaptime"], "vmstate": 0,
                **({"parent": s["parent"]} if s.get("parent") else {})} for n, s in vm.snapshots.items()]
        current = {"name": "current", "description": "You are here!", "running": int(vm.status == "running")}
        if vm.config.get("parent"):
            current["parent"] = vm.config["parent"]
        return [*out, current]

    def rollback(self, vmid: int, name: str, user: str) -> Task:
        vm = self.vm(vmid)

        async def work(task: Task) -> None:
            vm.check_unlocked()
            snap = self.snapshot_of(vm, name)
            if vm.status == "running":
                await self._power_off(vm)
            await self.clock.sleep(SNAPSHOT_S)
            vm.config = {**snap["config"], "parent": name}
        return self._start_task("qmrollback", vmid, user, work)

    def delete_snapshot(self, vmid: int, name: str, user: str) -> Task:
        vm = self.vm(vmid)
        vm.check_unlocked()
        snap = self.snapshot_of(vm, name)

        async def work(task: Task) -> None:
            await self.clock.sleep(SNAPSHOT_S / 2)
            for other in vm.snapshots.values():
                if other.get("parent") == name:
                    other["parent"] = snap.get("parent")
            if vm.config.get("parent") == name:
                vm.config["parent"] = snap.get("parent")
                if not snap.get("parent"):
                    vm.config.pop("parent")
            del vm.snapshots[name]
        return self._start_task("qmdelsnapshot", vmid, user, work)

    @staticmethod
    def snapshot_of(vm: v.VM, name: str) -> dict[str, Any]:
        if name not in vm.snapshots:
            raise PVEError(500, f"snapshot '{name}' does not exist")
        return vm.snapshots[name]
