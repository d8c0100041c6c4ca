"""k3s on the lab's VMs over SSH (notebook 02): preflight, config.yaml, server, agents, kubeconfig.

Settings live in ``/etc/rancher/k3s/config.yaml`` rather than installer flags, so a later
upgrade (which re-runs the installer) cannot drop them. The installer is k3s' documented one
(``curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION=... sh -s - server``) with the version
pinned by the lab file. Agents join with ``K3S_URL`` and the node token read from the server,
which goes into their config.yaml (0600), never onto a command line; neither token is ever
printed (both are registered for redaction).
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from labkit import polling, secrets
from labkit.changes import Change, Check, Drift, Plan, StepTimer, drift_keys, untimed
from labkit.errors import K3sError, SshError
from labkit.kube import Cluster
from labkit.params import Lab, Node
from labkit.ssh import HostKeyRefused, Probe, Result, Session, SshTimeout

INSTALLER = "curl -sfL https://get.k3s.io"
CONFIG = "/etc/rancher/k3s/config.yaml"
NODE_TOKEN = "/var/lib/rancher/k3s/server/node-token"
K3S_YAML = "/etc/rancher/k3s/k3s.yaml"
LABEL_PREFIX = "homelab-notebooks"
UPGRADE_HINT = "upgrades go through notebook 08-upgrade-k3s (drain, upgrade, uncordon), not a bootstrap re-run"


def service(node: Node) -> str:
    return "k3s" if node.role == "server" else "k3s-agent"


# -- preflight ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeFacts:
    name: str
    role: str
    reachable: str  # "yes", or why not
    ssh_failure: type[SshError] | None = None  # why not, as a class (slow, host key refused...)
    os: str = "?"
    os_version: str = "?"
    cloud_init: str = "?"
    cpus: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    k3s_version: str | None = None  # None: not installed
    k3s_active: bool = False
    config: dict = field(default_factory=dict)  # config.yaml as found, without its token
    token_matches: bool | None = None  # a server's cluster token is the lab's (None: no cluster there)


PROBES = {
    "os": "cat /etc/os-release",
    "cloud_init": "cloud-init status",
    "cpus": "nproc",
    "memory": "free -b",
    "disk": "df -B1 /",
    "k3s": "k3s --version",
    "k3s active": "systemctl is-active k3s",
    "k3s-agent active": "systemctl is-active k3s-agent",
    "config": f"sudo -n cat {CONFIG}",
    "token": f"sudo -n cat {NODE_TOKEN}",  # compared with k3s.token, never kept
}


def gather_facts(ssh: Session, lab: Lab, timeout: float = 60) -> list[NodeFacts]:
    """Probe every node over SSH, nodes concurrently; read-only."""
    probes = ssh.collect([n.name for n in lab.nodes], PROBES, timeout=timeout)
    return [_facts(lab, node, probes[node.name]) for node in lab.nodes]


def _facts(lab: Lab, node: Node, probe: Probe) -> NodeFacts:
    if probe.error:
        return NodeFacts(node.name, node.role, reachable=probe.error, ssh_failure=probe.failure)
    release = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', probe.stdout("os"), re.M))
    return NodeFacts(
        name=node.name, role=node.role, reachable="yes", os=release.get("ID", "unknown"),
        os_version=release.get("VERSION_ID", "?"),
        cloud_init=probe.stdout("cloud_init").strip().removeprefix("status:").strip() or "unknown",
        cpus=int(probe.stdout("cpus").strip() or 0), memory_bytes=_free_total(probe.stdout("memory")),
        disk_bytes=_df_size(probe.stdout("disk")), k3s_version=parse_version(probe.stdout("k3s")),
        k3s_active=probe.stdout(f"{service(node)} active").strip() == "active",
        config=_without_token(_yaml_mapping(probe.stdout("config"))),
        token_matches=_token_matches(lab, probe.stdout("token").strip()))


def _token_matches(lab: Lab, token: str) -> bool | None:
    if not token:
        return None
    secrets.register(token)
    return token.rsplit(":", 1)[-1] == lab.secret(lab.k3s.token)


def _yaml_mapping(text: str) -> dict:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return {"<unreadable>": True}  # shows as drift: rewriting it is the fix
    return doc if isinstance(doc, dict) else {}


def _without_token(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "token"}


def parse_version(text: str) -> str | None:
    """``k3s version v1.34.3+k3s1 (48ffa7b6)`` -> ``v1.34.3+k3s1``."""
    match = re.search(r"k3s version (v\d+\.\d+\.\d+\+k3s\d+)", text)
    return match.group(1) if match else None


def _free_total(text: str) -> int:
    match = re.search(r"^Mem:\s+(\d+)", text, re.M)
    return int(match.group(1)) if match else 0


def _df_size(text: str) -> int:
    lines = text.strip().splitlines()
    fields = lines[-1].split() if len(lines) > 1 else []
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0


@dataclass(frozen=True)
class Preflight:
    facts: list[NodeFacts]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> pd.DataFrame:
        rows = [{"node": f.name, "role": f.role, "ssh": _ssh_state(f),
                 "os": f"{f.os} {f.os_version}", "cloud-init": f.cloud_init,
                 "cpus": f.cpus, "memory_gib": round(f.memory_bytes / 1024**3, 1),
                 "disk_gib": round(f.disk_bytes / 1024**3, 1),
                 "k3s": (f"{f.k3s_version} ({'active' if f.k3s_active else 'inactive'})"
                         if f.k3s_version else "not installed"),
                 "problems": "; ".join(p.split(": ", 1)[1] for p in self.problems if p.startswith(f.name + ":"))}
                for f in self.facts]
        return pd.DataFrame(rows)


def preflight(ssh: Session, lab: Lab, timeout: float = 60) -> Preflight:
    """What each node is, against what the lab file plans; nothing is changed. A node whose
    commands take longer than ``timeout`` seconds is reported as slow."""
    facts = gather_facts(ssh, lab, timeout)
    problems = []
    for f in facts:
        node = lab.node(f.name)
        if f.reachable != "yes":
            problems.append(_unreachable(f))
            continue
        if f.os not in ("ubuntu", "debian"):
            problems.append(f"{f.name}: OS {f.os} {f.os_version} is not the Ubuntu/Debian the lab is built on")
        if f.cloud_init != "done":
            problems.append(f"{f.name}: cloud-init is '{f.cloud_init}', not done; wait for it or read "
                            "/var/log/cloud-init-output.log")
        if f.cpus != node.cores:
            problems.append(f"{f.name}: {f.cpus} CPUs, the lab file plans {node.cores}")
        if f.memory_bytes < node.memory_mib * 1024**2 * 0.85:  # the kernel keeps some memory for itself
            problems.append(f"{f.name}: {f.memory_bytes / 1024**3:.1f} GiB memory, the lab file plans "
                            f"{node.memory_mib / 1024:.1f} GiB")
        if f.disk_bytes < node.disk_gib * 1024**3 * 0.9:  # file system overhead
            problems.append(f"{f.name}: {f.disk_bytes / 1024**3:.1f} GiB root disk, the lab file plans "
                            f"{node.disk_gib} GiB")
        if f.k3s_version not in (None, lab.k3s.version):
            problems.append(f"{f.name}: k3s {f.k3s_version} is installed, the lab pins {lab.k3s.version}; "
                            + UPGRADE_HINT)
        if f.token_matches is False:
            problems.append(token_drift(lab, f.name))
    return Preflight(facts, problems)


def _ssh_state(f: NodeFacts) -> str:
    if f.reachable == "yes":
        return "ok"
    if f.ssh_failure is not None and issubclass(f.ssh_failure, HostKeyRefused):
        return "host key refused"
    return "slow" if f.ssh_failure is not None and issubclass(f.ssh_failure, SshTimeout) else "unreachable"


def _unreachable(f: NodeFacts) -> str:
    """Why a node could not be asked, said as what happened: a host key refused or a slow node
    are not a missing VM."""
    state = _ssh_state(f)
    if state == "host key refused":  # the message names both fingerprints and what to do
        return f"{f.name}: {f.reachable.removeprefix(f.name + ' ')}"
    if state == "slow":
        return (f"{f.name}: answers over SSH, but too slowly ({f.reachable.split(': ', 1)[-1]}); the VM is up and "
                "overloaded or hung: look at it (uptime, free -m, the PVE console) and re-run")
    return f"{f.name}: not reachable over SSH; run 01-provision-vms first ({f.reachable})"


def token_drift(lab: Lab, server: str) -> str:
    return (f"{server}: the cluster's token is not the one k3s.token ({lab.k3s.token}) resolves to; the server was "
            "installed with another token, and agents joining with the lab's would be refused. Restore the "
            "original secret, or reinstall the server (k3s-uninstall.sh) to start a new cluster")


# -- plan --------------------------------------------------------------------------------------------


def plan(lab: Lab, facts: list[NodeFacts]) -> Plan[Change]:
    """Install the server, join agents; a node running the pinned version is left alone.
    A node at another version stops the plan (see 08-upgrade-k3s)."""
    changes = []
    for f in facts:
        node = lab.node(f.name)
        if f.k3s_version not in (None, lab.k3s.version):
            raise K3sError(f"{f.name} runs k3s {f.k3s_version}, the lab pins {lab.k3s.version}: " + UPGRADE_HINT)
        drift = config_drift(lab, node, f.config)
        if f.k3s_version == lab.k3s.version and f.k3s_active and drift:
            changes.append(Change(f.name, "drift",
                                  f"config.yaml differs ({drift_keys(drift)}); fixing it restarts {service(node)}"))
        elif f.k3s_version == lab.k3s.version and f.k3s_active:
            changes.append(Change(f.name, "unchanged", f"k3s {f.k3s_version} {node.role}, active"))
        elif f.reachable != "yes":
            changes.append(Change(f.name, "install" if node.role == "server" else "join",
                                  "once the VM exists and answers SSH (see 01-provision-vms)"))
        elif node.role == "server":
            changes.append(Change(f.name, "install", f"k3s {lab.k3s.version} server (config.yaml, installer)"))
        else:
            changes.append(Change(f.name, "join", f"k3s {lab.k3s.version} agent of {lab.master.name}"))
    return Plan(changes)


# -- configuration -------------------------------------------------------------------------------------


def server_config(lab: Lab, node: Node) -> dict:
    """``/etc/rancher/k3s/config.yaml`` of a server. Holds the cluster token: write it 0600."""
    config = {
        "token": lab.secret(lab.k3s.token),
        "tls-san": list(dict.fromkeys([str(node.ip), node.name, *lab.k3s.tls_san])),
        "write-kubeconfig-mode": "0600",
        "disable": list(lab.k3s.disable),
        "node-label": _labels(lab, node),
    }
    for key, net in (("cluster-cidr", lab.k3s.cluster_cidr), ("service-cidr", lab.k3s.service_cidr)):
        if net is not None:  # unset: k3s' own defaults, and config.yaml stays as it was
            config[key] = str(net)
    if lab.k3s.cluster_init:
        config["cluster-init"] = True
    if lab.k3s.cluster_init and lab.backup is not None:  # k3s' own scheduled etcd snapshots (notebook 07 lists them)
        config["etcd-snapshot-schedule-cron"] = lab.backup.etcd.schedule
        config["etcd-snapshot-retention"] = lab.backup.etcd.retention
    if node is not lab.master:
        config["server"] = f"https://{lab.master.ip}:6443"
    return config


def desired_config(lab: Lab, node: Node, token: str) -> dict:
    return server_config(lab, node) if node.role == "server" else agent_config(lab, node, token)


def config_drift(lab: Lab, node: Node, found: dict) -> Drift:
    """Keys of config.yaml whose value differs from the lab file's (empty when it matches)."""
    want = _without_token(desired_config(lab, node, token=""))
    return {k: (found.get(k), want.get(k)) for k in want.keys() | found.keys() if want.get(k) != found.get(k)}


def agent_config(lab: Lab, node: Node, token: str) -> dict:
    """An agent's config.yaml: the node token lives here (0600), not on a command line."""
    return {"token": token, "node-label": _labels(lab, node)}


def _labels(lab: Lab, node: Node) -> list[str]:
    return [f"{LABEL_PREFIX}/lab={lab.name}", f"{LABEL_PREFIX}/role={node.role}"]


def render(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def write_config(ssh: Session, node: Node, config: dict) -> None:
    """Write config.yaml as root, mode 0600, without the content ever reaching a command line."""
    ssh.run(node.name, f"mkdir -p {Path(CONFIG).parent} && umask 077 && tee {CONFIG} >/dev/null && chmod 600 {CONFIG}",
            sudo=True, input=render(config))


# -- install and join ------------------------------------------------------------------------------------


def installer_command(lab: Lab, role: str, env: dict[str, str] | None = None, version: str | None = None) -> str:
    """k3s' documented installer, pinned to ``version`` (default: the lab's); ``env`` goes to the
    script (K3S_URL...)."""
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in {"INSTALL_K3S_VERSION": version or lab.k3s.version,
                                                             **(env or {})}.items())
    return f"{INSTALLER} | {assigns} sh -s - {role}"


def install_server(ssh: Session, lab: Lab, node: Node, timeout: float = 600) -> None:
    """config.yaml, then the pinned installer; returns once the k3s service is active. Servers
    after the first join it through ``server:`` in their config (embedded etcd)."""
    write_config(ssh, node, server_config(lab, node))
    installed = ssh.run(node.name, installer_command(lab, "server"), sudo=True, timeout=timeout, check=False)
    wait_active(ssh, node, timeout=timeout, installer=installed)


def node_token(ssh: Session, lab: Lab) -> str:
    """The server's node token (registered for redaction, never shown)."""
    token = ssh.run(lab.master.name, f"cat {NODE_TOKEN}", sudo=True).stdout.strip()
    secrets.register(token)
    check_token(lab, token)
    return token


def check_token(lab: Lab, token: str) -> None:
    """The cluster's token must be the lab's (``K10<ca hash>::server:<token>``, or the bare token)."""
    if token.rsplit(":", 1)[-1] != lab.secret(lab.k3s.token):
        raise K3sError(token_drift(lab, lab.master.name))


def join_agents(ssh: Session, lab: Lab, names: list[str], timeout: float = 600, step: StepTimer = untimed,
                joined: Callable[[str], None] = lambda name: None) -> None:
    """Join agents concurrently (a thread each, their SSH work interleaved on labkit's loop);
    each must end with an active k3s-agent service (then ``joined`` hears its name). Every
    agent's failure is reported."""
    if not names:
        return
    token = node_token(ssh, lab)

    def join(node: Node) -> None:
        with step("join", node.name):
            write_config(ssh, node, agent_config(lab, node, token))
            command = installer_command(lab, "agent", {"K3S_URL": f"https://{lab.master.ip}:6443"})
            installed = ssh.run(node.name, command, sudo=True, timeout=timeout, check=False)
            wait_active(ssh, node, timeout=timeout, installer=installed)
        joined(node.name)

    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        futures = [pool.submit(join, lab.node(n)) for n in names]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise K3sError(f"{len(errors)} agents did not join:\n" + "\n".join(str(e) for e in errors))


def wait_active(ssh: Session, node: Node, timeout: float = 120, installer: Result | None = None) -> None:
    """Poll ``systemctl is-active`` (k3s reports readiness to systemd); a failed unit raises with
    the journal's last lines, which say why (wrong token, server unreachable...), and the
    installer's own errors (``curl | sh`` has no pipefail in dash: the pipe's status is sh's)."""
    unit, deadline, pause = service(node), time.monotonic() + timeout, polling.pauses(most=2.0)
    state = ""
    if installer is not None and not (installer.ok and _unit_installed(ssh, node)):
        deadline = 0  # the installer failed (or installed nothing): say so now rather than wait
    while time.monotonic() < deadline:
        state = ssh.run(node.name, f"systemctl is-active {unit}", check=False).stdout.strip()
        if state == "active":
            return
        if state == "failed":
            break
        time.sleep(next(pause))
    journal = ssh.run(node.name, f"journalctl -u {unit} -n 8 --no-pager", sudo=True, check=False).stdout
    said = f"\nthe installer said (exit {installer.exit_status}):\n{installer.stderr.strip()[-600:] or '(nothing)'}" \
        if installer is not None else ""
    raise K3sError(f"{node.name}: {unit} is {state or 'not active'} after the install; its journal says:\n"
                   f"{secrets.redact(journal.strip())}{secrets.redact(said)}")


def _unit_installed(ssh: Session, node: Node) -> bool:
    return ssh.run(node.name, f"test -f /etc/systemd/system/{service(node)}.service", check=False).ok


def versions(ssh: Session, lab: Lab) -> dict[str, str | None]:
    """The k3s version installed on each node (None: not installed)."""
    results = ssh.fan_out([n.name for n in lab.nodes], "k3s --version", check=False)
    return {name: parse_version(r.stdout) if r.ok else None for name, r in results.items()}


# -- kubeconfig ----------------------------------------------------------------------------------------


def fetch_kubeconfig(ssh: Session, lab: Lab, *, dry_run: bool = False, step: StepTimer = untimed) -> Path:
    """k3s.yaml from the server, its server rewritten from 127.0.0.1 to the master's address and
    its names to the lab's, written to the lab's ``kubeconfig`` path with mode 0600 (not in a dry run)."""
    if dry_run:
        return lab.kubeconfig
    with step("kubeconfig", lab.master.name):
        text = ssh.run(lab.master.name, f"cat {K3S_YAML}", sudo=True).stdout
    config = rewrite_kubeconfig(yaml.safe_load(text), lab)
    for user in config.get("users", []):
        for key, value in (user.get("user") or {}).items():
            secrets.register(str(value))
            if key.endswith("-data"):  # and the PEM inside, as a cell that decodes it would print it
                with suppress(ValueError):
                    secrets.register(base64.b64decode(str(value)).decode())
    write_private(lab.kubeconfig, yaml.safe_dump(config, sort_keys=False))
    return lab.kubeconfig


def rewrite_kubeconfig(config: dict, lab: Lab) -> dict:
    if not config or not config.get("clusters"):
        raise K3sError(f"{lab.master.name}: {K3S_YAML} holds no cluster; is the k3s server running?")
    server = f"https://{lab.master.ip}:6443"
    for cluster in config["clusters"]:
        cluster["name"] = lab.name
        cluster["cluster"]["server"] = server
    for user in config.get("users", []):
        user["name"] = lab.name
    for context in config.get("contexts", []):
        context["name"] = lab.name
        context["context"].update(cluster=lab.name, user=lab.name)
    config["current-context"] = lab.name
    return config


def write_private(path: Path, text: str) -> None:
    """Create or replace a file readable by its owner only (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def bootstrap(ssh: Session, lab: Lab, plan_: Plan[Change], timeout: float = 600, reconcile: bool = False,
              dry_run: bool = False, step: StepTimer = untimed,
              applied: Callable[[list[Change]], None] = lambda changes: None) -> list[Change]:
    """Apply a k3s plan: servers first, one at a time, then the agents concurrently; config drift
    only with ``reconcile``; nothing in a dry run. Returns what was done; ``applied`` hears of each
    change once made, before any later failure."""
    if dry_run:
        return []
    todo = {c.target: c for c in plan_.changes() if c.is_change and (c.action != "drift" or reconcile)}
    agents = [n.name for n in lab.agents if n.name in todo and todo[n.name].action == "join"]
    try:
        if todo and todo.get(lab.master.name, Change("", "")).action != "install":
            node_token(ssh, lab)  # checks the running cluster's token before touching it
        for server in lab.servers:  # one at a time: etcd members join one by one
            if server.name in todo and todo[server.name].action == "install":
                with step("install server", server.name):
                    install_server(ssh, lab, server, timeout)
                applied([todo[server.name]])
        join_agents(ssh, lab, agents, timeout, step, joined=lambda name: applied([todo[name]]))
        for name in (n for n, c in todo.items() if c.action == "drift"):
            with step("reconcile config", name):
                rewrite_config(ssh, lab, lab.node(name), timeout)
            applied([todo[name]])
    except SshError as exc:
        raise K3sError(f"k3s bootstrap stopped: {exc}") from None
    return list(todo.values())


def rewrite_config(ssh: Session, lab: Lab, node: Node, timeout: float = 120) -> None:
    """Write the lab file's config.yaml and restart k3s so that it takes effect."""
    token = lab.secret(lab.k3s.token) if node.role == "server" else node_token(ssh, lab)
    write_config(ssh, node, desired_config(lab, node, token))
    ssh.run(node.name, f"systemctl restart {service(node)}", sudo=True, timeout=timeout)
    wait_active(ssh, node, timeout=timeout)


# -- verify ------------------------------------------------------------------------------------------------


def verify(ssh: Session, lab: Lab, cluster: Cluster) -> list[Check]:
    """Read the cluster back and compare it with the lab file: k3s and config.yaml as planned,
    every node Ready at the pinned version, system pods running, the API server's certificate
    valid for the master's address, the kubeconfig private."""
    left = [c for c in plan(lab, preflight(ssh, lab).facts).changes() if c.is_change]
    names = sorted(n.name for n in lab.nodes)
    nodes = cluster.nodes.to_dict("records")
    ready = sorted(n["name"] for n in nodes if n["ready"])
    versions = sorted({n["version"] for n in nodes})
    phases = set(cluster.system_pods["phase"])
    mode = lab.kubeconfig.stat().st_mode & 0o777 if lab.kubeconfig.exists() else None
    return [
        Check("k3s and config.yaml match the lab file", not left,
              "; ".join(f"{c.target}: {c.detail}" for c in left) or "no drift"),
        Check("every lab node is Ready", ready == names, f"{len(ready)} Ready"),
        Check(f"kubelet versions = pin {lab.k3s.version}", versions == [lab.k3s.version], ", ".join(versions)),
        Check("kube-system pods are running", bool(phases) and phases <= {"Running", "Succeeded"},
              f"{len(cluster.system_pods)} pods"),
        Check("API server certificate covers the master IP", str(lab.master.ip) in cluster.sans,
              ", ".join(cluster.sans)),
        Check("kubeconfig is private (0600)", mode == 0o600, f"mode {mode:o}" if mode is not None else "missing"),
    ]

