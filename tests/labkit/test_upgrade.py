"""labkit.upgrade on one embedded lab of 3 nodes (k3s v1.34.3+k3s1 to start), the tests in order:
the preflight's refusals, a drain held by a budget, a rolling patch upgrade measured by a probe,
a minor upgrade where one node never comes back (rolled back, then resumed), an unknown
release, and a re-run at the target that changes nothing."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import yaml
from kubernetes import client

from labkit import availability, k3s, kube, maintenance, ssh, upgrade
from labkit.errors import LabError
from labkit.params import Lab, load_lab
from tests.labkit.embedded import EmbeddedLab, provisioned_lab

START, PATCH, MINOR = "v1.34.3+k3s1", "v1.34.4+k3s1", "v1.35.0+k3s1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The lab after 01 and 02 at START, and an SSH session to it."""
    with provisioned_lab(tmp_path_factory.mktemp("upgrade"), time_scale=0.01) as sim:  # phases long enough to probe
        session = ssh.connect(sim.lab)
        pre = k3s.preflight(session, sim.lab)
        k3s.bootstrap(session, sim.lab, k3s.plan(sim.lab, pre.facts), timeout=60)
        k3s.fetch_kubeconfig(session, sim.lab)
        kube.wait_cluster(sim.lab.kubeconfig, [n.name for n in sim.lab.nodes], timeout=120)
        yield sim, session
        session.close()


def pinned(sim: EmbeddedLab, version: str) -> Lab:
    """The same lab with another k3s pin (a copy of its lab file): how an operator asks for an upgrade."""
    doc = yaml.safe_load(sim.path.read_text())
    doc["k3s"]["version"] = version
    path = sim.path.with_name(f"lab-{version.replace('+', '-')}.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_lab(path)


def core(lab: Lab) -> client.CoreV1Api:
    return client.CoreV1Api(kube.connect(lab.kubeconfig))


def snapshots(session: ssh.Session, lab: Lab) -> list[str]:
    return list(upgrade.snapshot_table(session.run(lab.master.name, "k3s etcd-snapshot ls", sudo=True).stdout)["name"])


def node_ids(lab: Lab) -> dict[str, tuple]:
    return {n.metadata.name: (n.metadata.uid, n.status.node_info.boot_id, n.status.node_info.kubelet_version,
                              n.metadata.resource_version) for n in core(lab).list_node().items}


def longest_failure_run(records) -> int:
    longest = run = 0
    for ok in records["ok"]:
        run = 0 if ok else run + 1
        longest = max(longest, run)
    return longest


class CordonWatch:
    """Which nodes are cordoned, sampled all along (to see that nodes go one at a time)."""

    def __init__(self, lab: Lab) -> None:
        self.api, self.seen, self._stop = core(lab), set(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # the API server restarting with the master's upgrade
                self.seen.add(frozenset(n.metadata.name for n in self.api.list_node().items if n.spec.unschedulable))
            time.sleep(0.01)


def test_preflight_refuses_each_trap_and_changes_nothing(cluster):
    sim, session = cluster
    lab = sim.lab
    master, w1, w2 = (n.name for n in lab.nodes)

    at_target = upgrade.preflight(session, lab)
    assert at_target.ok and at_target.todo == [] and at_target.snapshot is None
    assert set(at_target.table()["action"]) == {"at target"}
    assert {"cluster-init", "disable", "tls-san"} <= set(at_target.nodes[0].settings)

    down = upgrade.preflight(session, pinned(sim, "v1.33.6+k3s1"))
    assert not down.ok and all("downgrade" in p for p in down.problems) and len(down.problems) == 3
    skip = upgrade.preflight(session, pinned(sim, "v1.36.1+k3s1"))
    assert not skip.ok and "skips a minor version" in skip.problems[0] and "allow_minor_skip" in skip.problems[0]
    allowed = upgrade.preflight(session, pinned(sim, "v1.36.1+k3s1"), allow_minor_skip=True, dry_run=True)
    assert allowed.ok and allowed.todo == [master, w1, w2]
    agent_first = upgrade.preflight(session, pinned(sim, PATCH), nodes=[w1])
    assert not agent_first.ok and agent_first.problems == [agent_first.problems[0]]
    assert agent_first.problems[0].startswith(f"{w1}: would run k3s {PATCH} while the server {master}")
    with pytest.raises(upgrade.UpgradeError, match="preflight failed"):
        upgrade.upgrade(session, lab, agent_first)

    session.run(w2, "systemctl stop k3s-agent", sudo=True)
    try:
        not_ready = upgrade.preflight(session, pinned(sim, PATCH), dry_run=True)
        assert [p.split(":")[0] for p in not_ready.problems] == [w2] and "not Ready" in not_ready.problems[0]
    finally:
        session.run(w2, "systemctl start k3s-agent", sudo=True)

    sim.handle.lab.nodes.faults.fail_next(lab.master.vmid, "etcd-snapshot save", "Error: etcd: context deadline exceeded")
    failed = upgrade.preflight(session, pinned(sim, PATCH))
    assert not failed.ok and "etcd snapshot failed" in failed.problems[0] and "nothing was upgraded" in failed.problems[0]
    assert "context deadline exceeded" in failed.problems[0]
    assert not [n for n in snapshots(session, lab) if n.startswith(upgrade.SNAPSHOT_PREFIX)]
    assert set(k3s.versions(session, lab).values()) == {START}


def test_kept_settings_refuse_installer_flags_a_rerun_would_drop():
    unit = ("[Service]\nExecStart=/usr/local/bin/k3s \\\n\tserver \\\n\t'--disable=traefik' \\\n\n"
            "# labkit: environment file\nK3S_TOKEN='x'\n")
    flags, env = upgrade._unit_settings(unit)
    assert (flags, env) == (["--disable=traefik"], ["K3S_TOKEN"])
    state = upgrade.NodeState("m", "server", START, START, True, False, [], flags, env, PATCH)
    problem = upgrade.kept_setting_problems([state], ["m"])[0]
    assert "--disable=traefik K3S_TOKEN" in problem and "config.yaml" in problem
    agent = upgrade.NodeState("a", "agent", START, START, True, False, [], [], ["K3S_URL"], PATCH)
    assert upgrade.kept_setting_problems([agent], ["a"]) == []  # labkit passes K3S_URL again


def test_a_budget_that_allows_no_disruption_stops_the_drain_and_nothing_is_upgraded(cluster):
    sim, session = cluster
    lab = pinned(sim, PATCH)
    api = kube.connect(lab.kubeconfig)
    labels = {"app": "solo"}
    client.AppsV1Api(api).create_namespaced_deployment("default", client.V1Deployment(
        metadata=client.V1ObjectMeta(name="solo"), spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=client.V1PodSpec(
                node_selector={"kubernetes.io/hostname": lab.master.name},
                containers=[client.V1Container(name="app", image="busybox:1.37", command=["sleep", "3600"])])))))
    client.PolicyV1Api(api).create_namespaced_pod_disruption_budget("default", client.V1PodDisruptionBudget(
        metadata=client.V1ObjectMeta(name="solo"),
        spec=client.V1PodDisruptionBudgetSpec(min_available=1, selector=client.V1LabelSelector(match_labels=labels))))
    try:
        kube.until(client.CoreV1Api(api).list_namespaced_pod, lambda pods: True if any(
            c.ready for p in pods.items for c in p.status.container_statuses or []) else None,
            what="solo ready", timeout=60, namespace="default", label_selector="app=solo")
        pre = upgrade.preflight(session, lab, dry_run=True)
        assert pre.ok, pre.problems
        solo = pre.budgets.set_index("name").loc["solo"]
        assert solo["blocks"] and solo["allowed_disruptions"] == 0 and solo["pods_on_nodes_to_drain"] == 1
        pre = upgrade.preflight(session, lab)  # with its snapshot
        outcome = upgrade.upgrade(session, lab, pre, drain_timeout_s=1)
        assert outcome.failure is not None and f"drain of {lab.master.name} stopped" in outcome.failure
        assert "The disruption budget solo needs 1 healthy pods" in outcome.failure
        assert "Nothing was upgraded" in outcome.failure and upgrade.RESUME in outcome.failure
        assert outcome.versions()["result"].tolist() == ["drain blocked"] and outcome.upgraded == []
        assert not any(n.spec.unschedulable for n in core(lab).list_node().items)
        assert set(k3s.versions(session, lab).values()) == {START}
    finally:
        client.PolicyV1Api(api).delete_namespaced_pod_disruption_budget("solo", "default")
        client.AppsV1Api(api).delete_namespaced_deployment("solo", "default")


def test_rolling_patch_upgrade_keeps_the_probed_service_available(cluster):
    sim, session = cluster
    lab = pinned(sim, PATCH)
    master, w1, w2 = (n.name for n in lab.nodes)
    api = kube.connect(lab.kubeconfig)
    configs = {n.name: session.run(n.name, f"cat {k3s.CONFIG}", sudo=True).stdout for n in lab.nodes}
    url = availability.probe_workload(api, lab)
    assert availability.Probe(url).hit()["ok"]

    pre = upgrade.preflight(session, lab)
    assert pre.ok, pre.problems
    assert pre.todo == [master, w1, w2] and [c.action for c in pre.plan().changes()] == ["upgrade"] * 3
    assert pre.snapshot.startswith(f"{upgrade.SNAPSHOT_PREFIX}-v1-34-4-k3s1-") and pre.snapshot in list(pre.snapshots["name"])
    probe_pdb = pre.budgets.set_index("name").loc["probe"]
    assert probe_pdb["allowed_disruptions"] == 1 and not probe_pdb["blocks"]
    singles = set(pre.single_replicas["name"])
    assert "coredns" in singles and "probe" not in singles

    probe = availability.Probe(url, interval=0.02)
    with CordonWatch(lab) as cordons:
        outcome = upgrade.upgrade(session, lab, pre, probe=probe, drain_timeout_s=60, ready_timeout_s=120)
    assert outcome.failure is None, outcome.failure
    versions = outcome.versions()
    assert versions["node"].tolist() == [master, w1, w2]
    assert versions["before"].tolist() == [START] * 3 and versions["after"].tolist() == [PATCH] * 3
    assert set(versions["result"]) == {"upgraded"}
    phases = outcome.phases()
    for name in (master, w1, w2):
        assert phases[phases["node"] == name]["phase"].tolist() == list(upgrade.PHASES)
    assert phases["start"].is_monotonic_increasing  # one node after the other
    assert max(len(s) for s in cordons.seen) == 1 and {frozenset({n}) for n in (master, w1, w2)} <= cordons.seen
    evicted = outcome.evicted()
    assert any(p.startswith("availability-probe/probe-") for p in evicted["pod"])
    assert set(outcome.per_node().columns) == {"node", *upgrade.PHASES}

    assert k3s.versions(session, lab) == dict.fromkeys((master, w1, w2), PATCH)
    nodes = kube.node_table(api)
    assert set(nodes["version"]) == {PATCH} and nodes["ready"].all() and not nodes["unschedulable"].any()
    assert client.VersionApi(api).get_code().git_version == PATCH
    assert {n.name: session.run(n.name, f"cat {k3s.CONFIG}", sudo=True).stdout for n in lab.nodes} == configs
    checks = upgrade.verify(session, lab, pre, outcome)
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    assert "pre-upgrade etcd snapshot listed" in {c.name for c in checks}

    records = outcome.probe
    table = outcome.availability().set_index("phase")
    assert len(records) > 20 and table.loc["whole run", "requests"] == len(records)
    assert table.loc["whole run", "availability_pct"] == round(100 * records["ok"].mean(), 2)
    # From the start to the agents' end, the master's k3s restart included (its pods and kube-proxy's
    # rules run on: KillMode=process, README "Upgrading k3s"): the budget kept a replica answering, a
    # request cut when its pod was evicted fails alone, the service never went away (no run of failures).
    agents = phases[phases["node"] != master]
    during = records[records["time"] <= agents["end"].max()]
    assert len(during) > 5 and during["ok"].mean() >= 0.8 and longest_failure_run(during) <= 2
    upgraded = phases[(phases["node"] == master) & (phases["phase"] == "upgrade")].iloc[0]
    assert records[(records["time"] >= upgraded["start"]) & (records["time"] <= upgraded["end"])]["ok"].all()
    assert {f"{agent} {phase}" for agent in (w1, w2) for phase in upgrade.PHASES} <= set(table.index)
    ready = client.AppsV1Api(api).read_namespaced_deployment("probe", availability.NAMESPACE).status.ready_replicas
    assert ready == 2


def test_a_node_that_never_comes_back_is_rolled_back_and_the_run_resumes(cluster):
    sim, session = cluster
    lab = pinned(sim, MINOR)
    master, w1, w2 = (n.name for n in lab.nodes)
    faults = sim.handle.lab.nodes.faults
    faults.never_ready(lab.node(w2).vmid, MINOR)
    try:
        pre = upgrade.preflight(session, lab)
        assert pre.ok, pre.problems
        outcome = upgrade.upgrade(session, lab, pre, ready_timeout_s=3)
    finally:
        faults.clear(lab.node(w2).vmid)
    assert outcome.versions()["result"].tolist() == ["upgraded", "upgraded", "rolled back"]
    assert f"{w2} did not come back at k3s {MINOR}" in outcome.failure
    assert f"rolled back to k3s {PATCH}" in outcome.failure and upgrade.RESUME in outcome.failure
    assert outcome.phases().query("node == @w2")["phase"].tolist()[-1] == "rollback"
    assert k3s.versions(session, lab) == {master: MINOR, w1: MINOR, w2: PATCH}
    nodes = kube.node_table(kube.connect(lab.kubeconfig)).set_index("name")
    assert nodes.loc[w2, "ready"] and nodes.loc[w2, "unschedulable"] and nodes.loc[w2, "version"] == PATCH
    assert not any(c.passed for c in upgrade.verify(session, lab, pre, outcome) if "cordoned" in c.name)

    resumed = upgrade.preflight(session, lab)
    assert resumed.ok and resumed.todo == [w2]
    again = upgrade.upgrade(session, lab, resumed, ready_timeout_s=60)
    assert again.failure is None and again.upgraded == [w2]
    assert set(k3s.versions(session, lab).values()) == {MINOR}
    assert not kube.node_table(kube.connect(lab.kubeconfig))["unschedulable"].any()


def test_an_unknown_release_is_refused_by_the_installer_and_nothing_changes(cluster):
    sim, session = cluster
    lab = pinned(sim, "v1.35.99+k3s1")
    pre = upgrade.preflight(session, lab, snapshot_first=False)
    assert pre.ok and pre.todo[0] == lab.master.name
    outcome = upgrade.upgrade(session, lab, pre, rollback_on_failure=False, ready_timeout_s=30)
    assert "Download failed" in outcome.failure and "left cordoned" in outcome.failure
    client.CoreV1Api(kube.connect(lab.kubeconfig)).patch_node(lab.master.name, {"spec": {"unschedulable": None}})
    assert set(k3s.versions(session, lab).values()) == {MINOR}


def test_a_rerun_at_the_target_changes_nothing(cluster):
    sim, session = cluster
    lab = pinned(sim, MINOR)
    kube.wait_nodes_ready(kube.connect(lab.kubeconfig), [n.name for n in lab.nodes], timeout=60)
    before, listed = node_ids(lab), snapshots(session, lab)
    pre = upgrade.preflight(session, lab)
    assert pre.ok and pre.todo == [] and pre.snapshot is None and pre.plan().is_empty
    outcome = upgrade.upgrade(session, lab, pre, probe=None)
    assert outcome.runs == [] and outcome.failure is None
    assert node_ids(lab) == before and snapshots(session, lab) == listed
    assert all(c.passed for c in upgrade.verify(session, lab, pre, outcome))
    availability.remove_probe_workload(kube.connect(lab.kubeconfig))
    assert availability.NAMESPACE not in {n.metadata.name for n in core(lab).list_namespace().items}


def test_availability_figures_from_records():
    import pandas as pd

    t0 = pd.Timestamp("2026-01-01T00:00:00Z")
    records = pd.DataFrame({"time": [t0 + pd.Timedelta(seconds=s) for s in range(6)],
                            "ok": [True, False, False, True, False, True], "status": [200, 0, 0, 200, 0, 200],
                            "latency_ms": [1.0, 5.0, 5.0, 3.0, 5.0, 2.0], "error": ""})
    phases = pd.DataFrame([{"node": "n", "phase": "drain", "start": t0, "end": t0 + pd.Timedelta(seconds=2)}])
    table = availability.summary(records, phases).set_index("phase")
    assert table.loc["whole run"].to_dict() == {"requests": 6, "failed": 3, "availability_pct": 50.0,
                                                "longest_outage_s": 2.0, "p50_ms": 2.0, "p95_ms": 2.9}
    assert table.loc["n drain", "requests"] == 3 and table.loc["n drain", "longest_outage_s"] == 1.0


def test_os_patch_drains_upgrades_reboots_when_asked_and_uncordons(cluster):
    sim, session = cluster
    lab = pinned(sim, MINOR)
    names = [n.name for n in lab.nodes]
    status = maintenance.patch_status(session, lab)
    assert status["node"].tolist() == names and set(status["unattended_upgrades"]) == {"on"}
    assert set(status["pending"]) == {4} and "systemd" in status["packages"][0] and not status["reboot_required"].any()
    before = node_ids(lab)
    assert maintenance.os_patch(session, lab, enabled=False).empty and node_ids(lab) == before

    patched = maintenance.os_patch(session, lab, enabled=True, drain_timeout_s=60, ready_timeout_s=120)
    assert patched["node"].tolist() == names and patched["rebooted"].all() and set(patched["upgraded"]) == {4}
    after = node_ids(lab)
    assert all(after[n][1] != before[n][1] for n in names)  # a new boot id: each node rebooted
    assert all(after[n][0] == before[n][0] and after[n][2] == MINOR for n in names)  # the same Nodes, same k3s
    nodes = kube.node_table(kube.connect(lab.kubeconfig))
    assert nodes["ready"].all() and not nodes["unschedulable"].any()
    status = maintenance.patch_status(session, lab)
    assert set(status["pending"]) == {0} and not status["reboot_required"].any()
    assert maintenance.os_patch(session, lab, enabled=True).empty  # patched: nothing left to do


def test_an_agent_removed_and_rejoined_with_and_without_its_vm(cluster):
    sim, session = cluster
    lab = pinned(sim, MINOR)
    w2 = lab.agents[-1]
    api = kube.connect(lab.kubeconfig)
    with pytest.raises(LabError, match="is a server"):
        maintenance.remove_nodes(session, lab, [lab.master.name])
    assert maintenance.remove_nodes(session, lab, [w2.name], dry_run=True).empty

    removed = maintenance.remove_nodes(session, lab, [w2.name], drain_timeout_s=60)
    assert removed.iloc[0].to_dict() | {"evicted": 0} == {"node": w2.name, "evicted": 0, "node_deleted": True,
                                                          "k3s_uninstalled": True, "vm_destroyed": False,
                                                          "result": "removed"}
    assert w2.name not in node_ids(lab) and upgrade.installed_versions(session, lab)[w2.name] is None
    pods = client.CoreV1Api(api).list_pod_for_all_namespaces().items
    assert not [p for p in pods if p.spec.node_name == w2.name]  # its pods run elsewhere now
    again = maintenance.remove_nodes(session, lab, [w2.name])
    assert again["result"].tolist() == ["already removed"]
    pre, nothing = upgrade.preflight(session, lab, dry_run=True), upgrade.Outcome(MINOR)
    checks = {c.name: c.passed for c in upgrade.verify(session, lab, pre, nothing, absent=[w2.name])}
    assert all(checks.values()), checks  # the lab as it should be, but the agent taken out on purpose
    assert not all(c.passed for c in upgrade.verify(session, lab, pre, nothing))

    rejoined = maintenance.rejoin_nodes(session, lab, [w2.name], timeout=120)
    assert rejoined.iloc[0][["vm", "k3s", "result"]].tolist() == ["kept", "joined", "rejoined"]
    assert node_ids(lab)[w2.name][2] == MINOR

    pinned_key = session.known_hosts.pinned(str(w2.ip), lab.ssh.port)
    gone = maintenance.remove_nodes(session, lab, [w2.name], confirm=True)
    assert gone.iloc[0][["node_deleted", "k3s_uninstalled", "vm_destroyed"]].tolist() == [True, True, True]
    assert w2.vmid not in {vm["vmid"] for vm in sim.handle.status()["vms"]}
    assert session.known_hosts.pinned(str(w2.ip), lab.ssh.port) == []
    back = maintenance.rejoin_nodes(session, lab, [w2.name], timeout=120)
    assert back.iloc[0][["vm", "k3s", "result"]].tolist() == ["made", "joined", "rejoined"]
    assert session.known_hosts.pinned(str(w2.ip), lab.ssh.port) not in ([], pinned_key)  # the new VM's key
    nodes = kube.node_table(api)
    assert len(nodes) == 3 and nodes["ready"].all() and set(nodes["version"]) == {MINOR}
    assert maintenance.rejoin_nodes(session, lab, [w2.name])["result"].tolist() == ["unchanged"]
