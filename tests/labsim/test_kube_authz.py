"""Authentication and RBAC of the embedded lab's API server, with real kubectl 1.32/1.34 and the
Python client: ServiceAccount tokens (projected and legacy Secrets), impersonation, the default
roles and their aggregation, the access reviews, and 403 bodies worded as the real server's."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.labsim.kube_fixtures import RunningCluster, new_namespace
from tests.polling import wait_until

RBAC = "rbac.authorization.k8s.io"


@pytest.fixture(scope="module")
def api(shared_kube: RunningCluster) -> client.ApiClient:
    return shared_kube.api_client()


@pytest.fixture
def ns(api: client.ApiClient) -> str:
    return new_namespace(api, "authz")


def _account(api: client.ApiClient, ns: str, name: str, role: str | None = "view") -> str:
    """A ServiceAccount bound to a ClusterRole in ``ns``; its projected token."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(ns, {"metadata": {"name": name}})
    if role:
        client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(ns, {
            "metadata": {"name": f"{name}-{role}"}, "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]})
    request = core.create_namespaced_service_account_token(name, ns, {"spec": {"expirationSeconds": 3600}})
    return request.status.token


def _token_client(kube: RunningCluster, token: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = kube.server
    configuration.ssl_ca_cert = str(kube.cluster.state_dir / "tls" / "ca.crt")
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def _as_token(kube: RunningCluster, token: str) -> list[str]:
    """kubectl flags that use a bearer token instead of the kubeconfig's certificate."""
    return ["--server", kube.server, "--certificate-authority", str(kube.cluster.state_dir / "tls" / "ca.crt"),
            "--token", token, "--kubeconfig", "/dev/null"]


@pytest.mark.parametrize("version", ["1.32", "1.34"])
def test_read_only_service_account_reads_but_cannot_delete(shared_kube: RunningCluster, api, ns, version) -> None:
    token = _account(api, ns, "reader")
    client.CoreV1Api(api).create_namespaced_config_map(ns, {"metadata": {"name": "settings"}, "data": {"a": "1"}})
    flags = _as_token(shared_kube, token)
    listed = shared_kube.kubectl("get", "configmaps", "-n", ns, "-o", "name", *flags, version=version)
    assert "configmap/settings" in listed.stdout
    denied = shared_kube.kubectl("delete", "configmap", "settings", "-n", ns, *flags, version=version, check=False)
    assert denied.returncode == 1
    assert (f'Error from server (Forbidden): configmaps "settings" is forbidden: User '
            f'"system:serviceaccount:{ns}:reader" cannot delete resource "configmaps" in API group "" in the '
            f'namespace "{ns}"') in denied.stderr
    other = shared_kube.kubectl("get", "secrets", "-n", "default", *flags, version=version, check=False)
    assert (f'secrets is forbidden: User "system:serviceaccount:{ns}:reader" cannot list resource "secrets" in '
            f'API group "" in the namespace "default"') in other.stderr
    nodes = shared_kube.kubectl("get", "nodes", *flags, version=version, check=False)
    assert 'cannot list resource "nodes" in API group "" at the cluster scope' in nodes.stderr
    assert client.CoreV1Api(api).read_namespaced_config_map("settings", ns).data == {"a": "1"}


@pytest.mark.parametrize("version", ["1.32", "1.34"])
def test_can_i_and_whoami_answer_truthfully(shared_kube: RunningCluster, api, ns, version) -> None:
    token = _account(api, ns, "viewer")
    subject = f"system:serviceaccount:{ns}:viewer"

    def can_i(*args: str, flags: tuple[str, ...] = ()) -> tuple[int, str]:
        done = shared_kube.kubectl("auth", "can-i", *args, *flags, version=version, check=False)
        return done.returncode, done.stdout.strip()

    assert can_i("delete", "configmaps", "-n", ns, f"--as={subject}") == (1, "no")
    assert can_i("get", "configmaps", "-n", ns, f"--as={subject}") == (0, "yes")
    assert can_i("get", "deployments.apps", "-n", ns, f"--as={subject}") == (0, "yes")
    assert can_i("get", "secrets", "-n", ns, f"--as={subject}") == (1, "no")  # view does not read Secrets
    assert can_i("create", "pods/exec", "-n", ns, f"--as={subject}") == (1, "no")
    assert can_i("delete", "configmaps", "-n", ns) == (0, "yes")  # system:admin is in system:masters
    assert can_i("get", "configmaps", "-n", ns, flags=tuple(_as_token(shared_kube, token)))[1] == "yes"
    listed = shared_kube.kubectl("auth", "can-i", "--list", "-n", ns, f"--as={subject}", version=version)
    assert "selfsubjectaccessreviews.authorization.k8s.io" in listed.stdout and "configmaps" in listed.stdout

    admin = json.loads(shared_kube.kubectl("auth", "whoami", "-o", "json", version=version).stdout)
    assert admin["status"]["userInfo"] == {"username": "system:admin",
                                           "groups": ["system:masters", "system:authenticated"]}
    mine = json.loads(shared_kube.kubectl("auth", "whoami", "-o", "json", *_as_token(shared_kube, token),
                                          version=version).stdout)["status"]["userInfo"]
    assert mine["username"] == subject
    assert mine["groups"] == ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]
    assert mine["extra"]["authentication.kubernetes.io/credential-id"][0].startswith("JTI=")


def test_impersonation_needs_rbac(shared_kube: RunningCluster, api, ns) -> None:
    token = _account(api, ns, "plain")
    flags = _as_token(shared_kube, token)
    denied = shared_kube.kubectl("get", "pods", "-n", ns, "--as=jane", *flags, check=False)
    assert (f'users "jane" is forbidden: User "system:serviceaccount:{ns}:plain" cannot impersonate resource '
            f'"users" in API group "" at the cluster scope') in denied.stderr
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role({"metadata": {"name": f"{ns}-impersonate-jane"}, "rules": [
        {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["jane"]}]})
    rbac.create_cluster_role_binding({"metadata": {"name": f"{ns}-impersonate-jane"},
                                      "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole",
                                                  "name": f"{ns}-impersonate-jane"},
                                      "subjects": [{"kind": "ServiceAccount", "name": "plain", "namespace": ns}]})
    who = json.loads(shared_kube.kubectl("auth", "whoami", "-o", "json", "--as=jane", *flags).stdout)
    assert who["status"]["userInfo"] == {"username": "jane", "groups": ["system:authenticated"]}
    # jane herself may do nothing in the namespace; impersonating a group needs its own grant
    as_jane = shared_kube.kubectl("get", "pods", "-n", ns, "--as=jane", *flags, check=False)
    assert f'User "jane" cannot list resource "pods" in API group "" in the namespace "{ns}"' in as_jane.stderr
    group = shared_kube.kubectl("get", "pods", "-n", ns, "--as=jane", "--as-group=system:masters", *flags,
                                check=False)
    assert 'groups "system:masters" is forbidden' in group.stderr


def test_rules_resource_names_subresources_and_missing_roles(shared_kube: RunningCluster, api, ns) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(ns, {"metadata": {"name": "one-map"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["allowed"], "verbs": ["get", "update"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["*"]}]})
    token = _account(api, ns, "narrow", role=None)
    for name, role_kind, role in (("narrow-one-map", "Role", "one-map"), ("narrow-gone", "Role", "gone")):
        rbac.create_namespaced_role_binding(ns, {
            "metadata": {"name": name}, "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "narrow", "namespace": ns}]})
    core = client.CoreV1Api(api)
    for name in ("allowed", "other"):
        core.create_namespaced_config_map(ns, {"metadata": {"name": name}})
    mine = client.CoreV1Api(_token_client(shared_kube, token))
    assert mine.read_namespaced_config_map("allowed", ns).metadata.name == "allowed"
    with pytest.raises(ApiException) as denied:
        mine.read_namespaced_config_map("other", ns)
    body = json.loads(denied.value.body)
    assert denied.value.status == 403 and body["reason"] == "Forbidden"
    assert body["details"] == {"name": "other", "kind": "configmaps"}
    assert body["message"].endswith(f'cannot get resource "configmaps" in API group "" in the namespace "{ns}": '
                                    f'RBAC: role.{RBAC} "gone" not found')
    with pytest.raises(ApiException) as listing:
        mine.list_namespaced_config_map(ns)
    assert listing.value.status == 403

    review = client.AuthorizationV1Api(api).create_subject_access_review({"spec": {
        "user": f"system:serviceaccount:{ns}:narrow", "groups": ["system:serviceaccounts"],
        "resourceAttributes": {"namespace": ns, "verb": "patch", "group": "apps", "resource": "deployments",
                               "subresource": "scale", "name": "web"}}})
    assert review.status.allowed is True
    assert review.status.reason == (f'RBAC: allowed by RoleBinding "narrow-one-map/{ns}" of Role "one-map" to '
                                    f'ServiceAccount "narrow/{ns}"')
    review = client.AuthorizationV1Api(api).create_subject_access_review({"spec": {
        "user": f"system:serviceaccount:{ns}:narrow",
        "resourceAttributes": {"namespace": ns, "verb": "patch", "group": "apps", "resource": "deployments"}}})
    assert review.status.allowed is False
    urls = client.AuthorizationV1Api(api).create_subject_access_review({"spec": {
        "user": "nobody", "groups": ["system:unauthenticated"], "nonResourceAttributes": {"path": "/version",
                                                                                        "verb": "get"}}})
    assert urls.status.allowed is True and "system:public-info-viewer" in urls.status.reason
    rules = client.AuthorizationV1Api(_token_client(shared_kube, token)).create_self_subject_rules_review(
        {"spec": {"namespace": ns}}).status
    assert {"verbs": ["get", "update"], "api_groups": [""], "resources": ["configmaps"],
            "resource_names": ["allowed"]} in [r.to_dict() for r in rules.resource_rules]
    assert rules.incomplete is True and "gone" in rules.evaluation_error


def test_legacy_token_secret_and_unknown_tokens(shared_kube: RunningCluster, api, ns) -> None:
    core = client.CoreV1Api(api)
    _account(api, ns, "legacy", role="edit")
    core.create_namespaced_secret(ns, {"metadata": {"name": "legacy-token", "annotations": {
        "kubernetes.io/service-account.name": "legacy"}}, "type": "kubernetes.io/service-account-token"})
    secret = wait_until(lambda: (s := core.read_namespaced_secret("legacy-token", ns)).data and s)
    assert set(secret.data) == {"token", "ca.crt", "namespace"}
    assert secret.metadata.annotations["kubernetes.io/service-account.uid"]
    token = base64.b64decode(secret.data["token"]).decode()
    mine = client.CoreV1Api(_token_client(shared_kube, token))
    mine.create_namespaced_config_map(ns, {"metadata": {"name": "by-legacy"}})  # edit may create
    core.delete_namespaced_secret("legacy-token", ns)
    url = f"{shared_kube.server}/api/v1/namespaces/{ns}/configmaps"
    ca = str(shared_kube.cluster.state_dir / "tls" / "ca.crt")
    gone = requests.get(url, headers={"Authorization": f"Bearer {token}"}, verify=ca, timeout=10)
    assert gone.status_code == 401 and gone.json()["reason"] == "Unauthorized"
    forged = requests.get(url, headers={"Authorization": "Bearer a.b.c"}, verify=ca, timeout=10)
    assert forged.status_code == 401
    projected = _account(api, ns, "reviewed", role=None)
    review = client.AuthenticationV1Api(api).create_token_review({"spec": {"token": projected}}).status
    assert review.authenticated is True and review.user.username == f"system:serviceaccount:{ns}:reviewed"
    assert client.AuthenticationV1Api(api).create_token_review(
        {"spec": {"token": token}}).status.authenticated is None  # its Secret is gone
    assert requests.get(f"{shared_kube.server}/version", verify=ca, timeout=10).status_code == 200


def test_default_roles_and_aggregation(shared_kube: RunningCluster, api, ns) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    names = {r.metadata.name for r in rbac.list_cluster_role().items}
    assert {"cluster-admin", "admin", "edit", "view", "system:basic-user", "system:discovery",
            "system:kube-controller-manager", "system:node", "system:auth-delegator"} <= names
    binding = rbac.read_cluster_role_binding("cluster-admin")
    assert [(s.kind, s.name) for s in binding.subjects] == [("Group", "system:masters")]
    view = rbac.read_cluster_role("view")
    assert any("pods" in (r.resources or []) and r.verbs == ["get", "list", "watch"] for r in view.rules)
    admin = rbac.read_cluster_role("admin")
    assert any("rolebindings" in (r.resources or []) for r in admin.rules)  # admin ⊇ edit ⊇ view
    assert any("pods/exec" in (r.resources or []) for r in admin.rules)
    rbac.create_cluster_role({"metadata": {"name": f"{ns}-widgets-view", "labels": {
        f"{RBAC}/aggregate-to-view": "true"}}, "rules": [
        {"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get", "list"]}]})

    def aggregated() -> bool:
        return any("widgets" in (r.resources or []) for r in rbac.read_cluster_role("view").rules)

    wait_until(aggregated)
    wait_until(lambda: any("widgets" in (r.resources or []) for r in rbac.read_cluster_role("admin").rules))
    token = _account(api, ns, "aggregated")
    review = client.AuthorizationV1Api(_token_client(shared_kube, token)).create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"namespace": ns, "verb": "list", "group": "example.com",
                                         "resource": "widgets"}}})
    assert review.status.allowed is True
