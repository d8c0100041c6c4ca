"""OS maintenance of the lab's nodes (notebook 08): security updates, with a drain and a reboot.

``patch_status`` shows, per node, whether unattended-upgrades is on (Ubuntu's
``/etc/apt/apt.conf.d/20auto-upgrades`` and its service), the updates pending and whether the
node asks for a restart (``/var/run/reboot-required``). ``os_patch`` then takes the nodes that
need it one at a time, servers first: cordon, drain, ``apt-get upgrade``, reboot only when the
node asks for it, wait until the Node is back Ready (a new boot id after a reboot) with its pods,
uncordon.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

import pandas as pd

from labkit import drain, kube, upgrade
from labkit.changes import Change, Check, StepTimer, untimed
from labkit.errors import SshError
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
