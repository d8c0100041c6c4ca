"""Maintenance of the lab's nodes (notebook 08): OS security updates with a drain and a reboot;
removing an agent and joining it again.

``patch_status`` shows, per node, whether unattended-upgrades is on (Ubuntu's
``/etc/apt/apt.conf.d/20auto-upgrades`` and its service), the updates pending and whether the
node asks for a restart (``/var/run/reboot-required``). ``os_patch`` then takes the nodes that
need it one at a time, servers first: cordon, drain, ``apt-get upgrade``, reboot only when the
node asks for it, wait until the Node is back Ready (a new boot id after a reboot) with its pods,
uncordon.

``remove_nodes`` drains an agent, deletes its Node and uninstalls k3s; only with ``confirm`` is its
VM destroyed too (01's destroy path) and its pinned host key forgotten. ``rejoin_nodes`` is 01 and
02 for those nodes: the VM provisioned if it is missing, k3s joined at the pin, the Node Ready.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

import pandas as pd

from labkit import drain, k3s, kube, proxmox, upgrade
from labkit.changes import Change, Check, Plan, StepTimer, untimed
from labkit.errors import LabError, SshError
from labkit.params import Lab
from labkit.ssh import Session

AUTO_UPGRADES = "/etc/apt/apt.conf.d/20auto-upgrades"
REBOOT_REQUIRED = "/var/run/reboot-required"
PROBES = {
    "auto": f"cat {AUTO_UPGRADES}",
    "service": "systemctl is-enabled unattended-upgrades",
    "pending": "apt list --upgradable 2>/dev/null",
    "reboot": f"cat {REBOOT_REQUIRED}.pkgs 2>/dev/null || test -f {REBOOT_REQUIRED}",
}
STATUS_COLUMNS = ["node", "unattended_upgrades", "pending", "packages", "reboot_required"]
PATCH_COLUMNS = ["node", "upgraded", "rebooted", "evicted", "result"]


@dataclass(frozen=True)
class PatchState:
    node: str
    unattended: str  # "on", or what is off
    pending: list[str]
    reboot_required: bool

    @property
    def needs_patch(self) -> bool:
        return bool(self.pending) or self.reboot_required


def patch_state(ssh: Session, lab: Lab) -> list[PatchState]:
    """Read each node's package state (read-only, nodes concurrently)."""
    probes = ssh.collect([n.name for n in lab.nodes], PROBES)
    states = []
    for node in lab.nodes:
        p = probes[node.name]
        if p.error:
            states.append(PatchState(node.name, f"unknown ({p.error})", [], False))
            continue
        auto = p.stdout("auto")
        on = 'Unattended-Upgrade "1"' in auto and p.stdout("service").strip() == "enabled"
        unattended = "on" if on else ("off: service " + (p.stdout("service").strip() or "missing")
                                      if 'Unattended-Upgrade "1"' in auto else f"off: {AUTO_UPGRADES} does not enable it")
        pending = [line.split("/", 1)[0] for line in p.stdout("pending").splitlines()[1:] if "/" in line]
        states.append(PatchState(node.name, unattended, pending, p.results["reboot"].ok))
    return states


def patch_status(ssh: Session, lab: Lab) -> pd.DataFrame:
    rows = [{"node": s.node, "unattended_upgrades": s.unattended, "pending": len(s.pending),
             "packages": " ".join(s.pending), "reboot_required": s.reboot_required} for s in patch_state(ssh, lab)]
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)


def unattended_check(status: pd.DataFrame) -> Check:
    """unattended-upgrades on every node (what 02's cloud image keeps on: security fixes daily)."""
    off = status[status["unattended_upgrades"] != "on"]
    return Check("unattended-upgrades on every node", off.empty and not status.empty,
                 "; ".join(f"{r.node}: {r.unattended_upgrades}" for r in off.itertuples()) or f"{len(status)} nodes")


def os_patch(ssh: Session, lab: Lab, *, enabled: bool, drain_timeout_s: float = 300, ready_timeout_s: float = 300,
             dry_run: bool = False, step: StepTimer = untimed,
             applied: Callable[[list[Change]], None] = lambda changes: None) -> pd.DataFrame:
    """Patch the nodes that need it, one at a time (servers first); nothing unless ``enabled`` (the
    notebook's ``os_patch``), nothing in a dry run. One row per node patched."""
    if not enabled or dry_run:
        return pd.DataFrame(columns=PATCH_COLUMNS)
    api = kube.connect(lab.kubeconfig)
    states = {s.node: s for s in patch_state(ssh, lab)}
    order = [n.name for n in sorted(lab.nodes, key=lambda n: n.role != "server") if states[n.name].needs_patch]
    rows = []
    for name in order:
        with step("cordon", name):
            drain.cordon(api, name)
        with step("drain", name):
            evicted = drain.drain(api, name, timeout=drain_timeout_s, retry_s=max(5 * upgrade.pace(lab), 0.05))
        with step("apt-get upgrade", name):
            ssh.run(name, "apt-get upgrade -y", sudo=True, timeout=ready_timeout_s)
        rebooted = ssh.run(name, f"test -f {REBOOT_REQUIRED}", check=False).ok
        if rebooted:
            with step("reboot", name):
                _reboot(ssh, lab, api, name, ready_timeout_s)
        with step("uncordon", name):
            upgrade.wait_pods(api, name, ready_timeout_s)
            drain.uncordon(api, name)
        rows.append({"node": name, "upgraded": len(states[name].pending), "rebooted": rebooted,
                     "evicted": len(evicted), "result": "patched"})
        applied([Change(name, "patch", f"{len(states[name].pending)} package(s)" + (", rebooted" if rebooted else ""),
                        needs_reboot=rebooted)])
    return pd.DataFrame(rows, columns=PATCH_COLUMNS)


def _reboot(ssh: Session, lab: Lab, api, name: str, timeout: float) -> None:
    """Reboot the node and wait until its Node is Ready with a new boot id."""
    before = kube.client.CoreV1Api(api).read_node(name).status.node_info.boot_id
    with suppress(SshError):  # the connection may go down with the guest before the answer
        ssh.run(name, "reboot", sudo=True, check=False)
    upgrade.wait_node(api, name, lambda node: node.status.node_info.boot_id != before,
                      what=f"{name} back Ready after its reboot", timeout=timeout, pause=upgrade.pace(lab))


# -- remove and rejoin ---------------------------------------------------------------------------------

REMOVE_COLUMNS = ["node", "evicted", "node_deleted", "k3s_uninstalled", "vm_destroyed", "result"]
REJOIN_COLUMNS = ["node", "vm", "k3s", "ready", "result"]


def _agents_only(lab: Lab, names: list[str], what: str) -> None:
    servers = [n for n in names if lab.node(n).role == "server"]
    if servers:
        raise LabError(f"{what}: {', '.join(servers)} is a server; only agents are removed and rejoined here (the "
                       "control plane and etcd live on the servers)")


def remove_nodes(ssh: Session, lab: Lab, names: list[str], *, confirm: bool = False, drain_timeout_s: float = 300,
                 dry_run: bool = False, step: StepTimer = untimed,
                 applied: Callable[[list[Change]], None] = lambda changes: None) -> pd.DataFrame:
    """Take agents out of the cluster: drain, delete the Node, uninstall k3s; with ``confirm``, also
    destroy the VM. What is gone already is skipped, so a re-run changes nothing."""
    _agents_only(lab, names, "remove")
    if dry_run or not names:
        return pd.DataFrame(columns=REMOVE_COLUMNS)
    api = kube.connect(lab.kubeconfig)
    core = kube.client.CoreV1Api(api)
    installed = upgrade.installed_versions(ssh, lab)
    rows = []
    for name in names:
        evicted, deleted, uninstalled = [], False, False
        if name in {n.metadata.name for n in core.list_node().items}:
            with step("drain", name):
                drain.cordon(api, name)
                evicted = drain.drain(api, name, timeout=drain_timeout_s, retry_s=max(5 * upgrade.pace(lab), 0.05))
            with step("delete node", name):
                core.delete_node(name)  # k3s then forgets the node's password: the same name may join again
            deleted = True
        if installed.get(name):
            with step("uninstall k3s", name):
                ssh.run(name, "/usr/local/bin/k3s-agent-uninstall.sh", sudo=True, timeout=300)
            uninstalled = True
        destroyed = confirm and _destroy_vm(ssh, lab, name, step)
        done = deleted or uninstalled or destroyed
        rows.append({"node": name, "evicted": len(evicted), "node_deleted": deleted, "k3s_uninstalled": uninstalled,
                     "vm_destroyed": destroyed, "result": "removed" if done else "already removed"})
        if done:
            applied([Change(name, "remove", "drained, Node deleted, k3s uninstalled" + (", VM destroyed" if destroyed
                                                                                        else ""))])
    return pd.DataFrame(rows, columns=REMOVE_COLUMNS)


def _destroy_vm(ssh: Session, lab: Lab, name: str, step: StepTimer) -> bool:
    """01's destroy path (for a VM no longer in the lab: here, the lab without this node), then
    forget its host key: a VM made again under the name presents a new one."""
    api = proxmox.connect(lab)
    without = lab.model_copy(update={"nodes": [n for n in lab.nodes if n.name != name]})
    plan = Plan([vm for vm in proxmox.plan(api, without, destroy=[name]).items if vm.action == "destroy"])
    if not plan.items:
        return False
    with step("destroy VM", name):
        proxmox.apply(api, without, plan, confirm_destroy=True)
    ssh.forget_host(name)
    return True


def rejoin_nodes(ssh: Session, lab: Lab, names: list[str], *, timeout: float = 600, dry_run: bool = False,
                 step: StepTimer = untimed,
                 applied: Callable[[list[Change]], None] = lambda changes: None) -> pd.DataFrame:
    """01 and 02 for these agents: the VM made (or started) as the lab file says, k3s joined at the
    pin, the Node Ready. A node already in the cluster is left alone."""
    _agents_only(lab, names, "rejoin")
    if dry_run or not names:
        return pd.DataFrame(columns=REJOIN_COLUMNS)
    pve = proxmox.connect(lab)
    vms = Plan([vm for vm in proxmox.plan(pve, lab).items if vm.name in names and vm.action != "drift"])
    done = proxmox.apply(pve, lab, vms, step=step, applied=applied)
    made = {c.target.split(" (")[0] for c in done.changes}  # targets read "name (vmid)"
    proxmox.wait_agents(pve, lab, names, timeout=timeout)
    ssh.reachable(names, timeout=timeout)
    joins = Plan([c for c in k3s.plan(lab, k3s.preflight(ssh, lab).facts).changes() if c.target in names])
    joined = k3s.bootstrap(ssh, lab, joins, timeout=timeout, step=step, applied=applied)
    api = kube.connect(lab.kubeconfig)
    for name in names:
        with step("Ready", name):
            upgrade.wait_node(api, name, lambda node: True, what=f"{name} Ready", timeout=timeout,
                              pause=upgrade.pace(lab))
    vm_done, k3s_done = made, {c.target for c in joined}
    return pd.DataFrame([{"node": n, "vm": "made" if n in vm_done else "kept", "k3s": "joined" if n in k3s_done else
                          "kept", "ready": True, "result": "rejoined" if {n} & (vm_done | k3s_done) else "unchanged"}
                         for n in names], columns=REJOIN_COLUMNS)
