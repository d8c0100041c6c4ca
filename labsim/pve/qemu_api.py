"""The VM side of the API: list/create, config, pending, clone, template, resize, power,
snapshots, destroy, cloud-init dump and the guest agent."""

from __future__ import annotations

from typing import Any

from labsim.pve import agent, cloudinit
from labsim.pve import params as p
from labsim.pve.errors import PVEError
from labsim.pve.model import ProxmoxVE
from labsim.pve.nodes_api import vm_resource
from labsim.pve.routes import Call, route
from labsim.pve.vms import CONFIG_PARAMS, CONFIG_UPDATE_PARAMS

VM_PATH = "/nodes/{node}/qemu/{vmid}"
SKIPLOCK = {"skiplock": p.boolean()}
RESIZE_DISKS = tuple([f"ide{n}" for n in range(4)] + [f"scsi{n}" for n in range(31)]
                     + [f"virtio{n}" for n in range(16)] + [f"sata{n}" for n in range(6)] + ["efidisk0", "tpmstate0"])


@route("GET", "/nodes/{node}/qemu", full=p.boolean())
async def vm_list(pve: ProxmoxVE, call: Call) -> list[dict[str, Any]]:
    out = []
    for vm in sorted(pve.vms.values(), key=lambda vm: vm.vmid):
        entry = vm_resource(pve, vm)
        for key in ("id", "type", "node", "template", "maxcpu"):
            entry.pop(key)
        entry["cpus"] = vm.cpus
        if vm.is_template:
            entry["template"] = 1
        out.append(entry)
    return out


@route("POST", "/nodes/{node}/qemu", vmid=p.VMID, start=p.boolean(), **CONFIG_PARAMS)
async def vm_create(pve: ProxmoxVE, call: Call) -> str:
    options = {k: val for k, val in call.args.items() if k not in ("node", "vmid", "start")}
    return pve.create(call.args["vmid"], options, call.user).upid


@route("GET", VM_PATH)
async def vm_index(pve: ProxmoxVE, call: Call) -> list[dict[str, str]]:
    pve.vm(call.args["vmid"])
    return [{"subdir": d} for d in ("config", "pending", "status", "snapshot", "agent", "clone", "resize",
                                    "template", "cloudinit", "rrd", "rrddata", "firewall")]


@route("GET", VM_PATH + "/config", current=p.boolean(), snapshot=p.string(max_length=40))
async def vm_config(pve: ProxmoxVE, call: Call) -> dict[str, Any]:
    vm = pve.vm(call.args["vmid"])
    if "snapshot" in call.args:
        snap = vm.snapshots.get(call.args["snapshot"])
        if snap is None:
            raise PVEError(500, f"snapshot '{call.args['snapshot']}' does not exist")
        return {**snap["config"], "digest": vm.digest()}
    config = dict(vm.config)
    if not call.args.get("current"):
        config.update(vm.pending)
        for key in vm.pending_delete:
            config.pop(key, None)
    return {**config, "digest": vm.digest()}


@route("PUT", VM_PATH + "/config", **CONFIG_UPDATE_PARAMS)
async def vm_config_set(pve: ProxmoxVE, call: Call) -> None:
    pve.update_config(call.args["vmid"], _options(call), call.user, background=False)


@route("POST", VM_PATH + "/config", background_delay=p.integer(1, 30), **CONFIG_UPDATE_PARAMS)
async def vm_config_set_async(pve: ProxmoxVE, call: Call) -> str:
    options = _options(call)
    options.pop("background_delay", None)
    task = pve.update_config(call.args["vmid"], options, call.user, background=True)
    assert task is not None
    return task.upid


def _options(call: Call) -> dict[str, Any]:
    return {k: val for k, val in call.args.items() if k not in ("node", "vmid")}


@route("GET", VM_PATH + "/pending")
async def vm_pending(pve: ProxmoxVE, call: Call) -> list[dict[str, Any]]:
    return pve.pending(call.args["vmid"])


@route("POST", VM_PATH + "/clone", newid=p.VMID, name=p.string("dns-name"), description=p.string(),
       full=p.boolean(), storage=p.string(), target=p.string(), pool=p.string(), snapname=p.string(max_length=40),
       format=p.string(enum=("raw", "qcow2", "vmdk")), bwlimit=p.integer(0))
async def vm_clone(pve: ProxmoxVE, call: Call) -> str:
    if call.args.get("target") not in (None, pve.node):
        raise PVEError(500, f"Target node '{call.args['target']}' does not exist")
    return pve.clone(call.args["vmid"], call.args["newid"], call.args, call.user).upid


@route("POST", VM_PATH + "/template", disk=p.string())
async def vm_template(pve: ProxmoxVE, call: Call) -> str:
    return pve.template(call.args["vmid"], call.user).upid


@route("PUT", VM_PATH + "/resize", disk=p.string(required=True, enum=RESIZE_DISKS),
       size=p.string(required=True, pattern=r"\+?\d+(\.\d+)?[KMGT]?"), digest=p.string(max_length=40), **SKIPLOCK)
async def vm_resize(pve: ProxmoxVE, call: Call) -> str:
    a = call.args
    return pve.resize(a["vmid"], a["disk"], a["size"], call.user, bool(a.get("skiplock"))).upid


# ---------------------------------------------------------------- power

@route("GET", VM_PATH + "/status")
async def vm_status_index(pve: ProxmoxVE, call: Call) -> list[dict[str, str]]:
    pve.vm(call.args["vmid"])
    return [{"subdir": d} for d in ("current", "start", "stop", "reset", "shutdown", "suspend", "reboot")]


@route("GET", VM_PATH + "/status/current")
async def vm_status(pve: ProxmoxVE, call: Call) -> dict[str, Any]:
    vm = pve.vm(call.args["vmid"])
    entry = vm_resource(pve, vm)
    for key in ("id", "type", "node", "maxcpu"):
        entry.pop(key)
    entry.update(cpus=vm.cpus, qmpstatus=vm.status, ha={"managed": 0})
    if not vm.is_template:
        entry.pop("template")
    if vm.agent_enabled:
        entry["agent"] = 1
    if vm.status == "running":
        entry.update({"pid": 4000 + vm.vmid, "running-machine": "pc-i440fx-9.2+pve1", "running-qemu": "9.2.0"})
    return entry


@route("POST", VM_PATH + "/status/start", timeout=p.integer(0), machine=p.string(), migratedfrom=p.string(),
       migration_type=p.string(enum=("secure", "insecure")), stateuri=p.string(max_length=128), **SKIPLOCK)
async def vm_start(pve: ProxmoxVE, call: Call) -> str:
    return pve.start(call.args["vmid"], call.user, bool(call.args.get("skiplock"))).upid


@route("POST", VM_PATH + "/status/stop", timeout=p.integer(0), keepActive=p.boolean(),
       **{"overrule-shutdown": p.boolean()}, **SKIPLOCK)
async def vm_stop(pve: ProxmoxVE, call: Call) -> str:
    return pve.stop(call.args["vmid"], call.user, bool(call.args.get("skiplock"))).upid


@route("POST", VM_PATH + "/status/shutdown", timeout=p.integer(0), forceStop=p.boolean(), keepActive=p.boolean(),
       **SKIPLOCK)
async def vm_shutdown(pve: ProxmoxVE, call: Call) -> str:
    a = call.args
    return pve.shutdown(a["vmid"], call.user, a.get("timeout"), bool(a.get("forceStop")),
                        bool(a.get("skiplock"))).upid


@route("POST", VM_PATH + "/status/reboot", timeout=p.integer(0))
async def vm_reboot(pve: ProxmoxVE, call: Call) -> str:
    return pve.reboot(call.args["vmid"], call.user, call.args.get("timeout")).upid


@route("DELETE", VM_PATH, purge=p.boolean(), **{"destroy-unreferenced-disks": p.boolean()}, **SKIPLOCK)
async def vm_destroy(pve: ProxmoxVE, call: Call) -> str:
    return pve.destroy(call.args["vmid"], call.user, bool(call.args.get("skiplock"))).upid


# ---------------------------------------------------------------- snapshots

@route("GET", VM_PATH + "/snapshot")
async def snapshot_list(pve: ProxmoxVE, call: Call) -> list[dict[str, Any]]:
    return pve.snapshots(call.args["vmid"])


@route("POST", VM_PATH + "/snapshot", snapname=p.string(required=True, max_length=40),
       description=p.string(), vmstate=p.boolean())
async def snapshot_create(pve: ProxmoxVE, call: Call) -> str:
    a = call.args
    return pve.snapshot(a["vmid"], a["snapname"], a.get("description", ""), call.user, bool(a.get("vmstate"))).upid


@route("GET", VM_PATH + "/snapshot/{snapname}")
async def snapshot_index(pve: ProxmoxVE, call: Call) -> list[dict[str, str]]:
    pve.snapshot_of(pve.vm(call.args["vmid"]), call.args["snapname"])
    return [{"subdir": "rollback"}, {"subdir": "config"}]


@route("POST", VM_PATH + "/snapshot/{snapname}/rollback", start=p.boolean())
async def snapshot_rollback(pve: ProxmoxVE, call: Call) -> str:
    return pve.rollback(call.args["vmid"], call.args["snapname"], call.user, bool(call.args.get("start"))).upid


@route("DELETE", VM_PATH + "/snapshot/{snapname}", force=p.boolean())
async def snapshot_delete(pve: ProxmoxVE, call: Call) -> str:
    return pve.delete_snapshot(call.args["vmid"], call.args["snapname"], call.user).upid


# ---------------------------------------------------------------- cloud-init

@route("GET", VM_PATH + "/cloudinit/dump", type=p.string(required=True, enum=("user", "network", "meta")))
async def cloudinit_dump(pve: ProxmoxVE, call: Call) -> str:
    vm = pve.vm(call.args["vmid"])
    return cloudinit.dump(vm, pve.guest(vm), call.args["type"])


# ---------------------------------------------------------------- guest agent

@route("GET", VM_PATH + "/agent")
async def agent_index(pve: ProxmoxVE, call: Call) -> list[dict[str, str]]:
    pve.vm(call.args["vmid"])
    return [{"name": n} for n in ("get-host-name", "get-osinfo", "info", "network-get-interfaces", "ping")]


@route("POST", VM_PATH + "/agent/ping")
async def agent_ping(pve: ProxmoxVE, call: Call) -> dict[str, Any]:
    vm = pve.vm(call.args["vmid"])
    agent.check_available(vm, pve.agent_running(vm))
    return {"result": {}}


@route("GET", VM_PATH + "/agent/network-get-interfaces")
async def agent_interfaces(pve: ProxmoxVE, call: Call) -> dict[str, Any]:
    vm = pve.vm(call.args["vmid"])
    agent.check_available(vm, pve.agent_running(vm))
    return agent.network_interfaces(vm, pve.guest(vm))


@route("GET", VM_PATH + "/agent/get-osinfo")
async def agent_osinfo(pve: ProxmoxVE, call: Call) -> dict[str, Any]:
    vm = pve.vm(call.args["vmid"])
    agent.check_available(vm, pve.agent_running(vm))
    return {"result": dict(agent.OS_INFO)}


@route("GET", VM_PATH + "/agent/get-host-name")
async def agent_hostname(pve: ProxmoxVE, call: Call) -> dict[str, Any]:
    vm = pve.vm(call.args["vmid"])
    agent.check_available(vm, pve.agent_running(vm))
    return agent.host_name(pve.guest(vm))
