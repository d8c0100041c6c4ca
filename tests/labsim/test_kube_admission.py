"""Admission of the embedded lab's API server, with real kubectl and the Python client: built-in
validation (422 with the real messages and causes), LimitRanger, ResourceQuota and its
controller, and field selectors limited per resource."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.labsim.kube_fixtures import RunningCluster, new_namespace
from tests.polling import wait_until


@pytest.fixture(scope="module")
def api(shared_kube: RunningCluster) -> client.ApiClient:
    return shared_kube.api_client()


@pytest.fixture
def ns(api: client.ApiClient) -> str:
    return new_namespace(api, "adm")


def _refused(call, *args, status: int = 422, **kwargs) -> dict:
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    assert caught.value.status == status, caught.value.body
    return json.loads(caught.value.body)


def _deployment(name: str, **spec) -> dict:
    body = {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {**body, **spec}}


def _pod(name: str, resources: dict | None = None, containers: list | None = None) -> dict:
    return {"metadata": {"name": name}, "spec": {"containers": containers or [
        {"name": "app", "image": "busybox:1.36", "resources": resources or {}}]}}


def test_built_in_validation_refuses_with_the_real_messages(shared_kube: RunningCluster, api, ns) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    body = _refused(apps.create_namespaced_deployment, ns, _deployment("neg", replicas=-1), dry_run="All")
    assert body["message"] == ('Deployment.apps "neg" is invalid: spec.replicas: Invalid value: -1: must be '
                               "greater than or equal to 0")
    assert body["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                          "message": "Invalid value: -1: must be greater than or equal to 0"}]
    mismatch = _deployment("mismatch")
    mismatch["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    body = _refused(apps.create_namespaced_deployment, ns, mismatch)
    assert body["details"]["causes"][0]["message"] == ('Invalid value: map[string]string{"app":"mismatch"}: '
                                                       "`selector` does not match template `labels`")
    twins = [{"name": "app", "image": "busybox:1.36", "ports": [{"containerPort": 70000}]},
             {"name": "app", "image": "busybox:1.36", "resources": {"requests": {"cpu": "2"},
                                                                    "limits": {"cpu": "1"}}}]
    body = _refused(core.create_namespaced_pod, ns, _pod("twins", containers=twins))
    causes = {(c["field"], c["reason"], c["message"]) for c in body["details"]["causes"]}
    assert causes == {
        ("spec.containers[0].ports[0].containerPort", "FieldValueInvalid",
         "Invalid value: 70000: must be between 1 and 65535, inclusive"),
        ("spec.containers[1].name", "FieldValueDuplicate", 'Duplicate value: "app"'),
        ("spec.containers[1].resources.requests[cpu]", "FieldValueInvalid",
         'Invalid value: "2": must be less than or equal to cpu limit of 1')}
    assert body["message"].startswith('Pod "twins" is invalid: [')
    body = _refused(core.create_namespaced_secret, ns, {"metadata": {"name": "cert"}, "type": "kubernetes.io/tls",
                                                        "data": {"tls.crt": "Zm9v"}})
    assert body["message"] == 'Secret "cert" is invalid: data[tls.key]: Required value'
    body = _refused(core.create_namespaced_config_map, ns, {"metadata": {"name": "Bad_Name", "labels": {
        "tier": "front end"}}})
    assert [c["field"] for c in body["details"]["causes"]] == ["metadata.name", "metadata.labels"]
    assert "a lowercase RFC 1123 subdomain must consist of" in body["details"]["causes"][0]["message"]
    assert body["details"]["causes"][1]["message"].startswith('Invalid value: "front end": a valid label must be')

    bad = shared_kube.kubectl("apply", "-f", "-", "-n", ns, check=False,
                              input=json.dumps(_deployment("neg", replicas=-1)))
    assert bad.returncode == 1
    assert ('The Deployment "neg" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal '
            "to 0") in bad.stderr


def test_immutable_fields_on_update(api, ns) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "Yg=="}})
    body = _refused(core.patch_namespaced_secret, "s", ns, {"type": "kubernetes.io/basic-auth",
                                                            "data": {"username": "dQ=="}})
    assert body["message"] == 'Secret "s" is invalid: type: Invalid value: "kubernetes.io/basic-auth": field is immutable'
    sts = {"metadata": {"name": "db"}, "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                                                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                                                    "containers": [{"name": "db", "image": "postgres:16"}]}}}}
    apps.create_namespaced_stateful_set(ns, sts)
    body = _refused(apps.patch_namespaced_stateful_set, "db", ns, {"spec": {"serviceName": "other"}})
    assert body["details"]["causes"][0]["message"].startswith(
        "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', ")
    apps.patch_namespaced_stateful_set("db", ns, {"spec": {"replicas": 2}})  # allowed


def test_limit_range_defaults_and_bounds(api, ns) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_limit_range(ns, {"metadata": {"name": "limits"}, "spec": {"limits": [{
        "type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
        "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}, "maxLimitRequestRatio": {"cpu": "5"}}]}})
    pod = core.create_namespaced_pod(ns, _pod("defaulted"))
    resources = pod.spec.containers[0].resources
    assert resources.limits == {"cpu": "500m", "memory": "256Mi"}
    assert resources.requests == {"cpu": "100m", "memory": "256Mi"}
    body = _refused(core.create_namespaced_pod, ns, _pod("big", {"limits": {"cpu": "2"}}), status=403)
    assert body["message"] == 'pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2'
    body = _refused(core.create_namespaced_pod, ns, _pod("spiky", {"requests": {"cpu": "100m"},
                                                                   "limits": {"cpu": "800m"}}), status=403)
    assert body["message"] == ('pods "spiky" is forbidden: cpu max limit to request ratio per Container is 5, '
                               "but provided ratio is 8.000000")


def test_resource_quota_counts_and_refuses(shared_kube: RunningCluster, api, ns) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(ns, {"metadata": {"name": "small"}, "spec": {"hard": {
        "pods": "2", "requests.cpu": "1", "count/configmaps": "3"}}})

    def used() -> dict:
        status = core.read_namespaced_resource_quota("small", ns).status
        return (status.used or {}) if status else {}

    wait_until(lambda: used().get("pods") == "0")
    body = _refused(core.create_namespaced_pod, ns, _pod("no-requests"), status=403)
    assert body["message"] == ('pods "no-requests" is forbidden: failed quota: small: must specify requests.cpu '
                               "for: app")
    core.create_namespaced_pod(ns, _pod("a", {"requests": {"cpu": "600m"}}))
    wait_until(lambda: used().get("requests.cpu") == "600m")
    body = _refused(core.create_namespaced_pod, ns, _pod("b", {"requests": {"cpu": "500m"}}), status=403)
    assert body["message"] == ('pods "b" is forbidden: exceeded quota: small, requested: requests.cpu=500m, '
                               "used: requests.cpu=600m, limited: requests.cpu=1")
    core.create_namespaced_pod(ns, _pod("c", {"requests": {"cpu": "400m"}}))
    wait_until(lambda: used().get("pods") == "2" and used().get("requests.cpu") == "1")
    wait_until(lambda: used().get("count/configmaps") == "1")  # kube-root-ca.crt
    done = shared_kube.kubectl("create", "configmap", "one", "-n", ns)
    assert done.returncode == 0
    wait_until(lambda: used().get("count/configmaps") == "2")
    shared_kube.kubectl("create", "configmap", "two", "-n", ns)
    wait_until(lambda: used().get("count/configmaps") == "3")
    over = shared_kube.kubectl("create", "configmap", "three", "-n", ns, check=False)
    assert ('configmaps "three" is forbidden: exceeded quota: small, requested: count/configmaps=1, used: '
            "count/configmaps=3, limited: count/configmaps=3") in over.stderr
    described = shared_kube.kubectl("describe", "quota", "small", "-n", ns).stdout
    assert "requests.cpu" in described and "1" in described


def test_field_selectors_are_limited_per_resource(shared_kube: RunningCluster, api, ns) -> None:
    core = client.CoreV1Api(api)
    assert core.list_namespaced_pod(ns, field_selector="status.phase=Running").items == []
    body = _refused(core.list_namespaced_config_map, ns, field_selector="data.a=1", status=400)
    assert body["message"] == "field label not supported: data.a"
    done = shared_kube.kubectl("get", "pods", "-n", ns, "--field-selector", "spec.foo=bar", check=False)
    assert "field label not supported: spec.foo" in done.stderr
    assert core.list_namespaced_config_map(ns, field_selector="metadata.name=kube-root-ca.crt").items


CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": "backups.lab.example.com"},
       "spec": {"group": "lab.example.com", "scope": "Namespaced",
                "names": {"plural": "backups", "singular": "backup", "kind": "Backup", "listKind": "BackupList"},
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                    "type": "object", "properties": {"spec": {
                        "type": "object", "required": ["schedule"],
                        "x-kubernetes-validations": [
                            {"rule": "self.keep >= oldSelf.keep", "message": "keep may only grow"},
                            {"rule": "!has(self.suspend) || !self.suspend || self.keep > 0"}],
                        "properties": {
                            "schedule": {"type": "string", "pattern": "^[0-9*/ ,-]+$", "maxLength": 20},
                            "keep": {"type": "integer", "minimum": 0, "maximum": 30},
                            "target": {"type": "string", "enum": ["etcd", "postgres"]},
                            "port": {"x-kubernetes-int-or-string": True},
                            "suspend": {"type": "boolean"},
                            "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"},
                                     "x-kubernetes-list-type": "set"}}}}}}}]}}


def test_crd_schema_and_cel_rules(shared_kube: RunningCluster, api, ns) -> None:
    client.ApiextensionsV1Api(api).create_custom_resource_definition(CRD)
    custom = client.CustomObjectsApi(api)

    def backup(name: str, **spec) -> dict:
        return {"apiVersion": "lab.example.com/v1", "kind": "Backup", "metadata": {"name": name}, "spec": spec}

    def create(name: str, **spec):
        return custom.create_namespaced_custom_object("lab.example.com", "v1", ns, "backups", backup(name, **spec))

    wait_until(lambda: shared_kube.kubectl("get", "backups", "-n", ns, check=False).returncode == 0)
    with pytest.raises(ApiException) as caught:
        create("bad", schedule="every day!", keep=40, target="s3", port=1.5, tags=["a", "a", "b"])
    body = json.loads(caught.value.body)
    assert caught.value.status == 422 and body["reason"] == "Invalid"
    causes = {(c["field"], c["message"]) for c in body["details"]["causes"]}
    assert causes == {
        ("spec.schedule", "Invalid value: \"every day!\": spec.schedule in body should match '^[0-9*/ ,-]+$'"),
        ("spec.keep", "Invalid value: 40: spec.keep in body should be less than or equal to 30"),
        ("spec.target", 'Unsupported value: "s3": supported values: "etcd", "postgres"'),
        ("spec.port", 'Invalid value: "number": spec.port in body must be of type integer,string: "number"'),
        ("spec.tags", "Too many: 3: must have at most 2 items"),
        ("spec.tags[1]", 'Duplicate value: "a"')}
    assert body["message"].startswith('Backup.lab.example.com "bad" is invalid: [')
    with pytest.raises(ApiException) as refused:
        create("empty")
    missing = json.loads(refused.value.body)
    assert missing["details"]["causes"] == [{"reason": "FieldValueRequired", "message": "Required value",
                                             "field": "spec.schedule"}]
    with pytest.raises(ApiException) as refused:
        create("paused", schedule="0 3 * * *", keep=0, suspend=True)
    rule = json.loads(refused.value.body)
    assert rule["details"]["causes"][0]["message"] == ('Invalid value: "object": failed rule: !has(self.suspend) '
                                                       "|| !self.suspend || self.keep > 0")
    create("nightly", schedule="0 3 * * *", keep=7, port="http")
    # the transition rule judges updates: keep may grow, not shrink
    custom.patch_namespaced_custom_object("lab.example.com", "v1", ns, "backups", "nightly", {"spec": {"keep": 9}})
    shrink = shared_kube.kubectl("patch", "backup", "nightly", "-n", ns, "--type=merge", "-p",
                                 '{"spec":{"keep":3}}', check=False)
    assert shrink.returncode == 1
    assert 'The Backup "nightly" is invalid: spec: Invalid value: "object": keep may only grow' in shrink.stderr
    stored = custom.get_namespaced_custom_object("lab.example.com", "v1", ns, "backups", "nightly")
    assert stored["spec"]["keep"] == 9


def test_foreground_deletion_and_namespace_termination(shared_kube: RunningCluster, api, ns) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(ns, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid,
           "blockOwnerDeletion": True}
    core.create_namespaced_config_map(ns, {"metadata": {"name": "held", "ownerReferences": [ref],
                                                        "finalizers": ["lab.example.com/hold"]}})
    shared_kube.kubectl("delete", "configmap", "owner", "-n", ns, "--cascade=foreground", "--wait=false")
    marked = core.read_namespaced_config_map("owner", ns)
    assert marked.metadata.deletion_timestamp and marked.metadata.finalizers == ["foregroundDeletion"]
    wait_until(lambda: core.read_namespaced_config_map("held", ns).metadata.deletion_timestamp)
    assert core.read_namespaced_config_map("owner", ns).metadata.deletion_timestamp  # still waiting

    core.delete_namespace(ns)

    def conditions() -> dict:
        status = core.read_namespace(ns).status
        return {c.type: (c.status, c.reason, c.message) for c in status.conditions or []}

    wait_until(lambda: conditions().get("NamespaceFinalizersRemaining", ("",))[0] == "True")
    found = conditions()
    assert found["NamespaceFinalizersRemaining"] == (
        "True", "SomeFinalizersRemain",
        "Some content in the namespace has finalizers remaining: foregroundDeletion in 1 resource instances, "
        "lab.example.com/hold in 1 resource instances")
    assert found["NamespaceContentRemaining"] == ("True", "SomeResourcesRemain",
                                                  "Some resources are remaining: configmaps. has 2 resource instances")
    assert found["NamespaceDeletionContentFailure"][0] == "False"
    refused = _refused(core.create_namespaced_config_map, ns, {"metadata": {"name": "late"}}, status=403)
    assert refused["message"].endswith("because it is being terminated")
    core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})
    wait_until(lambda: not core.list_namespaced_config_map(ns).items)  # dependent gone, then its owner

    def gone() -> bool:
        try:
            core.read_namespace(ns)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until(gone)


def test_rollout_history_shows_change_cause(shared_kube: RunningCluster, api, ns) -> None:
    apps = client.AppsV1Api(api)
    body = _deployment("web")
    body["metadata"]["annotations"] = {"kubernetes.io/change-cause": "first release"}
    apps.create_namespaced_deployment(ns, body)
    wait_until(lambda: apps.list_namespaced_replica_set(ns).items)
    apps.patch_namespaced_deployment("web", ns, {
        "metadata": {"annotations": {"kubernetes.io/change-cause": "nginx 1.28"}},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}})
    wait_until(lambda: len(apps.list_namespaced_replica_set(ns).items) == 2)
    history = shared_kube.kubectl("rollout", "history", "deployment/web", "-n", ns).stdout.splitlines()
    assert [line.split(None, 1) for line in history[1:] if line.strip()][-2:] == [["1", "first release"],
                                                                                  ["2", "nginx 1.28"]]


def test_pods_need_their_service_account(api, ns) -> None:
    core = client.CoreV1Api(api)
    pod = _pod("runner")
    pod["spec"]["serviceAccountName"] = "builder"
    body = _refused(core.create_namespaced_pod, ns, pod, status=403)
    assert body["message"] == (f'pods "runner" is forbidden: error looking up service account {ns}/builder: '
                               'serviceaccount "builder" not found')
    core.create_namespaced_service_account(ns, {"metadata": {"name": "builder"}})
    assert core.create_namespaced_pod(ns, pod).spec.service_account_name == "builder"
