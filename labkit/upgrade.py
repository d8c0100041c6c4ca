"""Rolling k3s upgrades (notebook 08): the lab file's ``k3s.version`` is the target.

``preflight`` reads every node (installed version, kubelet version, Ready, the k3s unit's
flags and environment), refuses the known traps before anything changes (a downgrade, a skipped
minor unless allowed, an agent left ahead of a server, a node not Ready, installer flags a re-run
would drop), names the PodDisruptionBudgets that would hold a drain and the single-replica
workloads that will be down while their node drains, and takes an etcd snapshot, listed, before
anything is upgraded. ``upgrade`` then takes the servers one at a time (quorum kept), then the
agents ``max_unavailable`` at a time: cordon, drain (evictions honouring budgets), k3s' own
installer pinned to the target (every setting stays in config.yaml, which is not touched), wait
for the node Ready at the new version with its pods back, uncordon. A node that does not come
back stops the run, cordoned and named; with ``rollback_on_failure`` its previous version is
installed again. A re-run plans only what is left, so resuming is running 08 again.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from labkit import availability, drain, k3s, kube
from labkit.changes import Change, Check, Plan, StepTimer, untimed
from labkit.errors import KubeError, LabError
from labkit.params import Lab, Node
from labkit.ssh import Session

RESUME = "labkit run --only 08"
SNAPSHOT_PREFIX = "pre-upgrade"
_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)\+k3s(\d+)$")
PHASES = ("cordon", "drain", "upgrade", "ready", "uncordon")


class UpgradeError(LabError):
    pass


def version_key(text: str) -> tuple[int, int, int, int]:
    match = _VERSION.match(text)
    if not match:
        raise UpgradeError(f"not a k3s version: {text!r} (expected vX.Y.Z+k3sN)")
    major, minor, patch, revision = map(int, match.groups())
    return major, minor, patch, revision


def pace(lab: Lab) -> float:
    """Lab seconds -> wall seconds: the embedded lab runs its clock ``time_scale`` times as fast."""
    return lab.embedded.time_scale if lab.kind == "embedded" and lab.embedded is not None else 1.0


def probe_interval(lab: Lab) -> float:
    """The probe's period: 200 ms of lab time (at least 20 ms of wall time, to stay a light load)."""
    return max(0.2 * pace(lab), 0.02)


# -- preflight ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeState:
    name: str
    role: str
    installed: str | None  # `k3s --version` on the node; None: not installed or not reachable
    kubelet: str | None  # what the Node reports
    ready: bool
    cordoned: bool
    settings: list[str]  # config.yaml's keys: what the upgrade keeps
    flags: list[str]  # the unit's ExecStart arguments after the role (a bare installer re-run drops them)
    env: list[str]  # the unit's environment file's variables (the same)
    target: str
    reachable: str = "yes"

    @property
    def action(self) -> str:
        return "at target" if self.installed == self.target else "upgrade"


@dataclass
class Preflight:
    target: str
    nodes: list[NodeState]
    selected: list[str]
    problems: list[str]
    budgets: pd.DataFrame
    single_replicas: pd.DataFrame
    snapshot: str | None = None
    snapshots: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def todo(self) -> list[str]:
        """Nodes to upgrade, in order: servers (as the lab file lists them), then agents."""
        ordered = sorted(self.nodes, key=lambda s: s.role != "server")
        return [s.name for s in ordered if s.name in self.selected and s.action == "upgrade"]

    def summary(self) -> str:
        if not self.todo:
            return f"every node already runs k3s {self.target}: nothing to upgrade"
        return f"{len(self.todo)} node(s) to upgrade to k3s {self.target}, in this order: {' → '.join(self.todo)}"

    def table(self) -> pd.DataFrame:
        rows = [{"node": s.name, "role": s.role, "installed": s.installed or "-", "kubelet": s.kubelet or "-",
                 "target": s.target, "ready": s.ready, "cordoned": s.cordoned,
                 "action": s.action if s.name in self.selected else "not selected",
                 "settings kept (config.yaml)": ", ".join(s.settings) or "-",
                 "problems": "; ".join(p.split(": ", 1)[1] for p in self.problems if p.startswith(s.name + ":"))}
                for s in self.nodes]
        return pd.DataFrame(rows)

    def plan(self) -> Plan[Change]:
        states = {s.name: s for s in self.nodes}
        todo = self.todo
        changes = [Change(n, "upgrade", f"k3s {states[n].installed} → {self.target} (cordon, drain, installer, "
                                        "Ready, uncordon)") for n in todo]
        changes += [Change(s.name, "unchanged", f"k3s {s.installed}") for s in self.nodes if s.name not in todo]
        return Plan(changes)


def preflight(ssh: Session, lab: Lab, *, nodes: list[str] | None = None, allow_minor_skip: bool = False,
              snapshot_first: bool = True, dry_run: bool = False) -> Preflight:
    """Read the lab and refuse the traps; nothing changes but the etcd snapshot, taken last, only
    when every check passed and there is something to upgrade (never in a dry run)."""
    selected = [lab.node(n).name for n in nodes] if nodes else [n.name for n in lab.nodes]
    api, table, unreadable = _cluster(lab)
    states = node_states(ssh, lab, table)
    problems = unreadable + (skew_problems(lab, states, selected, allow_minor_skip) + health_problems(states)
                             + kept_setting_problems(states, selected))
    todo_nodes = [s.name for s in states if s.name in selected and s.action == "upgrade"]
    if snapshot_first and todo_nodes and not lab.k3s.cluster_init:
        problems.append(f"{lab.master.name}: snapshot_first needs embedded etcd (k3s.cluster_init: true); back up "
                        "/var/lib/rancher/k3s/server/db by hand and set snapshot_first=False")
    pre = Preflight(lab.k3s.version, states, selected, problems,
                    budgets(api, todo_nodes) if api else _EMPTY_BUDGETS, single_replicas(api) if api else _EMPTY_SINGLES)
    if pre.ok and pre.todo and snapshot_first and not dry_run:
        try:
            pre.snapshot, pre.snapshots = take_snapshot(ssh, lab)
        except UpgradeError as exc:
            pre.problems.append(str(exc))
    return pre


def installed_versions(ssh: Session, lab: Lab) -> dict[str, str | None]:
    """`k3s --version` per node; None where k3s is not installed or the node does not answer."""
    probes = ssh.collect([n.name for n in lab.nodes], {"k3s": "k3s --version"})
    return {name: None if p.error else k3s.parse_version(p.stdout("k3s")) for name, p in probes.items()}


def cluster_nodes(lab: Lab) -> pd.DataFrame:
    """``kube.node_table`` of the lab, empty when its API cannot be read (no cluster yet: a dry run)."""
    return _cluster(lab)[1]


def _cluster(lab: Lab) -> tuple[client.ApiClient | None, pd.DataFrame, list[str]]:
    """The API client, the nodes table, and why the API could not be read (as a problem)."""
    try:
        api = kube.connect(lab.kubeconfig)
        return api, kube.node_table(api), []
    except KubeError as exc:
        return None, pd.DataFrame(columns=kube.NODE_COLUMNS), [f"{lab.master.name}: the cluster's API cannot be "
                                                                 f"read ({exc})"]


def node_states(ssh: Session, lab: Lab, nodes: pd.DataFrame) -> list[NodeState]:
    """Each node as SSH and the API (``nodes``: ``kube.node_table``) show it."""
    facts = {f.name: f for f in k3s.gather_facts(ssh, lab)}
    reachable = [n.name for n in lab.nodes if facts[n.name].reachable == "yes"]
    units = ssh.run_many({n: _unit_command(lab.node(n)) for n in reachable}, sudo=True, check=False)
    table = nodes.set_index("name")
    states = []
    for node in lab.nodes:
        f = facts[node.name]
        known = node.name in table.index
        flags, env = _unit_settings(units[node.name].stdout) if node.name in units else ([], [])
        states.append(NodeState(
            node.name, node.role, f.k3s_version, table.loc[node.name, "version"] if known else None,
            bool(known and table.loc[node.name, "ready"]), bool(known and table.loc[node.name, "unschedulable"]),
            sorted(f.config), flags, env, lab.k3s.version, f.reachable))
    return states


ENV_MARK = "# labkit: environment file"


def _unit_command(node: Node) -> str:
    unit = f"/etc/systemd/system/{k3s.service(node)}.service"
    return f"cat {unit}; echo '{ENV_MARK}'; cat {unit}.env 2>/dev/null || true"


def _unit_settings(text: str) -> tuple[list[str], list[str]]:
    """The unit's ExecStart arguments after ``k3s server|agent``, and its environment file's names
    (values are never kept: K3S_TOKEN may be one of them)."""
    unit, _, env = text.partition(ENV_MARK)
    flags: list[str] = []
    for line in unit.replace("\\\n", " ").splitlines():
        if line.startswith("ExecStart="):
            words = shlex.split(line.removeprefix("ExecStart="))
            flags = words[2:] if len(words) > 1 and words[1] in ("server", "agent") else words[1:]
    names = [line.split("=", 1)[0].strip() for line in env.splitlines() if "=" in line and not line.startswith("#")]
    return flags, names


def skew_problems(lab: Lab, states: list[NodeState], selected: list[str], allow_minor_skip: bool) -> list[str]:
    """Target against each node: newer (or equal), one minor at a time; and after the run no agent
    ahead of any server (k3s' and Kubernetes' skew policy)."""
    target = version_key(lab.k3s.version)
    problems = []
    for s in states:
        if s.installed is None:
            if s.reachable == "yes":
                problems.append(f"{s.name}: k3s is not installed; run 02-bootstrap-k3s first")
            continue
        have = version_key(s.installed)
        if have > target:
            problems.append(f"{s.name}: runs k3s {s.installed}, newer than the pin {lab.k3s.version}: k3s does not "
                            "support downgrades; restore the etcd snapshot taken before the upgrade (07-backup-restore)"
                            " or pin the version the node runs")
        elif have[0] != target[0] or (target[1] - have[1] > 1 and not allow_minor_skip):
            problems.append(f"{s.name}: k3s {s.installed} → {lab.k3s.version} skips a minor version; upgrade one "
                            f"minor at a time (pin v{have[0]}.{have[1] + 1}.x first), or set allow_minor_skip=True")
    after = {s.name: lab.k3s.version if s.name in selected else s.installed for s in states if s.installed}
    servers = [s.name for s in states if s.role == "server" and s.name in after]
    for s in states:
        if s.role != "agent" or s.name not in after or not servers:
            continue
        behind = min(servers, key=lambda name: version_key(after[name]))
        if version_key(after[s.name]) > version_key(after[behind]):
            problems.append(f"{s.name}: would run k3s {after[s.name]} while the server {behind} runs "
                            f"{after[behind]}; agents are never ahead of servers: upgrade {behind} first "
                            f"(select it too, or leave `nodes` empty)")
    return problems


def health_problems(states: list[NodeState]) -> list[str]:
    problems = []
    for s in states:
        if s.reachable != "yes":
            problems.append(f"{s.name}: not reachable over SSH ({s.reachable})")
        elif s.installed and not s.ready:
            problems.append(f"{s.name}: the Node is not Ready; every node must be Ready before an upgrade "
                            f"(`journalctl -u k3s{'-agent' if s.role == 'agent' else ''}` on it says why)")
    return problems


def kept_setting_problems(states: list[NodeState], selected: list[str]) -> list[str]:
    """Settings a re-run of the installer would drop: flags on the unit's ExecStart and K3S_*
    variables other than those labkit passes again (K3S_URL for agents)."""
    problems = []
    for s in states:
        passed_again = {"K3S_URL"} if s.role == "agent" else set()
        lost_env = [name for name in s.env if name not in passed_again]
        if s.name in selected and s.action == "upgrade" and (s.flags or lost_env):
            problems.append(f"{s.name}: k3s was installed with {' '.join(s.flags + lost_env)} on the installer's "
                            "command line; re-running the installer drops them. Move them into "
                            "/etc/rancher/k3s/config.yaml (02-bootstrap-k3s keeps every setting there) first")
    return problems


def take_snapshot(ssh: Session, lab: Lab) -> tuple[str, pd.DataFrame]:
    """``k3s etcd-snapshot save`` on the master, then ``ls``: the new snapshot's name, and the listing."""
    prefix = f"{SNAPSHOT_PREFIX}-{re.sub(r'[^a-z0-9]+', '-', lab.k3s.version.lower()).strip('-')}"
    master = lab.master.name
    saved = ssh.run(master, f"k3s etcd-snapshot save --name {prefix}", sudo=True, timeout=300, check=False)
    if not saved.ok:
        raise UpgradeError(f"{master}: etcd snapshot failed (exit {saved.exit_status}): "
                           f"{(saved.stderr or saved.stdout).strip()[-400:]}; nothing was upgraded")
    listing = snapshot_table(ssh.run(master, "k3s etcd-snapshot ls", sudo=True, check=False).stdout)
    mine = listing[listing["name"].str.startswith(prefix + "-")] if not listing.empty else listing
    if mine.empty:
        raise UpgradeError(f"{master}: the etcd snapshot {prefix} was saved but is not listed by "
                           "`k3s etcd-snapshot ls`; nothing was upgraded")
    return str(mine.iloc[-1]["name"]), listing


def snapshot_table(text: str) -> pd.DataFrame:
    """`k3s etcd-snapshot ls` (Name Location Size Created) as a table, oldest first."""
    rows = [line.split() for line in text.strip().splitlines()[1:] if line.strip()]
    return pd.DataFrame([r[:4] for r in rows if len(r) >= 4], columns=["name", "location", "size", "created"])


_EMPTY_BUDGETS = pd.DataFrame(columns=["namespace", "name", "min_available", "max_unavailable", "allowed_disruptions",
                                       "pods_on_nodes_to_drain", "blocks"])
_EMPTY_SINGLES = pd.DataFrame(columns=["namespace", "kind", "name"])


def budgets(api: client.ApiClient, nodes: list[str]) -> pd.DataFrame:
    """Every PodDisruptionBudget with its allowed disruptions and how many of its pods run on the
    nodes to drain; ``blocks``: none allowed while it covers such a pod (the drain will wait)."""
    policy, core = client.PolicyV1Api(api), client.CoreV1Api(api)
    pods = kube.request("list pods", lambda: core.list_pod_for_all_namespaces()).items
    rows = []
    for pdb in kube.request("list PodDisruptionBudgets",
                         lambda: policy.list_pod_disruption_budget_for_all_namespaces()).items:
        selector = pdb.spec.selector.to_dict() if pdb.spec.selector else {}
        covered = [p for p in pods if p.metadata.namespace == pdb.metadata.namespace and p.spec.node_name in nodes
                   and matches(selector, p.metadata.labels or {})]
        allowed = (pdb.status.disruptions_allowed or 0) if pdb.status else 0
        rows.append({"namespace": pdb.metadata.namespace, "name": pdb.metadata.name,
                     "min_available": pdb.spec.min_available, "max_unavailable": pdb.spec.max_unavailable,
                     "allowed_disruptions": allowed, "pods_on_nodes_to_drain": len(covered),
                     "blocks": allowed == 0 and bool(covered)})
    return pd.DataFrame(rows, columns=_EMPTY_BUDGETS.columns)


def single_replicas(api: client.ApiClient) -> pd.DataFrame:
    """Deployments and StatefulSets of one replica that no budget covers: down while their node drains."""
    apps, policy = client.AppsV1Api(api), client.PolicyV1Api(api)
    pdbs = kube.request("list PodDisruptionBudgets", lambda: policy.list_pod_disruption_budget_for_all_namespaces()).items
    workloads = [("Deployment", d) for d in kube.request("list Deployments",
                                                      lambda: apps.list_deployment_for_all_namespaces()).items]
    workloads += [("StatefulSet", s) for s in kube.request("list StatefulSets",
                                                        lambda: apps.list_stateful_set_for_all_namespaces()).items]
    rows = [{"namespace": w.metadata.namespace, "kind": kind, "name": w.metadata.name}
            for kind, w in workloads if (w.spec.replicas or 0) == 1 and not any(
                p.metadata.namespace == w.metadata.namespace and p.spec.selector
                and matches(p.spec.selector.to_dict(), w.spec.template.metadata.labels or {}) for p in pdbs)]
    return pd.DataFrame(rows, columns=_EMPTY_SINGLES.columns)


def matches(selector: dict, labels: dict[str, str]) -> bool:
    """A LabelSelector (as the client's ``to_dict()``) against labels; an empty one selects all."""
    if any(labels.get(k) != v for k, v in (selector.get("match_labels") or {}).items()):
        return False
    for expr in selector.get("match_expressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if not {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False):
            return False
    return True


# -- the availability probe -------------------------------------------------------------------------


def probe_for(lab: Lab, pre: Preflight, target: str = "", *, dry_run: bool = False) -> availability.Probe | None:
    """The probe to run during the upgrade: of ``target`` (a URL), or, when it is empty, of a probe
    workload made for the purpose (``availability.probe_workload``). None when nothing will be
    upgraded (or in a dry run): then nothing is made."""
    if dry_run or not pre.ok or not pre.todo:
        return None
    url = target or availability.probe_workload(kube.connect(lab.kubeconfig), lab)
    return availability.Probe(url, interval=probe_interval(lab))


def remove_probe(lab: Lab, target: str, outcome: Outcome) -> None:
    """Remove the probe workload if this run made it (``target`` empty and an upgrade ran)."""
    if not target and outcome.runs:
        availability.remove_probe_workload(kube.connect(lab.kubeconfig))


# -- upgrade ------------------------------------------------------------------------------------------


@dataclass
class NodeRun:
    name: str
    role: str
    before: str
    after: str | None = None
    result: str = "pending"  # upgraded | drain blocked | rolled back | failed
    evicted: list[str] = field(default_factory=list)
    phases: list[dict] = field(default_factory=list)


@dataclass
class Outcome:
    target: str
    runs: list[NodeRun] = field(default_factory=list)
    probe: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=availability.RECORD_COLUMNS))
    failure: str | None = None

    @property
    def upgraded(self) -> list[str]:
        return [r.name for r in self.runs if r.result == "upgraded"]

    def versions(self) -> pd.DataFrame:
        return pd.DataFrame([{"node": r.name, "role": r.role, "before": r.before, "after": r.after or r.before,
                              "result": r.result, "evicted": len(r.evicted)} for r in self.runs],
                            columns=["node", "role", "before", "after", "result", "evicted"])

    def phases(self) -> pd.DataFrame:
        rows = [{"node": r.name, **p} for r in self.runs for p in r.phases]
        frame = pd.DataFrame(rows, columns=["node", "phase", "start", "end"])
        return frame.assign(seconds=(frame["end"] - frame["start"]).dt.total_seconds()) if rows else \
            frame.assign(seconds=pd.Series(dtype=float))

    def evicted(self) -> pd.DataFrame:
        return pd.DataFrame([{"node": r.name, "pod": pod} for r in self.runs for pod in r.evicted],
                            columns=["node", "pod"])

    def availability(self) -> pd.DataFrame:
        return availability.summary(self.probe, self.phases())

    def headline(self) -> dict[str, float | int | None]:
        """The whole run's figures as plain numbers (for the run summary)."""
        whole = self.availability().iloc[0]
        pct = whole["availability_pct"]
        return {"probe_requests": int(whole["requests"]), "availability_pct": None if pd.isna(pct) else float(pct),
                "longest_outage_s": float(whole["longest_outage_s"])}

    def per_node(self) -> pd.DataFrame:
        """Seconds per phase per node (the timing table)."""
        phases = self.phases()
        if phases.empty:
            return pd.DataFrame(columns=["node", *PHASES])
        wide = phases.pivot_table(index="node", columns="phase", values="seconds", aggfunc="sum", sort=False)
        return wide.reindex(columns=[p for p in PHASES if p in wide.columns]).round(2).reset_index()


class _Stopped(Exception):
    """A node could not be upgraded: the run stops there (message: what happened and what to do)."""


def upgrade(ssh: Session, lab: Lab, pre: Preflight, *, max_unavailable: int = 1, drain_timeout_s: float = 300,
            ready_timeout_s: float = 300, rollback_on_failure: bool = True, probe: availability.Probe | None = None,
            dry_run: bool = False, step: StepTimer = untimed,
            applied: Callable[[list[Change]], None] = lambda changes: None) -> Outcome:
    """Upgrade the preflight's nodes in order; returns what happened (``failure`` says where a run
    stopped and how to resume). ``probe`` runs for the whole of it. Nothing in a dry run."""
    if max_unavailable < 1:
        raise UpgradeError(f"max_unavailable: {max_unavailable} must be 1 or more (agents upgraded at a time)")
    outcome = Outcome(pre.target)
    if dry_run:
        return outcome
    if not pre.ok:
        raise UpgradeError("the preflight failed; nothing was upgraded:\n" + "\n".join(pre.problems))
    if not pre.todo:
        return outcome
    states = {s.name: s for s in pre.nodes}
    servers = [n for n in pre.todo if states[n].role == "server"]
    agents = [n for n in pre.todo if states[n].role == "agent"]
    batches = [[s] for s in servers] + [agents[i:i + max_unavailable] for i in range(0, len(agents), max_unavailable)]
    api = kube.connect(lab.kubeconfig)
    worker = _Upgrader(ssh, lab, api, drain_timeout_s, ready_timeout_s, rollback_on_failure, step)
    with probe if probe is not None else nullcontext():
        for batch in batches:
            runs = [NodeRun(n, states[n].role, states[n].installed or "") for n in batch]
            outcome.runs.extend(runs)
            try:
                worker.batch(runs)
            except _Stopped as stop:
                outcome.failure = str(stop)
                break
            finally:
                applied([Change(r.name, "upgrade", f"k3s {r.before} → {r.after}") for r in runs
                         if r.result == "upgraded"])
    if probe is not None:
        outcome.probe = probe.frame()
    return outcome


@dataclass
class _Upgrader:
    ssh: Session
    lab: Lab
    api: client.ApiClient
    drain_timeout_s: float
    ready_timeout_s: float
    rollback: bool
    step: StepTimer

    @contextmanager
    def phase(self, run: NodeRun, name: str) -> Iterator[None]:
        start = datetime.now(UTC)
        try:
            with self.step(name, run.name):
                yield
        finally:
            run.phases.append({"phase": name, "start": start, "end": datetime.now(UTC)})

    def batch(self, runs: list[NodeRun]) -> None:
        """Cordon and drain each node of the batch, then upgrade each, wait for it, uncordon it."""
        for run in runs:
            with self.phase(run, "cordon"):
                drain.cordon(self.api, run.name)
            try:
                with self.phase(run, "drain"):
                    run.evicted = [str(e) for e in drain.drain(self.api, run.name, timeout=self.drain_timeout_s,
                                                               retry_s=max(5 * pace(self.lab), 0.05))]
            except drain.DrainBlocked as exc:
                for r in runs:
                    drain.uncordon(self.api, r.name)  # nothing was upgraded: the nodes stay as they were
                    r.result = "drain blocked" if r is run else "not started"
                raise _Stopped(f"{exc}. Nothing was upgraded on {run.name} (uncordoned again); fix the budget, then "
                               f"resume with `{RESUME}`") from None
        for run in runs:
            self.node(run)

    def node(self, run: NodeRun) -> None:
        node = self.lab.node(run.name)
        target = self.lab.k3s.version
        try:
            with self.phase(run, "upgrade"):
                self.install(node, target)
            with self.phase(run, "ready"):
                self.wait_ready(node.name, target)
                self.wait_pods(node.name)
        except LabError as exc:  # the installer failed, the node not back in time, SSH lost with it
            raise _Stopped(self.lost(run, exc)) from None
        with self.phase(run, "uncordon"):
            drain.uncordon(self.api, node.name)
        run.after, run.result = target, "upgraded"

    def lost(self, run: NodeRun, exc: Exception) -> str:
        """The node did not come back at the target: roll it back (if asked), leave it cordoned."""
        said = f"{run.name} did not come back at k3s {self.lab.k3s.version}: {exc}"
        if not self.rollback:
            run.result = "failed"
            return (f"{said}. It is left cordoned, rollback_on_failure is off. Fix it, `kubectl uncordon "
                    f"{run.name}`, and resume with `{RESUME}`")
        try:
            with self.phase(run, "rollback"):
                self.install(self.lab.node(run.name), run.before)
                self.wait_ready(run.name, run.before)
        except LabError as again:
            run.result = "failed"
            return f"{said}. The rollback to {run.before} failed too ({again}); the node is left cordoned"
        run.result, run.after = "rolled back", run.before
        return (f"{said}. It was rolled back to k3s {run.before} (Ready) and left cordoned. Read "
                f"`journalctl -u {k3s.service(self.lab.node(run.name))}` on it, then `kubectl uncordon {run.name}` "
                f"and resume with `{RESUME}`")

    def install(self, node: Node, version: str) -> None:
        """k3s' installer pinned to ``version``; config.yaml is left as it is, so every setting stays."""
        env = {"K3S_URL": f"https://{self.lab.master.ip}:6443"} if node.role == "agent" else None
        command = k3s.installer_command(self.lab, node.role, env, version=version)
        installed = self.ssh.run(node.name, command, sudo=True, timeout=self.ready_timeout_s, check=False)
        k3s.wait_active(self.ssh, node, timeout=self.ready_timeout_s, installer=installed)

    def wait_ready(self, name: str, version: str) -> None:
        wait_node(self.api, name, lambda node: node.status.node_info.kubelet_version == version,
                  what=f"{name} Ready at k3s {version}", timeout=self.ready_timeout_s, pause=pace(self.lab))

    def wait_pods(self, name: str) -> None:
        wait_pods(self.api, name, self.ready_timeout_s)


def wait_node(api: client.ApiClient, name: str, done: Callable[[client.V1Node], bool], *, what: str,
              timeout: float, pause: float = 1.0) -> None:
    """The Node Ready and ``done(node)``; the API server may be restarting meanwhile (a server's
    own upgrade or reboot), so refused connections are retried (every ``pause`` s) until the timeout."""
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout

    def there(listing) -> bool | None:
        node = next(iter(listing.items), None)
        ready = node is not None and any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        return True if ready and done(node) else None

    while True:
        try:
            kube.until(core.list_node, there, what=what, timeout=max(deadline - time.monotonic(), 0.1),
                       field_selector=f"metadata.name={name}")
            return
        except (KubeError, ApiException, HTTPError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise KubeError(f"{what}: not within {timeout:.0f} s ({exc})") from None
            time.sleep(max(pause, 0.05))


def wait_pods(api: client.ApiClient, name: str, timeout: float) -> None:
    """Every pod left on the node (DaemonSet pods, restarted with the kubelet) running again."""
    core = client.CoreV1Api(api)

    def running(listing) -> bool | None:
        return True if all(p.status.phase in ("Running", "Succeeded") for p in listing.items) else None

    kube.until(core.list_pod_for_all_namespaces, running, what=f"pods on {name} running", timeout=timeout,
               field_selector=f"spec.nodeName={name}")


# -- verify -------------------------------------------------------------------------------------------


def verify(ssh: Session, lab: Lab, pre: Preflight, outcome: Outcome, absent: list[str] | tuple[str, ...] = ()
           ) -> list[Check]:
    """Read the lab back: every node (but those taken out on purpose, ``absent``) at the pin
    (binary and kubelet), Ready and schedulable; the snapshot listed, servers upgraded before
    agents, the run finished."""
    installed = {n: v for n, v in installed_versions(ssh, lab).items() if n not in absent}
    nodes = cluster_nodes(lab)
    off = {n: v for n, v in installed.items() if v != lab.k3s.version}
    kubelets = sorted(set(nodes["version"]))
    cordoned = sorted(nodes.loc[nodes["unschedulable"].astype(bool), "name"])
    roles = [r.role for r in outcome.runs]
    checks = [
        Check(f"every node runs k3s {lab.k3s.version}", not off,
              ", ".join(f"{n}: {v}" for n, v in off.items()) or f"{len(installed)} nodes"),
        Check(f"kubelet versions = pin {lab.k3s.version}", kubelets == [lab.k3s.version], ", ".join(kubelets)),
        Check("every node Ready", len(nodes) == len(installed) and bool(nodes["ready"].all()),
              f"{int(nodes['ready'].sum())}/{len(installed)} Ready" + (f", {', '.join(absent)} removed" if absent else "")),
        Check("no node left cordoned", not cordoned, ", ".join(cordoned) or "all schedulable"),
        Check("servers upgraded before agents", roles == sorted(roles, key=lambda r: r != "server"),
              " → ".join(r.name for r in outcome.runs) or "nothing to upgrade"),
        Check("the upgrade ran to the end", outcome.failure is None, outcome.failure or
              (f"{len(outcome.upgraded)} node(s) upgraded" if outcome.runs else "every node already at the pin")),
    ]
    if outcome.runs and pre.snapshot is not None:
        listed = set(snapshot_table(ssh.run(lab.master.name, "k3s etcd-snapshot ls", sudo=True).stdout)["name"])
        checks.append(Check("pre-upgrade etcd snapshot listed", pre.snapshot in listed, pre.snapshot))
    return checks
