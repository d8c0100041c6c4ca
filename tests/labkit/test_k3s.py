"""labkit.k3s and labkit.kube against the embedded lab: k3s installed over SSH exactly as an
operator would, the kubeconfig fetched and used, and the faults of a bootstrap."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from labkit import k3s, kube, ssh
from labkit.changes import Plan
from labkit.errors import K3sError, KubeError
from tests.labkit.embedded import EmbeddedLab

OTHER_VERSION = "v1.33.6+k3s1"


def bootstrap(provisioned: EmbeddedLab, session: ssh.Session) -> list:
    pre = k3s.preflight(session, provisioned.lab)
    assert pre.ok, pre.problems
    return k3s.bootstrap(session, provisioned.lab, k3s.plan(provisioned.lab, pre.facts), timeout=60)


def node_state(provisioned: EmbeddedLab) -> dict[str, tuple]:
    """What a re-install would change: each Node's uid, boot id and kubelet version."""
    api = kube.connect(provisioned.lab.kubeconfig)
    nodes = kube.client.CoreV1Api(api).list_node().items
    return {n.metadata.name: (n.metadata.uid, n.status.node_info.boot_id, n.status.node_info.kubelet_version)
            for n in nodes}


def test_preflight_reads_every_node(provisioned, session):
    pre = k3s.preflight(session, provisioned.lab)
    assert pre.ok, pre.problems
    table = pre.table()
    assert list(table["node"]) == [n.name for n in provisioned.lab.nodes]
    assert set(table["os"]) == {"ubuntu 22.04"} and set(table["k3s"]) == {"not installed"}
    assert set(table["cpus"]) == {2} and set(table["cloud-init"]) == {"done"}
    changes = k3s.plan(provisioned.lab, pre.facts).changes()
    assert [c.action for c in changes] == ["install", "join", "join"]


def test_bootstrap_gives_a_ready_cluster_at_the_pinned_version(provisioned, session):
    done = bootstrap(provisioned, session)
    assert len(done) == 3

    config = yaml.safe_load(session.run(provisioned.lab.master.name, f"cat {k3s.CONFIG}", sudo=True).stdout)
    assert config["write-kubeconfig-mode"] == "0600" and config["disable"] == ["servicelb"]
    assert config["cluster-init"] is True and str(provisioned.lab.master.ip) in config["tls-san"]
    cluster_cidr, service_cidr = provisioned.lab.k3s.cluster_cidr, provisioned.lab.k3s.service_cidr
    assert (config["cluster-cidr"], config["service-cidr"]) == (str(cluster_cidr), str(service_cidr))
    assert not session.run(provisioned.lab.master.name, f"cat {k3s.CONFIG}", check=False).ok  # root only

    path = k3s.fetch_kubeconfig(session, provisioned.lab)
    assert path.stat().st_mode & 0o777 == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == f"https://{provisioned.lab.master.ip}:6443"
    assert doc["current-context"] == provisioned.lab.name

    api = kube.connect(path)
    ready = kube.wait_nodes_ready(api, [n.name for n in provisioned.lab.nodes], timeout=60)
    assert set(ready) == {n.name for n in provisioned.lab.nodes}
    nodes = kube.node_table(api)
    assert set(nodes["version"]) == {provisioned.lab.k3s.version} and nodes["ready"].all()
    assert set(nodes["internal_ip"]) == {str(n.ip) for n in provisioned.lab.nodes}
    assert "control-plane" in nodes.set_index("name").loc[provisioned.lab.master.name, "roles"]
    core = kube.client.CoreV1Api(api)
    pod_cidrs = [ipaddress.ip_network(n.spec.pod_cidr) for n in core.list_node().items]
    assert len(set(pod_cidrs)) == 3 and all(c.subnet_of(cluster_cidr) and c.prefixlen == 24 for c in pod_cidrs)
    assert core.read_namespaced_service("kubernetes", "default").spec.cluster_ip == str(service_cidr[1])
    assert core.read_namespaced_service("kube-dns", "kube-system").spec.cluster_ip == str(service_cidr[10])
    pods = kube.wait_pods_running(api, "kube-system", timeout=60)
    assert all(ipaddress.ip_address(p.status.pod_ip) in cluster_cidr
               for p in core.list_namespaced_pod("kube-system").items if p.status.pod_ip)
    assert not pods.empty and set(pods["phase"]) <= {"Running", "Succeeded"}
    assert str(provisioned.lab.master.ip) in kube.server_certificate_sans(path)
    assert k3s.versions(session, provisioned.lab) == {n.name: provisioned.lab.k3s.version for n in provisioned.lab.nodes}


def test_second_run_changes_nothing(provisioned, session):
    bootstrap(provisioned, session)
    k3s.fetch_kubeconfig(session, provisioned.lab)
    kube.wait_nodes_ready(kube.connect(provisioned.lab.kubeconfig), [n.name for n in provisioned.lab.nodes], timeout=60)
    before = node_state(provisioned)
    pre = k3s.preflight(session, provisioned.lab)
    plan = k3s.plan(provisioned.lab, pre.facts)
    assert [c.action for c in plan.changes()] == ["unchanged"] * 3
    assert k3s.bootstrap(session, provisioned.lab, plan) == []
    assert node_state(provisioned) == before  # no node re-registered or restarted, counted from the API


def test_a_wait_that_cannot_succeed_times_out_naming_what_is_missing(provisioned, session):
    bootstrap(provisioned, session)
    api = kube.connect(k3s.fetch_kubeconfig(session, provisioned.lab))
    with pytest.raises(KubeError, match="nodes not Ready after 1 s: k3s-worker-99"):
        kube.wait_nodes_ready(api, [provisioned.lab.master.name, "k3s-worker-99"], timeout=1)


def test_config_drift_is_reported_and_fixed_only_with_reconcile(provisioned, session):
    bootstrap(provisioned, session)
    worker = provisioned.lab.agents[0]
    found = yaml.safe_load(session.run(worker.name, f"cat {k3s.CONFIG}", sudo=True).stdout)
    found["node-label"] = ["hand-edited=yes"]
    session.run(worker.name, f"tee {k3s.CONFIG} >/dev/null", sudo=True, input=yaml.safe_dump(found))

    plan = k3s.plan(provisioned.lab, k3s.preflight(session, provisioned.lab).facts)
    drift = [c for c in plan.changes() if c.is_change]
    assert [(c.target, c.action) for c in drift] == [(worker.name, "drift")]
    assert "node-label" in drift[0].detail and "token" not in drift[0].detail
    assert k3s.bootstrap(session, provisioned.lab, plan) == []  # reported, not fixed

    assert k3s.bootstrap(session, provisioned.lab, plan, reconcile=True) == drift
    after = k3s.plan(provisioned.lab, k3s.preflight(session, provisioned.lab).facts)
    assert [c.action for c in after.changes()] == ["unchanged"] * 3


def test_a_partly_joined_cluster_is_completed_by_a_rerun(provisioned, session):
    last = provisioned.lab.agents[-1]
    provisioned.handle.lab.nodes.faults.fail_next(last.vmid, "get.k3s.io", "curl: (6) Could not resolve host: get.k3s.io", 6)
    with pytest.raises(K3sError, match=rf"(?s){last.name}: k3s-agent is not active.*installer said \(exit 6\).*Could not resolve host"):
        bootstrap(provisioned, session)

    plan = k3s.plan(provisioned.lab, k3s.preflight(session, provisioned.lab).facts)
    assert [(c.target, c.action) for c in plan.changes() if c.is_change] == [(last.name, "join")]
    assert k3s.bootstrap(session, provisioned.lab, plan, timeout=60) == [c for c in plan.changes() if c.is_change]
    k3s.fetch_kubeconfig(session, provisioned.lab)
    kube.wait_nodes_ready(kube.connect(provisioned.lab.kubeconfig), [n.name for n in provisioned.lab.nodes], timeout=60)


def test_ssh_dropped_during_the_install_names_node_and_command_and_a_rerun_converges(provisioned, session):
    last = provisioned.lab.agents[-1]
    for _ in range(2):  # the install's connection drops, and again on labkit's one retry
        provisioned.handle.lab.nodes.faults.drop_next(last.vmid, "get.k3s.io")
    with pytest.raises(K3sError, match=rf"{last.name}: connection lost while running `curl -sfL https://get.k3s.io"):
        bootstrap(provisioned, session)
    bootstrap(provisioned, session)  # whatever the cut left behind, a re-run completes it
    assert set(k3s.versions(session, provisioned.lab).values()) == {provisioned.lab.k3s.version}
    k3s.fetch_kubeconfig(session, provisioned.lab)
    kube.wait_nodes_ready(kube.connect(provisioned.lab.kubeconfig), [n.name for n in provisioned.lab.nodes], timeout=60)


def test_an_agent_at_another_version_stops_and_points_to_the_upgrade_notebook(provisioned, session):
    bootstrap(provisioned, session)
    worker = provisioned.lab.agents[0]
    session.run(worker.name, f"{k3s.INSTALLER} | INSTALL_K3S_VERSION={OTHER_VERSION} sh -s - agent",
                sudo=True, timeout=60, check=False)  # an old binary; whether its service starts does not matter
    pre = k3s.preflight(session, provisioned.lab)
    assert not pre.ok
    assert any(worker.name in p and OTHER_VERSION in p and "08-upgrade-k3s" in p for p in pre.problems)
    with pytest.raises(K3sError, match="08-upgrade-k3s"):
        k3s.plan(provisioned.lab, pre.facts)


def test_a_wrong_cluster_token_is_refused_before_any_node_joins(provisioned, session):
    k3s.install_server(session, provisioned.lab, provisioned.lab.master, timeout=60)
    secrets_file = provisioned.lab.base_dir / "labsim" / "secrets.yaml"
    doc = yaml.safe_load(secrets_file.read_text())
    doc["k3s_token"] = "a-token-the-cluster-never-saw-0123456789"
    secrets_file.write_text(yaml.safe_dump(doc))
    plan = k3s.plan(provisioned.lab, k3s.preflight(session, provisioned.lab).facts)
    with pytest.raises(K3sError, match="the cluster's token is not the one k3s.token") as err:
        k3s.bootstrap(session, provisioned.lab, plan, timeout=60)
    assert "a-token-the-cluster-never-saw" not in str(err.value)
    assert k3s.versions(session, provisioned.lab)[provisioned.lab.agents[0].name] is None  # no agent was touched


def test_an_agent_that_cannot_join_fails_with_its_journal(provisioned, session):
    plan = k3s.plan(provisioned.lab, k3s.preflight(session, provisioned.lab).facts)
    bootstrap_server_only = Plan(plan.items[:1])
    k3s.bootstrap(session, provisioned.lab, bootstrap_server_only, timeout=60)
    worker = provisioned.lab.agents[0]
    bad = {"K3S_URL": f"https://{provisioned.lab.master.ip}:6443", "K3S_TOKEN": "K10bad::server:not-the-token"}
    session.run(worker.name, k3s.installer_command(provisioned.lab, "agent", bad), sudo=True, timeout=60, check=False)
    with pytest.raises(K3sError, match=rf"{worker.name}: k3s-agent is .* its journal says"):
        k3s.wait_active(session, worker, timeout=5)
