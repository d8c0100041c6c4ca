"""The Kubernetes API of the embedded lab through the kubernetes Python client (over HTTPS with
the kubeconfig's client certificate): CRUD, lists, watches, patches, apply, subresources."""

from __future__ import annotations

import itertools
import json

import pytest
import requests
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.labsim.kube_fixtures import RunningCluster
from tests.polling import wait_until

_ns_counter = itertools.count()


@pytest.fixture
def ns(shared_kube: RunningCluster) -> str:
    name = f"t{next(_ns_counter)}"
    client.CoreV1Api(shared_kube.api_client()).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def api(shared_kube: RunningCluster) -> client.ApiClient:
    return shared_kube.api_client()


def _deployment(name: str, replicas: int = 2, image: str = "nginx:1.27") -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                         {"name": "web", "image": image, "ports": [{"containerPort": 80}]},
                         {"name": "sidecar", "image": "busybox:1.36", "env": [{"name": "A", "value": "1"}]}]}}}}




def _status(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_nodes_deserialize_with_complete_status(api):
    nodes = client.CoreV1Api(api).list_node().items
    assert [n.metadata.name for n in nodes] == ["k3s-master", "k3s-worker-01", "k3s-worker-02"]
    master = nodes[0]
    assert master.status.node_info.boot_id and master.status.node_info.kubelet_version == "v1.34.3+k3s1"
    assert master.metadata.labels["node-role.kubernetes.io/control-plane"] == "true"
    assert {a.type for a in master.status.addresses} == {"InternalIP", "Hostname"}
    assert any(c.type == "Ready" and c.status == "True" for c in master.status.conditions)


def test_version_reports_k3s(api):
    info = client.VersionApi(api).get_code()
    assert (info.git_version, info.major, info.minor) == ("v1.34.3+k3s1", "1", "34")


def test_create_defaults_get_and_list_with_selectors_and_pages(api, ns):
    core = client.CoreV1Api(api)
    created = [core.create_namespaced_config_map(ns, {"metadata": {"generateName": "cm-", "labels": {
        "tier": "a" if i % 2 else "b"}}, "data": {"i": str(i)}}) for i in range(5)]
    first = created[0]
    assert first.metadata.name.startswith("cm-") and len(first.metadata.name) == 8
    assert first.metadata.uid and first.metadata.resource_version and first.metadata.creation_timestamp
    assert core.read_namespaced_config_map(first.metadata.name, ns).data == {"i": "0"}
    assert len(core.list_namespaced_config_map(ns, label_selector="tier=a").items) == 2
    assert len(core.list_namespaced_config_map(ns, label_selector="tier in (a,b),tier!=a").items) == 3
    by_name = core.list_namespaced_config_map(ns, field_selector=f"metadata.name={first.metadata.name}")
    assert [c.metadata.name for c in by_name.items] == [first.metadata.name]
    page = core.list_namespaced_config_map(ns, limit=2, label_selector="tier")
    names = [c.metadata.name for c in page.items]
    while page.metadata._continue:
        page = core.list_namespaced_config_map(ns, limit=2, label_selector="tier", _continue=page.metadata._continue)
        names += [c.metadata.name for c in page.items]
    assert sorted(names) == sorted(c.metadata.name for c in created)
    pod = core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "nginx"}]}})
    assert pod.spec.containers[0].image_pull_policy == "Always"
    assert pod.spec.restart_policy == "Always" and pod.spec.service_account_name == "default"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": first.metadata.name}})
    assert err.value.status == 409 and _status(err.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("no-such-ns", {"metadata": {"name": "x"}})
    assert err.value.status == 404


def test_update_with_stale_resource_version_conflicts(api, ns):
    core = client.CoreV1Api(api)
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    cm.data = {"a": "2"}
    updated = core.replace_namespaced_config_map("c", ns, cm)
    assert updated.metadata.resource_version != cm.metadata.resource_version
    cm.data = {"a": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("c", ns, cm)
    assert err.value.status == 409 and _status(err.value)["reason"] == "Conflict"


def test_strategic_merge_uses_the_types_merge_keys(api, ns):
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("smp"))
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "env": [{"name": "B", "value": "2"}]},
        {"name": "web", "ports": [{"containerPort": 443}]}]}}}}
    dep = apps.patch_namespaced_deployment("smp", ns, patch)  # the client sends strategic merge for dicts
    web, sidecar = dep.spec.template.spec.containers
    assert (web.image, sidecar.image) == ("nginx:1.27", "busybox:1.36")
    assert [p.container_port for p in web.ports] == [80, 443]
    assert [e.name for e in sidecar.env] == ["A", "B"]
    core.create_namespaced_service(ns, {"metadata": {"name": "svc"}, "spec": {
        "selector": {"app": "smp"}, "ports": [{"name": "http", "port": 80}]}})
    svc = core.patch_namespaced_service("svc", ns, {"spec": {"ports": [{"name": "https", "port": 443}]}})
    assert [(p.name, p.port, p.target_port) for p in svc.spec.ports] == [("http", 80, 80), ("https", 443, 443)]
    deleted = apps.patch_namespaced_deployment("smp", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "$patch": "delete"}]}}}})
    assert [c.name for c in deleted.spec.template.spec.containers] == ["web"]


def test_json_and_merge_patches(api, ns):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}})
    merged = core.patch_namespaced_config_map("c", ns, {"data": {"a": None, "c": "3"}},
                                              _content_type="application/merge-patch+json")
    assert merged.data == {"b": "2", "c": "3"}
    patched = core.patch_namespaced_config_map("c", ns, [{"op": "replace", "path": "/data/b", "value": "9"},
                                                         {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}])
    assert patched.data["b"] == "9" and patched.metadata.labels == {"x": "y"}
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("c", ns, [{"op": "test", "path": "/data/b", "value": "0"}])
    assert err.value.status == 422


def _apply(api, ns: str, body: dict, manager: str, force: bool = False) -> dict:
    cm = client.CoreV1Api(api).patch_namespaced_config_map(
        body["metadata"]["name"], ns, body, field_manager=manager, force=force,
        _content_type="application/apply-patch+yaml")
    return api.sanitize_for_serialization(cm)


def test_server_side_apply_tracks_ownership(api, ns):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned", "labels": {"l": "1"}},
          "data": {"a": "1", "b": "2"}}
    created = _apply(api, ns, cm, "alice")
    assert created["data"] == {"a": "1", "b": "2"}
    assert [(m["manager"], m["operation"]) for m in created["metadata"]["managedFields"]] == [("alice", "Apply")]
    del cm["data"]["b"]
    assert _apply(api, ns, cm, "alice")["data"] == {"a": "1"}  # the dropped field is removed
    with pytest.raises(ApiException) as err:
        _apply(api, ns, {**cm, "data": {"a": "other"}}, "bob")
    assert err.value.status == 409 and ".data.a" in _status(err.value)["message"]
    forced = _apply(api, ns, {**cm, "metadata": {"name": "owned"}, "data": {"a": "other"}}, "bob", force=True)
    assert forced["data"] == {"a": "other"}
    cm["data"] = {}
    # alice no longer owns data.a (bob took it): dropping it from her config leaves bob's value
    assert _apply(api, ns, cm, "alice")["data"] == {"a": "other"}


def test_watch_from_resource_version_timeout_and_gone(shared_kube, api, ns):
    core = client.CoreV1Api(api)
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w1"}})
    core.patch_namespaced_config_map("w1", ns, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("w1", ns)
    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        core.list_namespaced_config_map, ns, resource_version=start, timeout_seconds=1)]
    assert events == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]
    shared_kube.call(shared_kube.cluster.store.compact)
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=start, timeout_seconds=1))
    assert err.value.status == 410


def test_watch_list_ends_initial_events_with_a_bookmark(api, ns):
    core = client.CoreV1Api(api)
    for name in ("a", "b"):
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": {"watched": "yes"}}})
    stream = watch.Watch().stream(core.list_namespaced_config_map, ns, label_selector="watched", send_initial_events=True,
                                  resource_version_match="NotOlderThan", allow_watch_bookmarks=True,
                                  timeout_seconds=1)
    events = [(e["type"], e["raw_object"]["metadata"]) for e in stream]
    assert [t for t, _ in events[:3]] == ["ADDED", "ADDED", "BOOKMARK"]
    assert events[2][1]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_finalizers_and_propagation(api, ns):
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    core.delete_namespaced_config_map("held", ns)
    held = core.read_namespaced_config_map("held", ns)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}},
                                     _content_type="application/merge-patch+json")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("held", ns)
    assert err.value.status == 404
    owner = apps.create_namespaced_deployment(ns, _deployment("gc", replicas=1))
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gc", "uid": owner.metadata.uid}
    for name in ("dep-1", "dep-2"):
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "ownerReferences": [ref]}})
    apps.delete_namespaced_deployment("gc", ns, propagation_policy="Orphan")
    orphan = core.read_namespaced_config_map("dep-1", ns)
    assert not orphan.metadata.owner_references
    second = apps.create_namespaced_deployment(ns, _deployment("gc2", replicas=1))
    core.patch_namespaced_config_map("dep-2", ns, {"metadata": {"ownerReferences": [
        {**ref, "name": "gc2", "uid": second.metadata.uid}]}}, _content_type="application/merge-patch+json")
    apps.delete_namespaced_deployment("gc2", ns)
    wait_until(lambda: "dep-2" not in [c.metadata.name for c in core.list_namespaced_config_map(ns).items])


def test_status_and_scale_subresources(api, ns):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("sub", replicas=1))
    scale = apps.read_namespaced_deployment_scale("sub", ns)
    assert (scale.spec.replicas, scale.status.selector) == (1, "app=sub")
    apps.patch_namespaced_deployment_scale("sub", ns, {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment("sub", ns).spec.replicas == 3
    wait_until(lambda: apps.read_namespaced_deployment_status("sub", ns).status.ready_replicas == 3)
    dep = apps.read_namespaced_deployment("sub", ns)
    dep.status.replicas = 99
    dep.spec.replicas = 2
    stored = apps.replace_namespaced_deployment("sub", ns, dep)
    assert stored.spec.replicas == 2 and stored.status.replicas != 99  # the main resource ignores status
    assert stored.metadata.generation == 3


def test_eviction_honours_disruption_budgets(api, ns):
    apps, core, policy = client.AppsV1Api(api), client.CoreV1Api(api), client.PolicyV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("ev", replicas=2))
    wait_until(lambda: apps.read_namespaced_deployment_status("ev", ns).status.ready_replicas == 2)
    policy.create_namespaced_pod_disruption_budget(ns, {"metadata": {"name": "ev"}, "spec": {
        "minAvailable": 2, "selector": {"matchLabels": {"app": "ev"}}}})
    pod = core.list_namespaced_pod(ns, label_selector="app=ev").items[0].metadata.name
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": ns}}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod_eviction(pod, ns, eviction)
    assert err.value.status == 429 and "disruption budget" in _status(err.value)["message"]
    policy.patch_namespaced_pod_disruption_budget("ev", ns, {"spec": {"minAvailable": 1}})
    core.create_namespaced_pod_eviction(pod, ns, eviction)
    wait_until(lambda: pod not in [p.metadata.name for p in core.list_namespaced_pod(ns).items])


def test_pod_logs(api, ns):
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("logs", replicas=1))
    wait_until(lambda: apps.read_namespaced_deployment_status("logs", ns).status.ready_replicas == 1)
    pod = core.list_namespaced_pod(ns).items[0].metadata.name
    text = core.read_namespaced_pod_log(pod, ns, container="web")
    assert "start worker process" in text  # nginx:1.27 runs the real nginx, whose log this is
    assert len(core.read_namespaced_pod_log(pod, ns, container="web", tail_lines=1).splitlines()) == 1
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log(pod, ns)
    assert err.value.status == 400 and "choose one of" in _status(err.value)["message"]


def test_custom_resources(api, ns):
    ext, custom = client.ApiextensionsV1Api(api), client.CustomObjectsApi(api)
    ext.create_custom_resource_definition({"metadata": {"name": "widgets.example.com"}, "spec": {
        "group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                          "spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 3},
                                                                    "color": {"type": "string"}}},
                          "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]}})
    crd = ext.read_custom_resource_definition("widgets.example.com")
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    body = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"color": "red", "shape": "round"}}
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object("example.com", "v1", ns, "widgets", body, field_validation="Strict")
    assert err.value.status == 400 and 'unknown field "spec.shape"' in _status(err.value)["message"]
    widget = custom.create_namespaced_custom_object("example.com", "v1", ns, "widgets", body)
    # undeclared fields are pruned, schema defaults applied
    assert widget["spec"] == {"color": "red", "size": 3} and widget["metadata"]["generation"] == 1
    custom.patch_namespaced_custom_object_status("example.com", "v1", ns, "widgets", "w", {"status": {"ok": True}})
    listed = custom.list_namespaced_custom_object("example.com", "v1", ns, "widgets")
    assert listed["kind"] == "WidgetList" and listed["items"][0]["status"] == {"ok": True}
    ext.delete_custom_resource_definition("widgets.example.com")
    with pytest.raises(ApiException) as err:
        custom.list_namespaced_custom_object("example.com", "v1", ns, "widgets")
    assert err.value.status == 404


def test_namespace_deletion_removes_its_contents(api):
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "c"}})
    core.delete_namespace("doomed")
    wait_until(lambda: "doomed" not in [n.metadata.name for n in core.list_namespace().items])
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("c", "doomed")


def test_snapshot_and_restore(shared_kube, api, ns):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "keep"}, "data": {"v": "1"}})
    data = shared_kube.call(shared_kube.cluster.snapshot)
    core.delete_namespaced_config_map("keep", ns)
    shared_kube.call(shared_kube.cluster.restore, data)
    assert core.read_namespaced_config_map("keep", ns).data == {"v": "1"}


def _raw(shared: RunningCluster, path: str, accept: str = "application/json") -> requests.Response:
    cfg = shared.api_client().configuration
    return requests.get(shared.server + path, headers={"Accept": accept}, cert=(cfg.cert_file, cfg.key_file),
                        verify=cfg.ssl_ca_cert, timeout=10)


def test_discovery_legacy_and_aggregated(shared_kube, api):
    groups = {g.name: g.preferred_version.group_version for g in client.ApisApi(api).get_api_versions().groups}
    assert groups["apps"] == "apps/v1" and groups["policy"] == "policy/v1"
    resources = {r.name: r for r in client.AppsV1Api(api).get_api_resources().resources}
    assert resources["deployments"].short_names == ["deploy"] and "deployments/scale" in resources
    aggregated = _raw(shared_kube, "/apis", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    assert aggregated.headers["Content-Type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2")
    apps = next(i for i in aggregated.json()["items"] if i["metadata"]["name"] == "apps")
    deploy = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    assert {s["subresource"] for s in deploy["subresources"]} == {"status", "scale"}


def test_openapi_v3_patch_operations_carry_gvk_and_field_validation(shared_kube):
    index = _raw(shared_kube, "/openapi/v3").json()["paths"]
    doc = _raw(shared_kube, index["apis/apps/v1"]["serverRelativeURL"]).json()
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]


def test_table_output(shared_kube):
    table = _raw(shared_kube, "/api/v1/nodes", "application/json;as=Table;v=v1;g=meta.k8s.io").json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]][:5] == ["Name", "Status", "Roles", "Age", "Version"]
    assert table["rows"][0]["cells"][:2] == ["k3s-master", "Ready"]


def test_requests_without_a_client_certificate_are_refused(shared_kube):
    cfg = shared_kube.api_client().configuration
    anonymous = requests.get(shared_kube.server + "/api/v1/pods", verify=cfg.ssl_ca_cert, timeout=10)
    assert anonymous.status_code == 401


def test_filtered_watch_sees_objects_enter_and_leave_the_selection(api, ns):
    core = client.CoreV1Api(api)
    start = core.create_namespaced_config_map(ns, {"metadata": {"name": "m"}}).metadata.resource_version
    core.patch_namespaced_config_map("m", ns, {"metadata": {"labels": {"pick": "me"}}})
    core.patch_namespaced_config_map("m", ns, {"data": {"x": "1"}})
    core.patch_namespaced_config_map("m", ns, {"metadata": {"labels": {"pick": None}}})
    events = [e["type"] for e in watch.Watch().stream(core.list_namespaced_config_map, ns, label_selector="pick=me",
                                                      resource_version=start, timeout_seconds=1)]
    assert events == ["ADDED", "MODIFIED", "DELETED"]


def test_dry_run_and_access_reviews(api, ns):
    core = client.CoreV1Api(api)
    dry = core.create_namespaced_pod(ns, {"metadata": {"name": "dry"}, "spec": {"containers": [
        {"name": "c", "image": "nginx:1.27"}]}}, dry_run="All")
    assert dry.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert "dry" not in [p.metadata.name for p in core.list_namespaced_pod(ns).items]
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"verb": "delete", "resource": "nodes"}}})
    assert review.status.allowed is True


def test_watch_with_table_output_sends_one_row_tables(shared_kube, api, ns):
    client.CoreV1Api(api).create_namespaced_config_map(ns, {"metadata": {"name": "t"}, "data": {"a": "1"}})
    lines = _raw(shared_kube, f"/api/v1/namespaces/{ns}/configmaps?watch=1&timeoutSeconds=1&fieldSelector=metadata.name=t",
                 "application/json;as=Table;v=v1;g=meta.k8s.io").text.splitlines()
    event = json.loads(lines[0])
    assert event["type"] == "ADDED" and event["object"]["kind"] == "Table"
    assert event["object"]["rows"][0]["cells"][:2] == ["t", 1]


def test_updates_may_not_change_immutable_fields(api, ns):
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("imm", replicas=1))
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment("imm", ns, {"spec": {"selector": {"matchLabels": {"app": "other"}},
                                                                "template": {"metadata": {"labels": {"app": "other"}}}}})
    assert err.value.status == 422 and "spec.selector" in _status(err.value)["message"]
    core.create_namespaced_config_map(ns, {"metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": True})
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("frozen", ns, {"data": {"a": "2"}})
    assert err.value.status == 422


def test_follow_logs_streams_new_lines_until_the_pod_goes(shared_kube, api, ns):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(ns, {"metadata": {"name": "talker"}, "spec": {"containers": [
        {"name": "c", "image": "busybox:1.36"}]}})
    wait_until(lambda: core.read_namespaced_pod("talker", ns).status.phase == "Running")
    stream = core.read_namespaced_pod_log("talker", ns, follow=True, tail_lines=1, _preload_content=False)
    assert b"is running on" in stream.readline()
    shared_kube.call(shared_kube.cluster.logs.write, ns, "talker", "c", "hello from the model")
    assert stream.readline() == b"hello from the model\n"
    core.delete_namespaced_pod("talker", ns)
    assert stream.read() == b""  # the stream ends with the pod
