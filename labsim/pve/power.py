"""VM power: start (QEMU up, then the guest boots and becomes an SSH node), stop, shutdown
with timeout and forceStop, reboot, and resuming running VMs after a lab restart.

Mixed into ``ProxmoxVE`` (model.py), whose VMs, clock, faults and tasks it uses.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from labsim.pve import vms as v
from labsim.pve.errors import PVEError, TaskError
from labsim.pve.tasks import Task

log = logging.getLogger(__name__)

# Modelled seconds: QEMU starting, Ubuntu's boot to cloud-init done, the guest agent after it.
QEMU_START_S, GUEST_BOOT_S, AGENT_AFTER_BOOT_S = 2.0, 25.0, 3.0
GUEST_POWERDOWN_S, DEFAULT_SHUTDOWN_TIMEOUT_S, STOP_S = 6.0, 180, 1.0


class PowerMixin:
    async def resume(self) -> None:
        """After a restart the VMs run on as on a host that kept them up: booted guests get their
        SSH nodes back before the lab reports ready; guests that were mid-boot finish booting."""
        for vm in self.vms.values():
            if vm.status != "running":
                continue
            spec = self.node_spec(vm) if vm.booted else None
            if spec is not None:
                await self._node_call("start_node", spec)
            if vm.booted:  # the guest, and the agent in it, kept running
                self._agents.add(vm.vmid)
            else:
                self._boot_later(vm)

    # As qemu-server: start, stop and shutdown check locks and state in their worker, so a
    # locked VM gives a UPID whose task ends in "VM 120 is locked (...)".

    def start(self, vmid: int, user: str, skiplock: bool = False) -> Task:
        vm = self.vm(vmid)

        async def work(task: Task) -> None:
            vm.check_unlocked(skiplock)
            if vm.is_template:
                raise TaskError("you can't start a vm if it's a template")
            if vm.status == "running":
                raise TaskError(f"VM {vmid} already running")
            await self.clock.sleep(QEMU_START_S, f"pve start {vmid}")
            self._power_on(vm)
            task.log(f"generating cloud-init ISO\nstarted VM {vmid}")
        return self._start_task("qmstart", vmid, user, work)

    def agent_running(self, vm: v.VM) -> bool:
        """The guest agent answers: it has started in the running guest and no fault holds it down
        (so clearing the fault heals it)."""
        return vm.vmid in self._agents and vm.vmid not in self.faults.agent_down

    def _power_on(self, vm: v.VM) -> None:
        self._apply_pending(vm)
        vm.status, vm.started_at, vm.booted = "running", self.clock.now(), False
        self._agents.discard(vm.vmid)
        self._boot_later(vm)

    def _boot_later(self, vm: v.VM) -> None:
        boot = asyncio.get_running_loop().create_task(self._boot(vm))
        self._boots[vm.vmid] = boot
        boot.add_done_callback(lambda _: self._boots.pop(vm.vmid, None) if self._boots.get(vm.vmid) is boot else None)

    async def _boot(self, vm: v.VM) -> None:
        await self.clock.sleep(GUEST_BOOT_S, f"vm {vm.vmid} guest boot")
        spec = self.node_spec(vm)
        if spec is not None:
            try:
                await self._node_call("start_node", spec)
            except Exception:  # the VM runs even when its guest cannot serve SSH
                log.exception("VM %s: SSH node did not start", vm.vmid)
        vm.booted = True
        self.save()
        await self.clock.sleep(AGENT_AFTER_BOOT_S, f"vm {vm.vmid} guest agent start")
        self._agents.add(vm.vmid)

    async def _power_off(self, vm: v.VM) -> None:
        boot = self._boots.pop(vm.vmid, None)
        if boot is not None:  # a boot cut short may have half-started the node: let it unwind first
            boot.cancel()
            await asyncio.wait([boot])
        vm.status, vm.started_at, vm.booted = "stopped", None, False
        self._agents.discard(vm.vmid)
        await self._node_call("stop_node", vm.vmid)

    def stop(self, vmid: int, user: str, skiplock: bool = False) -> Task:
        vm = self.vm(vmid)

        async def work(task: Task) -> None:
            vm.check_unlocked(skiplock)
            if vm.status != "running":
                raise TaskError(f"VM {vmid} not running")
            await self.clock.sleep(STOP_S, f"pve stop {vmid}")
            await self._power_off(vm)
        return self._start_task("qmstop", vmid, user, work)

    def shutdown(self, vmid: int, user: str, timeout: int | None, force_stop: bool, skiplock: bool = False) -> Task:
        vm = self.vm(vmid)

        async def work(task: Task) -> None:
            vm.check_unlocked(skiplock)
            await self._guest_shutdown(vm, task, timeout, force_stop)
        return self._start_task("qmshutdown", vmid, user, work)

    async def _guest_shutdown(self, vm: v.VM, task: Task, timeout: int | None, force_stop: bool) -> None:
        if vm.status != "running":
            raise TaskError(f"VM {vm.vmid} not running")
        limit = DEFAULT_SHUTDOWN_TIMEOUT_S if timeout is None else timeout
        needed = self.faults.slow_shutdown.get(vm.vmid, GUEST_POWERDOWN_S if vm.booted else 0.5)
        if needed <= limit:
            await self.clock.sleep(needed, f"vm {vm.vmid} guest shutdown")
        else:
            await self.clock.sleep(limit, f"vm {vm.vmid} guest shutdown (timed out)")
            if not force_stop:
                raise TaskError("VM quit/powerdown failed - got timeout")
            task.log("VM still running - terminating now with SIGTERM")
        await self._power_off(vm)

    def reboot(self, vmid: int, user: str, timeout: int | None) -> Task:
        vm = self.vm(vmid)
        vm.check_unlocked()
        if vm.status != "running":
            raise PVEError(500, f"VM {vmid} not running")

        async def work(task: Task) -> None:
            await self._guest_shutdown(vm, task, timeout, force_stop=False)
            await self.clock.sleep(QEMU_START_S, f"pve reboot {vmid}")
            self._power_on(vm)
        return self._start_task("qmreboot", vmid, user, work)

    def node_spec(self, vm: v.VM) -> Any | None:
        """The SSH node a booted VM becomes, or None without a static IP and SSH keys."""
        guest = self.guest(vm)
        if guest.ip is None or not guest.authorized_keys:
            return None
        from labsim.node.spec import NodeSpec  # H2's model; imported late: labsim.node is optional here

        return NodeSpec(vmid=vm.vmid, name=vm.name, ip=guest.ip, user=guest.user,
                        authorized_keys=guest.authorized_keys, cores=vm.cpus, memory_mib=vm.memory_mib,
                        disk_bytes=vm.disk_bytes(), searchdomain=guest.searchdomain,
                        nameservers=guest.nameservers)

    async def _node_call(self, method: str, *args: Any) -> None:
        host = self.node_host()
        if host is not None:
            await getattr(host, method)(*args)
