"""The node and cluster side of the API: version, nodes and their status, cluster status and
resources, next free VMID, storages and their content, tasks."""

from __future__ import annotations

from typing import Any

from labsim.pve import params as p
from labsim.pve.model import HOST_CPUS, HOST_MEMORY, HOST_ROOTFS, ProxmoxVE
from labsim.pve.routes import Call, route
from labsim.pve.snapshots import state_volumes
from labsim.pve.storage import GIB

PVE_VERSION = {"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a8503f96d"}
KERNEL = "Linux 6.8.12-9-pve #1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9 (2025-03-16T19:18Z)"


@route("GET", "/version")
async def version(pve: ProxmoxVE, call: Call) -> dict[str, Any]:
    return dict(PVE_VERSION)


def _node_usage(pve: ProxmoxVE) -> dict[str, Any]:
    running = sum(vm.cpus for vm in pve.vms.values() if vm.status == "running")
    return {
        "cpu": round(min(1.0, 0.01 + running * 0.004), 4),
        "maxcpu": HOST_CPUS,
        "mem": pve.memory_used(),
        "maxmem": HOST_MEMORY,
        "disk": int(HOST_ROOTFS * 0.09),
        "maxdisk": HOST_ROOTFS,
        "uptime": int(pve.clock.now() - pve.started_at) + 86400,
    }


@route("GET", "/nodes")
async def nodes(pve: ProxmoxVE, call: Call) -> list[dict[str, Any]]:
    return [{"node": pve.node, "id": f"node/{pve.node}", "type": "node", "status": "online", "level": "",
             "ssl_fingerprint": "", **_node_usage(pve)}]


@route("GET", "/nodes/{node}/status")
async def node_status(pve: ProxmoxVE, call: Call) -> dict[str, Any]:
    usage = _node_usage(pve)
    return {
        "cpu": usage["cpu"],
        "wait": 0.0006,
        "uptime": usage["uptime"],
        "loadavg": ["0.31", "0.27", "0.22"],
        "kversion": KERNEL,
        "pveversion": f"pve-manager/{PVE_VERSION['version']}/{PVE_VERSION['repoid']}",
        "cpuinfo": {"cpus": HOST_CPUS, "cores": HOST_CPUS // 2, "sockets": 1, "mhz": "3400.000", "hvm": "1",
                    "model": "AMD Ryzen 7 5700G with Radeon Graphics", "user_hz": 100, "flags": "fpu vme de pse"},
        "memory": {"total": usage["maxmem"], "used": usage["mem"], "free": usage["maxmem"] - usage["mem"],
                   "available": usage["maxmem"] - usage["mem"]},
        "swap": {"total": 8 * GIB, "used": 0, "free": 8 * GIB},
        "rootfs": {"total": usage["maxdisk"], "used": usage["disk"], "free": usage["maxdisk"] - usage["disk"],
                   "avail": usage["maxdisk"] - usage["disk"]},
        "ksm": {"shared": 0},
        "boot-info": {"mode": "efi", "secureboot": 0},
        "current-kernel": {"sysname": "Linux", "release": "6.8.12-9-pve", "machine": "x86_64",
                           "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9 (2025-03-16T19:18Z)"},
        "idle": 0,
    }


@route("GET", "/cluster/status")
async def cluster_status(pve: ProxmoxVE, call: Call) -> list[dict[str, Any]]:
    return [{"type": "node", "name": pve.node, "id": f"node/{pve.node}", "ip": pve.config.pve_host, "local": 1,
             "nodeid": 0, "online": 1, "level": ""}]


@route("GET", "/cluster/nextid", vmid=p.integer(100, 999999999))
async def next_id(pve: ProxmoxVE, call: Call) -> str:
    vmid = call.args.get("vmid")
    if vmid is not None:
        if vmid in pve.vms:
            raise p.ParamError({"vmid": f"VM {vmid} already exists"})
        return str(vmid)
    return str(pve.next_id())  # PVE answers a string here


@route("GET", "/cluster/resources", type=p.string(enum=("vm", "storage", "node", "sdn")))
async def resources(pve: ProxmoxVE, call: Call) -> list[dict[str, Any]]:
    kind = call.args.get("type")
    out: list[dict[str, Any]] = []
    if kind in (None, "vm"):
        out += [vm_resource(pve, vm) for vm in sorted(pve.vms.values(), key=lambda vm: vm.vmid)]
    if kind in (None, "node"):
        out += [{"id": f"node/{pve.node}", "type": "node", "node": pve.node, "status": "online", "level": "",
                 "cgroup-mode": 2, **_node_usage(pve)}]
    if kind in (None, "storage"):
        for name in pve.storages:
            s = pve.storage_status(name)
            out.append({"id": f"storage/{pve.node}/{name}", "type": "storage", "storage": name, "node": pve.node,
                        "status": "available", "plugintype": s["type"], "content": s["content"], "shared": 0,
                        "disk": s["used"], "maxdisk": s["total"]})
    return out


def vm_resource(pve: ProxmoxVE, vm: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": f"qemu/{vm.vmid}", "type": "qemu", "vmid": vm.vmid, "name": vm.name, "node": pve.node,
        "status": vm.status, "template": int(vm.is_template), "maxcpu": vm.cpus, "maxmem": vm.memory_mib << 20,
        "maxdisk": vm.disk_bytes(), "disk": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
        **_run_usage(pve, vm),
    }
    if vm.config.get("tags"):
        entry["tags"] = vm.config["tags"]
    if vm.lock:
        entry["lock"] = vm.lock
    return entry


def _run_usage(pve: ProxmoxVE, vm: Any) -> dict[str, Any]:
    if vm.status != "running" or vm.started_at is None:
        return {"cpu": 0, "mem": 0, "uptime": 0}
    share = 0.6 if vm.booted else 0.25
    return {"cpu": 0.02 if vm.booted else 0.9, "mem": int((vm.memory_mib << 20) * share),
            "uptime": max(0, int(pve.clock.now() - vm.started_at))}


# ---------------------------------------------------------------- storage

@route("GET", "/nodes/{node}/storage", content=p.string(), enabled=p.boolean(), storage=p.string(),
       format=p.boolean(), target=p.string())
async def storage_list(pve: ProxmoxVE, call: Call) -> list[dict[str, Any]]:
    wanted = call.args.get("content")
    out = [pve.storage_status(name) for name in pve.storages]
    return [s for s in out if wanted is None or wanted in s["content"].split(",")]


@route("GET", "/nodes/{node}/storage/{storage}")
async def storage_index(pve: ProxmoxVE, call: Call) -> list[dict[str, str]]:
    pve.storage(call.args["storage"])
    return [{"subdir": d} for d in ("content", "download-url", "file-restore", "import-metadata",
                                    "prunebackups", "rrd", "rrddata", "status", "upload")]


@route("GET", "/nodes/{node}/storage/{storage}/status")
async def storage_status(pve: ProxmoxVE, call: Call) -> dict[str, Any]:
    return pve.storage_status(call.args["storage"])


@route("GET", "/nodes/{node}/storage/{storage}/content", content=p.string(), vmid=p.integer(100, 999999999))
async def storage_content(pve: ProxmoxVE, call: Call) -> list[dict[str, Any]]:
    name = call.args["storage"]
    pve.storage(name)
    wanted_vmid, content = call.args.get("vmid"), call.args.get("content")
    if content not in (None, "images") or name == "local":
        return []
    out = []
    for vm in sorted(pve.vms.values(), key=lambda vm: vm.vmid):
        if wanted_vmid not in (None, vm.vmid):
            continue
        for drive in vm.disks().values():
            if drive.storage == name:
                volid = drive.volid
                out.append({"volid": volid, "vmid": vm.vmid, "size": drive.size, "format": "raw",
                            "content": "images", "ctime": 1735689600,
                            **({"parent": volid.split(":")[1].split("/")[0]} if "/" in volid else {})})
        out.extend({"volid": volid, "vmid": vm.vmid, "size": size, "format": "raw", "content": "images",
                    "ctime": 1735689600} for volid, size in state_volumes(vm) if volid.startswith(f"{name}:"))
    return out


# ---------------------------------------------------------------- tasks

@route("GET", "/nodes/{node}/tasks", limit=p.integer(0), start=p.integer(0), vmid=p.integer(100, 999999999),
       typefilter=p.string(), source=p.string(enum=("archive", "active", "all")), errors=p.boolean(),
       userfilter=p.string(), since=p.integer(), until=p.integer(), statusfilter=p.string())
async def task_list(pve: ProxmoxVE, call: Call) -> list[dict[str, Any]]:
    tasks = [t for t in reversed(pve.tasks.tasks.values())
             if call.args.get("vmid") in (None, int(t.id) if t.id.isdigit() else None)
             and call.args.get("typefilter") in (None, t.type)]
    start, limit = call.args.get("start", 0), call.args.get("limit", 50)
    # Listed tasks carry their exit status as "status" once they end, as PVE's task index does.
    return [{**t.view(), **({"status": t.exitstatus} if t.exitstatus else {})} for t in tasks[start:start + limit]]


@route("GET", "/nodes/{node}/tasks/{upid}")
async def task_index(pve: ProxmoxVE, call: Call) -> list[dict[str, str]]:
    pve.tasks.get(call.args["upid"])
    return [{"name": "log"}, {"name": "status"}]


@route("GET", "/nodes/{node}/tasks/{upid}/status")
async def task_status(pve: ProxmoxVE, call: Call) -> dict[str, Any]:
    task = pve.tasks.get(call.args["upid"])
    view = task.view()
    view.pop("endtime", None)
    return view


@route("GET", "/nodes/{node}/tasks/{upid}/log", start=p.integer(0), limit=p.integer(0), download=p.boolean())
async def task_log(pve: ProxmoxVE, call: Call) -> list[dict[str, Any]]:
    task = pve.tasks.get(call.args["upid"])
    lines = [line for text in task.lines for line in text.splitlines()]
    start, limit = call.args.get("start", 0), call.args.get("limit", 50)
    return [{"n": n + 1, "t": t} for n, t in enumerate(lines)][start:start + limit]
