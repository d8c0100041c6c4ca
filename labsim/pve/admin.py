"""The lab's admin endpoint, outside PVE's namespace: ``/labsim/status``, ``/labsim/faults``
(inject, list, clear) and ``/labsim/clock`` (advance lab time). Authenticated with the API token.

POST /labsim/faults takes JSON such as ``{"fault": "fail_next_task", "kind": "qmclone"}``,
``{"fault": "hold_lock", "vmid": 120, "lock": "backup"}``, ``{"fault": "slow_shutdown", "vmid": 120,
"seconds": 600}``, ``{"fault": "agent_down", "vmid": 120}``, ``{"fault": "storage_full", "storage":
"local-lvm"}``, ``{"fault": "drop_requests", "count": 2}``, ``{"fault": "request_delay", "seconds": 1.5}``,
and the nodes' SSH faults (labsim.node.faults): ``{"fault": "ssh_drop", "vmid": 120, "command": "k3s"}``,
``{"fault": "ssh_fail", "vmid": 120, "command": "apt-get", "stderr": "...", "exit_status": 100}``,
``{"fault": "ssh_slow", "vmid": 120, "seconds": 5}``, ``{"fault": "ssh_refuse", "vmid": 120}``,
``{"fault": "ssh_k3s_never_ready", "vmid": 121, "version": "v1.35.0+k3s1"}`` (that node's k3s agent at
that version never brings its Node back Ready: a failed upgrade),
and the NAS's (labsim.nas): ``{"fault": "nas_down"}`` (SSH and NFS stop answering), ``{"fault": "nas_up"}``,
``{"fault": "nas_full"}`` (its volume out of space: pods' writes into the export fail), ``{"fault": "nas_full_clear"}``,
and the ACME server down: ``{"fault": "acme_down"}`` (every Pebble of the lab, or ``"server": URL``),
and the cluster's (labsim.kube.faults): ``{"fault": "disk_full", "node": "k3s-worker-01", "percent": 95}``,
``{"fault": "disk_clear", "node": "k3s-worker-01"}`` (that node's disk only),
``{"fault": "crash_loop", "namespace": "apps", "pod": "web-0"}``, ``{"fault": "crash_loop_clear", ...}``,
and the ntfy server (labsim.apps.ntfy) down: ``{"fault": "ntfy_down"}``, ``{"fault": "ntfy_up"}``.
DELETE clears them all (PVE's, the nodes', the NAS's, full disks, and a stopped Pebble or ntfy starts again).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from labsim.kube import faults as kube_faults
from labsim.kube.store import StoreError
from labsim.pve.errors import PVEError
from labsim.pve.model import ProxmoxVE

if TYPE_CHECKING:
    from labsim.node.faults import NodeFaults


def inject(pve: ProxmoxVE, fault: dict[str, Any]) -> None:
    """Apply one fault description (the admin endpoint's JSON body)."""
    kind = fault.get("fault")
    try:
        if str(kind).startswith("ssh_"):
            _inject_ssh(pve.node_host().faults, str(kind), fault)
        else:
            _inject_pve(pve, kind, fault)
    except (KeyError, ValueError, TypeError) as error:
        raise PVEError(400, f"fault '{kind}': missing or bad field {error}") from None


def _inject_pve(pve: ProxmoxVE, kind: Any, fault: dict[str, Any]) -> None:
    if kind == "fail_next_task":
        pve.fail_next_task(str(fault["kind"]), fault.get("message"))
    elif kind == "hold_lock":
        pve.hold_lock(int(fault["vmid"]), str(fault.get("lock", "backup")))
    elif kind == "release_lock":
        pve.release_lock(int(fault["vmid"]))
    elif kind == "slow_shutdown":
        pve.faults.slow_shutdown[int(fault["vmid"])] = float(fault["seconds"])
    elif kind == "agent_down":
        pve.faults.agent_down.add(int(fault["vmid"]))
    elif kind == "storage_full":
        pve.storage(str(fault["storage"]))
        pve.faults.storage_full.add(str(fault["storage"]))
    elif kind == "drop_requests":
        pve.faults.drop_requests = int(fault.get("count", 1))
    elif kind == "request_delay":
        pve.faults.request_delay = float(fault["seconds"])
    else:
        raise PVEError(400, f"unknown fault '{kind}'")


def _inject_ssh(faults: NodeFaults, kind: str, fault: dict[str, Any]) -> None:
    vmid = int(fault["vmid"])
    if kind == "ssh_drop":
        faults.drop_next(vmid, str(fault.get("command", "")))
    elif kind == "ssh_fail":
        faults.fail_next(vmid, str(fault["command"]), str(fault.get("stderr", "")), int(fault.get("exit_status", 1)))
    elif kind == "ssh_slow":
        faults.slow(vmid, float(fault["seconds"]))
    elif kind == "ssh_refuse":
        faults.refuse_connections(vmid)
    elif kind == "ssh_k3s_never_ready":
        faults.never_ready(vmid, str(fault["version"]))
    else:
        raise PVEError(400, f"unknown fault '{kind}'")


async def _acme_down(pve: ProxmoxVE, server: Any) -> None:
    pebble = pve.node_host().lab.pebble
    directories = pebble.directories if pebble is not None else []
    chosen = [d for d in directories if server in (None, d.url)]
    if not chosen:
        raise PVEError(400, f"fault 'acme_down': no ACME directory {server or ''} in this lab".replace("  ", " "))
    for directory in chosen:
        await pebble.stop_directory(directory)


_KUBE_FAULTS = ("disk_full", "disk_clear", "crash_loop", "crash_loop_clear")


def _clusters(pve: ProxmoxVE) -> list[Any]:
    registry = getattr(pve.node_host().lab, "clusters", None)
    return list(registry.clusters.values()) if registry is not None else []


def _clear_disks(pve: ProxmoxVE) -> None:
    for cluster in _clusters(pve):
        kube_faults.disk_clear(cluster)


def _kube_fault(clusters: list[Any], fault: dict[str, Any]) -> None:
    kind = fault["fault"]
    if not clusters:
        raise PVEError(400, f"fault '{kind}': no cluster runs in this lab")
    cluster = next((c for c in clusters if c.name == fault.get("cluster")), clusters[0])
    try:
        if kind == "disk_full":
            kube_faults.disk_full(cluster, str(fault["node"]), float(fault.get("percent", 95)))
        elif kind == "disk_clear":
            kube_faults.disk_clear(cluster, str(fault["node"]))
        elif kind == "crash_loop":
            kube_faults.crash_loop(cluster, str(fault["namespace"]), str(fault["pod"]), int(fault.get("exit_code", 1)))
        else:
            kube_faults.crash_loop_clear(cluster, str(fault["namespace"]), str(fault["pod"]))
    except (KeyError, ValueError, TypeError) as error:
        raise PVEError(400, f"fault '{kind}': missing or bad field {error}") from None
    except StoreError as error:
        raise PVEError(400, f"fault '{kind}': {error.message}") from None


async def _lab_fault(pve: ProxmoxVE, body: dict[str, Any]) -> bool:
    """The lab-level and cluster faults (the NAS, ACME, ntfy, disks, crash loops); False for the others."""
    lab, kind = pve.node_host().lab, body.get("fault")
    if kind in ("nas_down", "nas_up") and getattr(lab, "nas", None) is not None:
        await lab.nas.set_reachable(kind == "nas_up")
    elif kind in ("nas_full", "nas_full_clear") and getattr(lab, "nas", None) is not None:
        lab.nas.full = kind == "nas_full"
    elif kind == "acme_down":
        await _acme_down(pve, body.get("server"))
    elif kind in ("ntfy_down", "ntfy_up"):
        await _ntfy(pve, up=kind == "ntfy_up")
    elif kind in _KUBE_FAULTS:
        _kube_fault(_clusters(pve), body)
    else:
        return False
    return True


async def _ntfy(pve: ProxmoxVE, *, up: bool) -> None:
    ntfy = pve.node_host().lab.ntfy
    if ntfy is None:
        raise PVEError(400, "fault 'ntfy_down': this lab has no ntfy server (observability.ntfy.server)")
    await (ntfy.start() if up else ntfy.close())


def add_routes(app: web.Application, server: Any) -> None:
    pve: ProxmoxVE = server.pve

    def guarded(handler: Any) -> Any:
        async def endpoint(request: web.Request) -> web.Response:
            server.auth.authenticate_token(request)
            return web.json_response({"data": await handler(request)})
        return endpoint

    async def status(request: web.Request) -> Any:
        return server.status()

    def nas() -> Any:
        return getattr(pve.node_host().lab, "nas", None)

    async def faults(request: web.Request) -> Any:
        pebble, lab_ntfy = pve.node_host().lab.pebble, pve.node_host().lab.ntfy
        found = {**pve.faults.view(), "task_failures": pve.tasks.failures, "ssh": pve.node_host().faults.view()}
        found["disk_full"] = sorted(n for c in _clusters(pve) for n in kube_faults.full_disks(c))
        return {**found, "nas_down": nas() is not None and not nas().reachable,
                "nas_full": nas() is not None and nas().full,
                "acme_down": [d.url for d in pebble.stopped] if pebble is not None else [],
                "ntfy_down": lab_ntfy is not None and not lab_ntfy.running}

    async def add_fault(request: web.Request) -> Any:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise PVEError(400, "expected a JSON object") from None
        if not (isinstance(body, dict) and await _lab_fault(pve, body)):
            inject(pve, body)
        return await faults(request)

    async def clear_faults(request: web.Request) -> Any:
        pve.clear_faults()
        pve.node_host().faults.clear()
        _clear_disks(pve)
        if nas() is not None:
            await nas().set_reachable(True)
            nas().full = False
        pebble = pve.node_host().lab.pebble
        if pebble is not None:
            await pebble.restart_stopped()
        if pve.node_host().lab.ntfy is not None:
            await _ntfy(pve, up=True)
        return None

    async def clock(request: web.Request) -> Any:
        body = await request.json()
        pve.clock.advance(float(body.get("advance", 0)))
        return {"now": pve.clock.now()}

    app.router.add_get("/labsim/status", guarded(status))
    app.router.add_get("/labsim/faults", guarded(faults))
    app.router.add_post("/labsim/faults", guarded(add_fault))
    app.router.add_delete("/labsim/faults", guarded(clear_faults))
    app.router.add_post("/labsim/clock", guarded(clock))
