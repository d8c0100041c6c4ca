"""The controllers seen as a user sees them: through the Kubernetes API over HTTPS with the
Python client, and with real kubectl (rollout status, scale, set image, wait, cordon), on a
cluster of three Ready nodes."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from labsim.k3s.addons import k3s_crds, traefik
from tests.labsim.kube_fixtures import RunningCluster, running_cluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """One three-node cluster for the tests that keep to a namespace of their own."""
    with running_cluster(tmp_path_factory.mktemp("controllers"), nodes=3) as running:
        yield running


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    """A cluster of its own, for tests that move the lab clock or break nodes."""
    with running_cluster(tmp_path, nodes=3) as running:
        yield running

LOCAL_PATH = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
              "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
              "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
              "volumeBindingMode": "WaitForFirstConsumer"}


def until(predicate, timeout: float = 20.0):
    """Poll the API until ``predicate`` holds (the controllers run on the cluster's own thread)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def namespace(running: RunningCluster, name: str) -> client.ApiClient:
    api = running.api_client()
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return api


def deployment(name: str, replicas: int, image: str = "nginx:1.25") -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": image,
                                                           "ports": [{"name": "http", "containerPort": 80}]}]}}}}


def test_deployment_rollout_scale_and_set_image(shared: RunningCluster):
    api = namespace(shared, "rollout")
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment("rollout", deployment("web", 3))
    shared.kubectl("-n", "rollout", "rollout", "status", "deployment/web", "--timeout=60s")
    pods = core.list_namespaced_pod("rollout", label_selector="app=web").items  # typed: complete statuses
    assert len(pods) == 3 and {p.spec.node_name for p in pods} == {"k3s-master", "k3s-worker-01", "k3s-worker-02"}
    for pod in pods:
        assert pod.status.phase == "Running"
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(shared.cluster.cluster_cidr)
        (status,) = pod.status.container_statuses
        assert status.ready and status.started and status.image_id and status.container_id

    shared.kubectl("-n", "rollout", "scale", "deployment/web", "--replicas=5")
    shared.kubectl("-n", "rollout", "rollout", "status", "deployment/web", "--timeout=60s")
    assert len(core.list_namespaced_pod("rollout", label_selector="app=web").items) == 5

    shared.kubectl("-n", "rollout", "set", "image", "deployment/web", "web=nginx:1.27")
    out = shared.kubectl("-n", "rollout", "rollout", "status", "deployment/web", "--timeout=60s").stdout
    assert 'deployment "web" successfully rolled out' in out
    # as on a real cluster, old pods may still be terminating (graceful deletion) when the rollout is done
    images = {p.spec.containers[0].image for p in core.list_namespaced_pod("rollout", label_selector="app=web").items
              if p.metadata.deletion_timestamp is None}
    assert images == {"nginx:1.27"}
    history = shared.kubectl("-n", "rollout", "rollout", "history", "deployment/web").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]

    shared.kubectl("-n", "rollout", "rollout", "undo", "deployment/web")
    shared.kubectl("-n", "rollout", "rollout", "status", "deployment/web", "--timeout=60s")
    web = apps.read_namespaced_deployment("web", "rollout")
    assert web.spec.template.spec.containers[0].image == "nginx:1.25"
    assert web.metadata.annotations["deployment.kubernetes.io/revision"] == "3"


def test_service_cluster_ip_and_endpoints(shared: RunningCluster):
    api = namespace(shared, "svc")
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment("svc", deployment("web", 2))
    core.create_namespaced_service("svc", {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    ep = until(lambda: (e := _read(core.read_namespaced_endpoints, "web", "svc")) and e.subsets
               and len(e.subsets[0].addresses or []) == 2 and e)
    assert ep.subsets[0].ports[0].port == 80 and ep.subsets[0].ports[0].name == "http"
    svc = core.read_namespaced_service("web", "svc")
    assert ipaddress.ip_address(svc.spec.cluster_ip) in ipaddress.ip_network(shared.cluster.service_cidr)
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        "svc", label_selector="kubernetes.io/service-name=web").items
    assert len(slices) == 1 and len(slices[0].endpoints) == 2 and slices[0].address_type == "IPv4"
    api_server = core.read_namespaced_endpoints("kubernetes", "default").subsets[0]
    assert shared.server == f"https://{api_server.addresses[0].ip}:{api_server.ports[0].port}"


def test_statefulset_claims_and_daemonset(shared: RunningCluster):
    api = namespace(shared, "state")
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    if not _read(client.StorageV1Api(api).read_storage_class, "local-path"):
        client.StorageV1Api(api).create_storage_class(LOCAL_PATH)
    apps.create_namespaced_stateful_set("state", {
        "metadata": {"name": "db"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
    shared.kubectl("-n", "state", "rollout", "status", "statefulset/db", "--timeout=60s")
    claims = core.list_namespaced_persistent_volume_claim("state").items
    assert sorted(c.metadata.name for c in claims) == ["data-db-0", "data-db-1"]
    assert {c.status.phase for c in claims} == {"Bound"}
    volumes = {v.metadata.name: v for v in core.list_persistent_volume().items}
    for claim in claims:
        assert volumes[claim.spec.volume_name].spec.claim_ref.name == claim.metadata.name

    apps.create_namespaced_daemon_set("state", {
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}}}})
    shared.kubectl("-n", "state", "rollout", "status", "daemonset/agent", "--timeout=60s")
    nodes = {p.spec.node_name for p in core.list_namespaced_pod("state", label_selector="app=agent").items}
    assert nodes == {"k3s-master", "k3s-worker-01", "k3s-worker-02"}

    shared.kubectl("-n", "state", "set", "image", "daemonset/agent", "agent=agent:2")
    shared.kubectl("-n", "state", "rollout", "status", "daemonset/agent", "--timeout=60s")
    shared.kubectl("-n", "state", "rollout", "undo", "daemonset/agent")
    shared.kubectl("-n", "state", "rollout", "status", "daemonset/agent", "--timeout=60s")
    images = {p.spec.containers[0].image for p in core.list_namespaced_pod("state", label_selector="app=agent").items}
    assert images == {"agent:1"}
    history = shared.kubectl("-n", "state", "rollout", "history", "daemonset/agent").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"]


def test_job_completes_for_kubectl_wait(shared: RunningCluster):
    api = namespace(shared, "batch")
    client.BatchV1Api(api).create_namespaced_job("batch", {
        "metadata": {"name": "once"},
        "spec": {"completions": 2, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "task", "image": "busybox:1.36", "command": ["true"]}]}}}})
    shared.kubectl("-n", "batch", "wait", "--for=condition=complete", "job/once", "--timeout=60s")
    job = client.BatchV1Api(api).read_namespaced_job("once", "batch")
    assert job.status.succeeded == 2 and job.status.completion_time


def test_cascading_and_orphaning_deletes(shared: RunningCluster):
    api = namespace(shared, "gc")
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment("gc", deployment("web", 2))
    until(lambda: len(_running(core, "gc")) == 2)
    shared.kubectl("-n", "gc", "delete", "deployment/web", "--cascade=orphan")
    (rs,) = apps.list_namespaced_replica_set("gc").items
    assert not rs.metadata.owner_references and len(_running(core, "gc")) == 2
    apps.create_namespaced_deployment("gc", deployment("web", 2))  # adopts the orphaned ReplicaSet
    until(lambda: (r := apps.list_namespaced_replica_set("gc").items) and r[0].metadata.owner_references)
    apps.delete_namespaced_deployment("web", "gc", propagation_policy="Foreground")
    until(lambda: not apps.list_namespaced_replica_set("gc").items and not core.list_namespaced_pod("gc").items)

    apps.create_namespaced_deployment("gc", deployment("again", 1))
    until(lambda: len(_running(core, "gc")) == 1)
    core.delete_namespace("gc")
    until(lambda: not _read(core.read_namespace, "gc"))


def test_cronjob_fires_when_the_lab_clock_advances(cluster: RunningCluster):
    api = namespace(cluster, "cron")
    batch = client.BatchV1Api(api)
    batch.create_namespaced_cron_job("cron", {
        "metadata": {"name": "dump"},
        "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "dump", "image": "busybox:1.36",
                                                             "command": ["sh", "-c", "echo dumped"]}]}}}}}})
    until(lambda: batch.read_namespaced_cron_job("dump", "cron").status)  # seen by the controller
    assert batch.list_namespaced_job("cron").items == []
    cluster.call(cluster.cluster.clock.advance, 24 * 3600)
    (job,) = until(lambda: batch.list_namespaced_job("cron").items)
    assert job.metadata.name.startswith("dump-") and job.metadata.owner_references[0].kind == "CronJob"
    cluster.kubectl("-n", "cron", "wait", "--for=condition=complete", f"job/{job.metadata.name}", "--timeout=60s")
    cron = until(lambda: (c := batch.read_namespaced_cron_job("dump", "cron")).status.last_successful_time and c)
    assert cron.status.last_schedule_time.hour == 2


def test_cordon_not_ready_node_and_upgrade(cluster: RunningCluster):
    api = namespace(cluster, "nodes")
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    cluster.kubectl("cordon", "k3s-worker-02")
    apps.create_namespaced_deployment("nodes", deployment("web", 4))
    cluster.kubectl("-n", "nodes", "rollout", "status", "deployment/web", "--timeout=60s")
    placed = {p.spec.node_name for p in _running(core, "nodes")}
    assert placed == {"k3s-master", "k3s-worker-01"}
    node = core.read_node("k3s-worker-02")
    assert node.spec.unschedulable and any(t.key == "node.kubernetes.io/unschedulable" for t in node.spec.taints)
    cluster.kubectl("uncordon", "k3s-worker-02")

    victims = {p.metadata.name for p in _running(core, "nodes") if p.spec.node_name == "k3s-worker-01"}
    cluster.call(cluster.cluster.set_node_ready, "k3s-worker-01", False)
    until(lambda: all(not _ready(p) for p in core.list_namespaced_pod("nodes").items if p.metadata.name in victims))
    cluster.call(cluster.cluster.clock.advance, 301)  # the pods' not-ready toleration (300 s) runs out
    until(lambda: len(running := _running(core, "nodes")) == 4 and all(_ready(p) for p in running)
          and not victims & {p.metadata.name for p in running})
    assert "k3s-worker-01" not in {p.spec.node_name for p in _running(core, "nodes")}

    # An upgraded k3s (a new kubelet version, the same boot) restarts k3s only: the containers run on
    # (KillMode=process); a new boot ID is what restarts them (test_controllers_cluster).
    on_master = {p.metadata.name: p.status.container_statuses[0] for p in _running(core, "nodes")
                 if p.spec.node_name == "k3s-master"}
    cluster.call(cluster.cluster.set_node_version, "k3s-master", "v1.34.4+k3s1")
    assert core.read_node("k3s-master").status.node_info.kubelet_version == "v1.34.4+k3s1"
    time.sleep(1)  # the kubelet would have restarted them by now
    after = {p.metadata.name: p.status.container_statuses[0] for p in _running(core, "nodes") if p.metadata.name in on_master}
    assert {name: (cs.container_id, cs.restart_count) for name, cs in after.items()} == {
        name: (cs.container_id, 0) for name, cs in on_master.items()}


def _read(fn, *args):
    try:
        return fn(*args)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _running(core: client.CoreV1Api, ns: str) -> list:
    return [p for p in core.list_namespaced_pod(ns).items if p.status.phase == "Running"]


@pytest.mark.parametrize("helm", ["helm4", "helm3"])
def test_helmchart_release_is_seen_by_helm(shared: RunningCluster, helm: str):
    if not _read(client.CustomObjectsApi(shared.api_client()).get_cluster_custom_object,
                 "apiextensions.k8s.io", "v1", "customresourcedefinitions", "helmcharts.helm.cattle.io"):
        shared.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(k3s_crds()))
        shared.kubectl("wait", "--for=condition=Established", "crd/helmcharts.helm.cattle.io", "--timeout=10s")
        shared.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(traefik()))
    shared.kubectl("-n", "kube-system", "wait", "--for=condition=complete", "job/helm-install-traefik", "--timeout=60s")
    shared.kubectl("-n", "kube-system", "rollout", "status", "deployment/traefik", "--timeout=60s")
    def deployed() -> dict | None:
        found = json.loads(shared.tool(helm, "list", "-n", "kube-system", "-o", "json").stdout)
        return next((r for r in found if r["name"] == "traefik" and r["status"] == "deployed"), None)

    traefik_release = until(deployed)
    assert traefik_release["chart"] == "traefik-37.1.1+up37.1.0" and traefik_release["revision"] == "1"
    values = shared.tool(helm, "get", "values", "traefik", "-n", "kube-system", "-o", "json").stdout
    assert json.loads(values)["image"]["repository"] == "rancher/mirrored-library-traefik"
