"""labkit.charts and labkit.manifests over the wire against the twin's API server and its k3s Helm
controller: plan -> apply -> plan again (nothing, counted from resourceVersions), a values change
planned with its diff, Traefik configured through a HelmChartConfig, and pruning that removes only
what labkit applied."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client

from labkit import charts, manifests
from labkit.errors import LabError
from labkit.params import load_lab
from labsim.k3s.addons import k3s_crds, traefik
from tests.labfiles import REPO, sim_lab, write_lab
from tests.labsim.kube_fixtures import RunningCluster, running_cluster
from tests.polling import wait_until


@pytest.fixture(scope="module")
def k3s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """Three nodes, k3s' CRDs and its packaged Traefik HelmCharts, as a k3s server deploys them."""
    with running_cluster(tmp_path_factory.mktemp("kube"), nodes=3) as running:
        for obj in [*k3s_crds(), *traefik()]:
            running.call(running.cluster.apply_manifest, obj)
        yield running


@pytest.fixture(scope="module")
def api(k3s: RunningCluster) -> client.ApiClient:
    return k3s.api_client()


def _chart(version: str = "0.15.2", frr: bool = False) -> charts.Chart:
    return charts.Chart("metallb", chart="metallb", version=version, repo="https://metallb.github.io/metallb",
                        target_namespace="metallb-system", values={"speaker": {"frr": {"enabled": frr}}})


def _helmchart(api: client.ApiClient, name: str, kind: str = "helmcharts") -> dict:
    return client.CustomObjectsApi(api).get_namespaced_custom_object("helm.cattle.io", "v1", "kube-system", kind, name)


def _releases(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    found = client.CoreV1Api(api).list_namespaced_secret(namespace, label_selector=f"owner=helm,name={name}")
    return sorted(f"{s.metadata.labels['version']}:{s.metadata.labels['status']}" for s in found.items)


def test_a_chart_is_planned_applied_left_alone_and_its_values_diff_planned(api, capsys):
    chart = _chart()
    planned = charts.deploy(api, [chart], dry_run=True)
    assert [(c.target, c.action) for c in planned.changes()] == [("HelmChart/metallb", "install")]
    assert "absent: metallb 0.15.2 into metallb-system" in planned.changes()[0].detail
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object("helm.cattle.io", "v1", "kube-system",
                                                                        "helmcharts")["items"]
    assert "metallb" not in [o["metadata"]["name"] for o in listed]  # a dry run applies nothing

    charts.deploy(api, [chart])
    applied = _helmchart(api, "metallb")
    assert applied["spec"] == {"chart": "metallb", "version": "0.15.2", "repo": "https://metallb.github.io/metallb",
                               "targetNamespace": "metallb-system", "createNamespace": True,
                               "valuesContent": "speaker:\n  frr:\n    enabled: false\n"}
    assert any(m["manager"] == "labkit" and m["operation"] == "Apply" for m in applied["metadata"]["managedFields"])
    assert _releases(api, "metallb-system", "metallb") == ["1:deployed"]  # helm-install Job ran, release recorded
    assert "helm-install-metallb Job: complete" in capsys.readouterr().out
    job = client.BatchV1Api(api).read_namespaced_job("helm-install-metallb", "kube-system")

    again = charts.deploy(api, [chart])  # a second run: plans nothing, changes nothing
    assert again.is_empty and [c.action for c in again.changes()] == ["unchanged"]
    assert _helmchart(api, "metallb")["metadata"]["resourceVersion"] == applied["metadata"]["resourceVersion"]
    assert client.BatchV1Api(api).read_namespaced_job("helm-install-metallb", "kube-system").metadata.uid == job.metadata.uid

    changed = charts.plan(api, [_chart(version="0.15.3", frr=True)])
    item = changed.items[0]
    assert item.action == "upgrade" and item.detail == "version 0.15.2 -> 0.15.3; values differ"
    assert "-    enabled: false\n" in item.values_diff and "+    enabled: true\n" in item.values_diff
    assert _helmchart(api, "metallb")["metadata"]["resourceVersion"] == applied["metadata"]["resourceVersion"]

    charts.apply(api, changed)
    assert _releases(api, "metallb-system", "metallb") == ["1:superseded", "2:deployed"]
    assert client.BatchV1Api(api).read_namespaced_job("helm-install-metallb", "kube-system").metadata.uid != job.metadata.uid
    assert charts.verify(api, [_chart(version="0.15.3", frr=True)]) == []


def test_traefik_is_configured_through_a_helmchartconfig_and_rolled_out(api, capsys):
    apps = client.AppsV1Api(api)
    config = charts.ChartConfig("traefik", values={"deployment": {"replicas": 2}})
    planned = charts.plan(api, [config])
    assert [(c.target, c.action) for c in planned.changes()] == [("HelmChartConfig/traefik", "install")]

    charts.deploy(api, [config])
    deployment = apps.read_namespaced_deployment("traefik", "kube-system")
    assert deployment.spec.replicas == 2 and deployment.status.available_replicas == 2  # waited for the rollout
    out = capsys.readouterr().out
    assert "helm-install-traefik Job: complete" in out and "traefik release: revision 2 deployed" in out
    assert "traefik Deployments: 1/1 rolled out" in out
    assert _helmchart(api, "traefik", "helmchartconfigs")["spec"]["valuesContent"] == "deployment:\n  replicas: 2\n"
    assert charts.plan(api, [config]).is_empty


def test_a_failing_helm_job_stops_the_wait_naming_its_last_log_line(api, k3s):
    """klipper-helm exits non-zero: the wait stops at once with helm's last line, not at the timeout.
    The Failed-pod path (restartPolicy Never, a Job made by hand); k3s' own crash-looping Job is the
    test above."""
    broken = charts.Chart("broken", chart="metallb", version="9.9.9", repo="https://metallb.github.io/metallb",
                          target_namespace="metallb-system")
    template = {"metadata": {"annotations": {"sim.labsim.io/exit-code": "1", "sim.labsim.io/run-seconds": "1"}},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "helm", "image": "rancher/klipper-helm:v0.9.8-build20250709",
                                         "args": ["install"]}]}}
    client.BatchV1Api(api).create_namespaced_job("kube-system", {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "helm-install-broken"},
        "spec": {"backoffLimit": 0, "template": template}})
    core = client.CoreV1Api(api)
    pod = wait_until(lambda: core.list_namespaced_pod("kube-system", label_selector="job-name=helm-install-broken").items)[0]
    said = 'Error: chart "metallb" version "9.9.9" not found in https://metallb.github.io/metallb repository'
    k3s.call(k3s.cluster.logs.write, "kube-system", pod.metadata.name, "helm", said)
    with pytest.raises(charts.ChartError) as err:
        charts.wait(api, charts.ChartPlan(broken, "install", "absent"), timeout=60)
    assert str(err.value).startswith(f"the helm-install-broken Job failed installing metallb 9.9.9: {said}\n")
    assert "kubectl -n kube-system logs job/helm-install-broken" in str(err.value)


def test_a_chart_version_that_does_not_exist_stops_the_deploy_with_helms_line(api):
    """k3s' helm Job (restartPolicy OnFailure) crash-loops on a version the repository lacks: the
    deploy stops at the first failure with helm's line, read from the pod's previous run."""
    missing = charts.Chart("metallb-next", chart="metallb", version="9.9.9", repo="https://metallb.github.io/metallb/",
                           target_namespace="metallb-next")
    try:
        with pytest.raises(charts.ChartError) as err:
            charts.deploy(api, [missing], timeout=120)
        said = 'Error: chart "metallb" version "9.9.9" not found in https://metallb.github.io/metallb repository'
        assert str(err.value).startswith(f"the helm-install-metallb-next Job failed installing metallb 9.9.9: {said}\n")
        assert _releases(api, "metallb-next", "metallb-next") == []  # nothing installed
        fixed = charts.plan(api, [charts.Chart("metallb-next", chart="metallb", version="0.15.2",
                                               repo="https://metallb.github.io/metallb/", target_namespace="metallb-next")])
        assert [(c.action, c.detail) for c in fixed.changes()] == [("upgrade", "version 9.9.9 -> 0.15.2")]
    finally:
        client.CustomObjectsApi(api).delete_namespaced_custom_object("helm.cattle.io", "v1", "kube-system", "helmcharts",
                                                                     "metallb-next")


def test_a_rollout_that_never_finishes_names_the_crashing_container_and_its_log(api):
    """A release's workload whose container keeps exiting: the wait's timeout says which pod and
    container, its state and restarts, and the last lines it printed, not only that time ran out."""
    crashing = charts.Chart("crashy", chart="crashy", version="1.0.0", target_namespace="crashy")
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "crashy"}})
    labels = {"app": "crashy"}
    client.AppsV1Api(api).create_namespaced_deployment("crashy", {
        "metadata": {"name": "crashy", "annotations": {charts.RELEASE: "crashy", charts.RELEASE_NAMESPACE: "crashy"}},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "containers": [{"name": "app", "image": "busybox:1.36",
                            "command": ["sh", "-c", "echo starting; echo 'FATAL: /etc/crashy.conf: no such file'; "
                                        "exit 3"]}]}}}})
    with pytest.raises(charts.ChartError) as err:
        charts.wait(api, charts.ChartPlan(crashing, "upgrade", "", new_job=False), timeout=8)
    said = str(err.value)
    assert said.startswith("crashy's Deployments to roll out: not done after 8 s\n"), said
    assert "Deployment crashy: pod crashy-" in said and "container app waiting (CrashLoopBackOff, " in said
    assert "last exit code 3; log: starting | FATAL: /etc/crashy.conf: no such file" in said


def test_the_lab_files_charts_become_helmcharts_with_their_values_files(tmp_path):
    lab = load_lab(REPO / "parameters" / "sim.yaml")
    found = {c.name: c for c in charts.from_lab(lab)}
    assert sorted(found) == ["cert-manager", "metallb", "nfs-subdir-external-provisioner"]
    manager = found["cert-manager"].manifest()
    assert manager["spec"]["version"] == "v1.19.1" and manager["spec"]["targetNamespace"] == "infra"
    assert manager["spec"]["repo"] == "https://charts.jetstack.io" and manager["metadata"]["namespace"] == "kube-system"
    assert "--dns01-recursive-nameservers-only" in manager["spec"]["valuesContent"]
    assert found["metallb"].values["speaker"]["frr"] == {"enabled": False}

    (tmp_path / "list.yaml").write_text("- not\n- a mapping\n")
    doc = sim_lab(tmp_path)
    doc["charts"]["metallb"]["values"] = str(tmp_path / "list.yaml")
    with pytest.raises(LabError, match=r"charts.metallb.values: .*list.yaml must hold a YAML mapping of chart values"):
        charts.from_lab(load_lab(write_lab(tmp_path, doc)))


def _configmap(name: str, data: dict, namespace: str = "lab-objects") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, "data": data}


def test_manifests_apply_plan_nothing_then_diff_and_prune_only_what_labkit_applied(api, k3s):
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="lab-objects")))
    objects = [_configmap("pool-a", {"range": "10.0.0.1-10.0.0.9"}), _configmap("pool-b", {"range": "10.0.1.0/28"})]
    planned = manifests.deploy(api, "core-infra", objects)
    assert [(c.target, c.action, c.detail) for c in planned.changes()] == [
        ("ConfigMap/lab-objects/pool-a", "create", "absent"), ("ConfigMap/lab-objects/pool-b", "create", "absent")]
    live = core.read_namespaced_config_map("pool-a", "lab-objects")
    assert live.metadata.labels == {manifests.APPLIED_BY: "core-infra"}
    versions = {n: core.read_namespaced_config_map(n, "lab-objects").metadata.resource_version for n in ("pool-a", "pool-b")}

    assert manifests.deploy(api, "core-infra", objects).is_empty  # nothing to do, nothing written
    assert versions == {n: core.read_namespaced_config_map(n, "lab-objects").metadata.resource_version
                        for n in versions}

    changed = manifests.plan(api, "core-infra", [_configmap("pool-a", {"range": "10.0.0.1-10.0.0.20"}), objects[1]])
    assert [c.action for c in changed.changes()] == ["update", "unchanged"]
    assert "-  range: 10.0.0.1-10.0.0.9\n" in changed.items[0].diff
    assert "+  range: 10.0.0.1-10.0.0.20\n" in changed.items[0].diff

    # Someone else's objects with labkit's label copied on: never pruned (not applied by labkit).
    foreign = _configmap("hand-made", {"x": "1"})
    foreign["metadata"]["labels"] = {manifests.APPLIED_BY: "core-infra"}
    k3s.kubectl("create", "-f", "-", input=_yaml(foreign))
    other = _configmap("other-tool", {"y": "2"})
    other["metadata"]["labels"] = {manifests.APPLIED_BY: "core-infra"}
    k3s.kubectl("apply", "--server-side", "--field-manager=other-tool", "-f", "-", input=_yaml(other))

    pruned = manifests.deploy(api, "core-infra", objects[:1])
    assert [(c.target, c.action) for c in pruned.changes()] == [
        ("ConfigMap/lab-objects/pool-a", "unchanged"), ("ConfigMap/lab-objects/pool-b", "delete")]
    left = sorted(c.metadata.name for c in core.list_namespaced_config_map("lab-objects").items)
    assert left == ["hand-made", "kube-root-ca.crt", "other-tool", "pool-a"]


def test_an_object_of_a_kind_not_served_names_the_missing_crd(api):
    # cert-manager's chart is not installed in this cluster (MetalLB's is: its kinds are served).
    issuer = {"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": "letsencrypt-prod"},
              "spec": {"acme": {"server": "https://acme-v02.api.letsencrypt.org/directory"}}}
    planned = manifests.plan(api, "core-infra", [issuer])  # planned: the chart before it brings the CRD
    assert [(c.target, c.action) for c in planned.changes()] == [("ClusterIssuer/letsencrypt-prod", "create")]
    with pytest.raises(manifests.ManifestError, match=r"does not serve ClusterIssuer \(cert-manager.io/v1\); "
                       "install the chart that brings its CRD first"):
        manifests.apply(api, planned)


def _yaml(obj: dict) -> str:
    return yaml.safe_dump(obj)


def test_overlapped_charts_install_in_order_and_roll_out_side_by_side(api):
    """``overlap``: each chart's helm Job completes before the next chart is applied, the rollouts
    are waited for after the installs, and every workload is rolled out when apply returns."""
    names = ["overlap-grafana", "overlap-promtail"]
    found = [charts.Chart(name, chart=name.split("-")[1], version=version, repo="https://grafana.github.io/helm-charts",
                          target_namespace="overlap") for name, version in zip(names, ["9.2.10", "6.16.6"], strict=True)]
    steps: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def step(what: str, target: str = "") -> Iterator[None]:
        steps.append((what, target))
        yield

    planned = charts.plan(api, found)
    assert [c.action for c in planned.changes()] == ["install", "install"]
    done = charts.apply(api, planned, timeout=120, step=step, overlap=True)
    assert [c.target for c in done] == [f"HelmChart/{name}" for name in names]
    assert steps == [("install chart", names[0]), ("install chart", names[1]),
                     ("roll out chart", names[0]), ("roll out chart", names[1])]
    assert [_releases(api, "overlap", name) for name in names] == [["1:deployed"], ["1:deployed"]]
    apps = client.AppsV1Api(api)
    deployments, daemons = apps.list_namespaced_deployment("overlap").items, apps.list_namespaced_daemon_set("overlap").items
    assert deployments and daemons and all(charts._rolled_out(w) for w in [*deployments, *daemons])
    assert charts.verify(api, found) == []
