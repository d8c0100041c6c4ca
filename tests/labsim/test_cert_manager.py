"""cert-manager in the twin, over the wire: the chart model's objects, a ClusterIssuer registered
with the real Pebble, a Certificate issued over DNS-01 through the Cloudflare model and
challtestsrv whose chain verifies against Pebble's CA (openssl and ``cryptography``), a wrong
token failing the Challenge with cert-manager's Cloudflare message, renewal on the lab clock, and
the ACME server down."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from kubernetes import client

from labsim.apps.cloudflare import CloudflareAPI
from labsim.charts import CHART_MODELS, Release
from labsim.k3s.addons import k3s_crds
from labsim.kube.controllers.times import parse_rfc3339
from labsim.pebble import PebbleServer, tools_dir
from tests.labfiles import unique_subnet
from tests.labsim.kube_fixtures import RunningCluster, running_cluster
from tests.polling import wait_until

TOKEN = "lab-cloudflare-token-0123456789abcdefghijk"
HELMCHART = {"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
             "metadata": {"name": "cert-manager", "namespace": "kube-system"},
             "spec": {"chart": "cert-manager", "repo": "https://charts.jetstack.io", "version": "v1.19.1",
                      "targetNamespace": "infra", "createNamespace": True,
                      "valuesContent": yaml.safe_dump({"crds": {"enabled": True}})}}
DOMAIN = "home.example.com"

pytestmark = pytest.mark.skipif(not (tools_dir() / "pebble").exists(), reason="pebble is not installed (make programs)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningCluster, PebbleServer]]:
    """A cluster with the cert-manager chart's objects, the lab's Pebble and Cloudflare model."""
    home = tmp_path_factory.mktemp("certs")
    with running_cluster(home, nodes=1) as running:
        pebble = PebbleServer(home / "labsim", [f"https://{unique_subnet()}.3:14000/dir"])
        running.call(pebble.start)
        cluster = running.cluster
        cluster.pebble, cluster.cloudflare = pebble, CloudflareAPI(TOKEN, pebble.challtestsrv)
        try:  # installed as the lab file's charts section does it: a HelmChart k3s' Helm controller runs
            for obj in [*k3s_crds(), HELMCHART]:
                running.call(cluster.apply_manifest, obj)
            wait_until(lambda: running.kubectl("get", "crd", "certificates.cert-manager.io", check=False).returncode == 0,
                       timeout=60)
            yield running, pebble
        finally:
            running.call(pebble.close)


def _issuer(name: str, server: str, token_secret: str = "cloudflare-api-token") -> str:
    return yaml.safe_dump({
        "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": name},
        "spec": {"acme": {"server": server, "email": "admin@home.example.com",
                          "privateKeySecretRef": {"name": f"{name}-account-key"},
                          "solvers": [{"dns01": {"cloudflare": {"apiTokenSecretRef": {
                              "name": token_secret, "key": "api-token"}}}}]}}})


def _certificate(name: str, issuer: str, host: str, **spec) -> str:
    return yaml.safe_dump({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": name, "namespace": "default"},
        "spec": {"secretName": f"{name}-tls", "dnsNames": [host],
                 "issuerRef": {"name": issuer, "kind": "ClusterIssuer"}, **spec}})


def _get(api: client.ApiClient, plural: str, name: str, namespace: str | None = "default",
         group: str = "cert-manager.io") -> dict:
    objects = client.CustomObjectsApi(api)
    if namespace is None:
        return objects.get_cluster_custom_object(group, "v1", plural, name)
    return objects.get_namespaced_custom_object(group, "v1", namespace, plural, name)


def _ready(obj: dict) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)


def _events(api: client.ApiClient, name: str, namespace: str = "default") -> list[tuple[str, str]]:
    found = client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [(e.reason, e.message) for e in found.items]


@pytest.fixture(scope="module")
def issued(lab, tmp_path_factory) -> dict:
    """The token Secret, a ClusterIssuer and a Certificate for whoami.<domain>, applied with kubectl."""
    running, pebble = lab
    directory = pebble.directories[0]
    manifest = tmp_path_factory.mktemp("manifests") / "issuer.yaml"
    token = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cloudflare-api-token", "namespace": "infra"},
             "stringData": {"api-token": TOKEN}}
    manifest.write_text("---\n".join([yaml.safe_dump(token), _issuer("letsencrypt-prod", directory.url),
                                      _certificate("whoami", "letsencrypt-prod", f"whoami.{DOMAIN}")]))
    running.kubectl("apply", "-f", str(manifest))
    api = running.api_client()
    wait_until(lambda: (_ready(_get(api, "certificates", "whoami")) or {}).get("status") == "True", timeout=90)
    return {"api": api, "running": running, "pebble": pebble, "directory": directory}


def test_the_chart_model_has_the_real_charts_deployments_and_crds(lab):
    running, _ = lab
    out = wait_until(lambda: running.kubectl("get", "deploy", "-n", "infra", "-o", "name").stdout.split(), timeout=30)
    assert out == ["deployment.apps/cert-manager", "deployment.apps/cert-manager-cainjector",
                   "deployment.apps/cert-manager-webhook"]
    wait_until(lambda: running.kubectl("get", "pods", "-n", "infra", "-l",
                                       "app.kubernetes.io/name=cert-manager,app.kubernetes.io/component=controller",
                                       "-o", "jsonpath={.items[*].status.phase}").stdout == "Running", timeout=30)
    releases = running.kubectl("get", "secret", "-n", "infra", "-l", "owner=helm,name=cert-manager", "-o", "name")
    assert releases.stdout.split() == ["secret/sh.helm.release.v1.cert-manager.v1"]
    crds = running.kubectl("get", "crd", "-o", "name").stdout
    for name in ("certificates.cert-manager.io", "certificaterequests.cert-manager.io", "issuers.cert-manager.io",
                 "clusterissuers.cert-manager.io", "orders.acme.cert-manager.io", "challenges.acme.cert-manager.io"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{name}" in crds
    without = CHART_MODELS["cert-manager"](Release("cert-manager", "infra", "cert-manager", "v1.19.1", {}))
    assert not [o for o in without if o["kind"] == "CustomResourceDefinition"]  # crds.enabled unset: none
    legacy = CHART_MODELS["cert-manager"](Release("cert-manager", "infra", "cert-manager", "v1.19.1",
                                                  {"installCRDs": True}))
    assert len([o for o in legacy if o["kind"] == "CustomResourceDefinition"]) == 6


def test_a_clusterissuer_registers_its_acme_account_with_pebble(issued):
    api = issued["api"]
    issuer = _get(api, "clusterissuers", "letsencrypt-prod", None)
    ready = _ready(issuer)
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "True", "ACMEAccountRegistered", "The ACME account was registered with the ACME server")
    directory = issued["directory"]
    assert issuer["status"]["acme"]["uri"].startswith(f"https://{directory.host}:{directory.port}/my-account/")
    key = client.CoreV1Api(api).read_namespaced_secret("letsencrypt-prod-account-key", "infra")
    assert b"PRIVATE KEY" in base64.b64decode(key.data["tls.key"])  # the account key, in the cluster resource namespace


def test_a_certificate_is_issued_over_dns01_and_its_chain_verifies_against_pebbles_ca(issued, tmp_path):
    api, running = issued["api"], issued["running"]
    cert = _get(api, "certificates", "whoami")
    ready = _ready(cert)
    assert (ready["reason"], ready["message"]) == ("Ready", "Certificate is up to date and has not expired")
    assert cert["status"]["revision"] == 1
    secret = client.CoreV1Api(api).read_namespaced_secret("whoami-tls", "default")
    assert secret.type == "kubernetes.io/tls"
    assert sorted(secret.data) == ["tls.crt", "tls.key"]  # ACME gives no CA: no ca.crt, as cert-manager
    assert secret.metadata.annotations["cert-manager.io/issuer-name"] == "letsencrypt-prod"
    chain = base64.b64decode(secret.data["tls.crt"])
    leaf = x509.load_pem_x509_certificate(chain)
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [f"whoami.{DOMAIN}"]
    # The chain verifies against the root Pebble serves (and the lab keeps in its state).
    ca_file = issued["pebble"].ca_file(issued["directory"])
    (tmp_path / "chain.pem").write_bytes(chain)
    done = subprocess.run(["openssl", "verify", "-CAfile", str(ca_file), "-untrusted", str(tmp_path / "chain.pem"),
                           str(tmp_path / "chain.pem")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Pebble Intermediate CA" in leaf.issuer.rfc4514_string()
    # The way there, as cert-manager shows it.
    reasons = [r for r, _ in _events(api, "whoami")]
    assert reasons[:3] == ["Issuing", "Generated", "Requested"] and reasons[-1] == "Issuing"
    assert ("Issuing", "The certificate has been successfully issued") in _events(api, "whoami")
    request = _get(api, "certificaterequests", "whoami-1")
    assert [(c["type"], c["status"], c["reason"]) for c in request["status"]["conditions"]] == [
        ("Approved", "True", "cert-manager.io"), ("Ready", "True", "Issued")]
    orders = client.CustomObjectsApi(api).list_namespaced_custom_object("acme.cert-manager.io", "v1", "default",
                                                                        "orders")["items"]
    assert [o["status"]["state"] for o in orders] == ["valid"]
    assert ("Complete", "Order completed successfully") in _events(api, orders[0]["metadata"]["name"])
    table = running.kubectl("get", "certificate", "whoami").stdout
    assert table.split("\n")[0].split() == ["NAME", "READY", "SECRET", "AGE"] and "True" in table


def test_a_wrong_cloudflare_token_fails_the_challenge_with_cert_managers_message(issued, tmp_path):
    api, running = issued["api"], issued["running"]
    manifest = tmp_path / "wrong.yaml"
    wrong = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong-token", "namespace": "infra"},
             "stringData": {"api-token": "not-the-labs-token"}}
    manifest.write_text("---\n".join([yaml.safe_dump(wrong), _issuer("wrong-token", issued["directory"].url,
                                                                     "wrong-token"),
                                      _certificate("denied", "wrong-token", f"denied.{DOMAIN}")]))
    running.kubectl("apply", "-f", str(manifest))
    objects = client.CustomObjectsApi(api)

    def failing_challenge():
        items = objects.list_namespaced_custom_object("acme.cert-manager.io", "v1", "default", "challenges")["items"]
        return next((c for c in items if c["spec"]["dnsName"] == f"denied.{DOMAIN}"
                     and "Cloudflare" in (c.get("status") or {}).get("reason", "")), None)

    challenge = wait_until(failing_challenge, timeout=60)
    reason = challenge["status"]["reason"]
    assert reason.startswith(f"while attempting to find Zones for domain _acme-challenge.denied.{DOMAIN}.\n")
    assert 'while querying the Cloudflare API for GET "/zones?name=example.com"' in reason
    assert reason.endswith("Error: 9109: Invalid access token")
    assert not challenge["status"]["presented"] and challenge["status"]["state"] == "pending"
    assert ("PresentError", f"Error presenting challenge: {reason}") in _events(api, challenge["metadata"]["name"])
    assert (_ready(_get(api, "certificates", "denied")) or {}).get("status") == "False"


def test_renewal_falls_due_at_two_thirds_of_the_lifetime_on_the_lab_clock(issued):
    api, running = issued["api"], issued["running"]
    cert = _get(api, "certificates", "whoami")
    secret = client.CoreV1Api(api).read_namespaced_secret("whoami-tls", "default")
    lifetime = parse_rfc3339(cert["status"]["notAfter"]) - parse_rfc3339(cert["status"]["notBefore"])
    due_in = parse_rfc3339(cert["status"]["renewalTime"]) - running.cluster.clock.now()
    assert abs(due_in - lifetime * 2 / 3) < 120  # 2/3 of Pebble's 5-year lifetime from issuance
    running.call(running.cluster.clock.advance, due_in - 3600)  # an hour before: nothing happens
    assert _get(api, "certificates", "whoami")["status"]["revision"] == 1
    running.call(running.cluster.clock.advance, 7200)
    renewed = wait_until(lambda: (c := _get(api, "certificates", "whoami"))["status"].get("revision") == 2 and c,
                         timeout=90)
    assert _ready(renewed)["status"] == "True"
    assert any(r == "Issuing" and m.startswith("Renewing certificate as renewal was scheduled at ")
               for r, m in _events(api, "whoami"))
    after = client.CoreV1Api(api).read_namespaced_secret("whoami-tls", "default")
    assert after.data["tls.crt"] != secret.data["tls.crt"]
    assert parse_rfc3339(renewed["status"]["renewalTime"]) > running.cluster.clock.now()  # not due again at once


def test_an_issuer_of_an_acme_server_that_is_down_is_not_ready_until_it_is_back(issued, tmp_path):
    api, running, pebble, directory = issued["api"], issued["running"], issued["pebble"], issued["directory"]
    running.call(pebble.stop_directory, directory)
    try:
        (tmp_path / "down.yaml").write_text(_issuer("letsencrypt-staging", directory.url))
        running.kubectl("apply", "-f", str(tmp_path / "down.yaml"))
        ready = wait_until(lambda: _ready(_get(api, "clusterissuers", "letsencrypt-staging", None)), timeout=30)
        assert (ready["status"], ready["reason"]) == ("False", "ErrRegisterACMEAccount")
        assert ready["message"] == (f'Failed to register ACME account: Get "{directory.url}": dial tcp '
                                    f"{directory.host}:{directory.port}: connect: connection refused")
    finally:
        running.call(pebble.start_directory, directory)
    wait_until(lambda: (_ready(_get(api, "clusterissuers", "letsencrypt-staging", None)) or {}).get("status") == "True",
               timeout=60)
    assert Path(pebble.ca_file(directory)).read_text().count("BEGIN CERTIFICATE") == 4  # both CAs Pebble has had


def test_an_ingress_annotated_with_a_cluster_issuer_gets_its_certificate(issued, tmp_path):
    api, running = issued["api"], issued["running"]
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "shim", "namespace": "default",
                            "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt-prod"}},
               "spec": {"tls": [{"hosts": [f"shim.{DOMAIN}"], "secretName": "shim-tls"}],
                        "rules": [{"host": f"shim.{DOMAIN}", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                   "backend": {"service": {"name": "whoami", "port": {"number": 80}}}}]}}]}}
    (tmp_path / "ingress.yaml").write_text(yaml.safe_dump(ingress))
    running.kubectl("apply", "-f", str(tmp_path / "ingress.yaml"))
    cert = wait_until(lambda: (c := _get(api, "certificates", "shim-tls")) and
                      (_ready(c) or {}).get("status") == "True" and c, timeout=60)
    assert cert["spec"]["dnsNames"] == [f"shim.{DOMAIN}"]
    assert cert["spec"]["issuerRef"] == {"name": "letsencrypt-prod", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert [(o["kind"], o["name"]) for o in cert["metadata"]["ownerReferences"]] == [("Ingress", "shim")]
    assert ("CreateCertificate", 'Successfully created Certificate "shim-tls"') in _events(api, "shim")
    assert client.CoreV1Api(api).read_namespaced_secret("shim-tls", "default").type == "kubernetes.io/tls"


def test_a_refused_order_fails_the_request_and_is_retried_after_the_back_off(issued, tmp_path):
    api, running = issued["api"], issued["running"]
    name = f"bad_name.{DOMAIN}"  # Pebble refuses an identifier with an underscore
    (tmp_path / "bad.yaml").write_text(_certificate("refused", "letsencrypt-prod", name))
    running.kubectl("apply", "-f", str(tmp_path / "bad.yaml"))

    def issuing(cert_name: str = "refused") -> dict | None:
        cert = _get(api, "certificates", cert_name)
        found = next((c for c in cert.get("status", {}).get("conditions", []) if c["type"] == "Issuing"), None)
        return cert if found and found["status"] == "False" else None

    cert = wait_until(issuing, timeout=60)
    issuing_condition = next(c for c in cert["status"]["conditions"] if c["type"] == "Issuing")
    assert issuing_condition["reason"] == "Failed"
    assert issuing_condition["message"].startswith("The certificate request has failed to complete and will be "
                                                   'retried: Failed to wait for order resource "refused-1-')
    assert "Failed to create Order: malformed: Order included DNS identifier with a value containing an illegal " \
           "character: '_'" in issuing_condition["message"]
    assert cert["status"]["failedIssuanceAttempts"] == 1
    first = _get(api, "certificaterequests", "refused-1")["metadata"]["uid"]
    running.call(running.cluster.clock.advance, 1800)  # half the back-off: the failed request stays
    assert _get(api, "certificaterequests", "refused-1")["metadata"]["uid"] == first
    running.call(running.cluster.clock.advance, 1900)  # past 1h: a new request, failing again
    wait_until(lambda: (c := issuing()) and c["status"]["failedIssuanceAttempts"] == 2, timeout=60)
    assert _get(api, "certificaterequests", "refused-1")["metadata"]["uid"] != first


def test_a_restarted_lab_keeps_its_certificates_verifiable_and_issues_again(tmp_path):
    """Pebble forgets accounts and makes a new CA when the lab restarts: the CA bundle in the state
    still verifies the certificate issued before, and the issuer registers again for the next."""
    subnet = unique_subnet()

    def cluster_with_pebble():
        running_cm = running_cluster(tmp_path, nodes=1)
        running = running_cm.__enter__()
        pebble = PebbleServer(tmp_path / "labsim", [f"https://{subnet}.3:14000/dir"])
        running.call(pebble.start)
        running.cluster.pebble, running.cluster.cloudflare = pebble, CloudflareAPI(TOKEN, pebble.challtestsrv)
        return running_cm, running, pebble

    def stop(running_cm, running, pebble):
        running.call(pebble.close)
        running_cm.__exit__(None, None, None)

    first = cluster_with_pebble()
    running, pebble = first[1], first[2]
    try:
        for obj in [*k3s_crds(), HELMCHART]:
            running.call(running.cluster.apply_manifest, obj)
        wait_until(lambda: running.kubectl("get", "crd", "certificates.cert-manager.io", check=False).returncode == 0,
                   timeout=60)
        token = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cloudflare-api-token", "namespace": "infra"},
                 "stringData": {"api-token": TOKEN}}
        running.kubectl("apply", "-f", "-", input="---\n".join([
            yaml.safe_dump(token), _issuer("letsencrypt-prod", pebble.directories[0].url),
            _certificate("before", "letsencrypt-prod", f"before.{DOMAIN}")]))
        api = running.api_client()
        wait_until(lambda: (_ready(_get(api, "certificates", "before")) or {}).get("status") == "True", timeout=90)
        old_uri = _get(api, "clusterissuers", "letsencrypt-prod", None)["status"]["acme"]["uri"]
    finally:
        stop(*first)
    (tmp_path / "kube" / "k3s-master" / "kubeconfig").unlink()  # the resumed cluster serves on a new address
    second = cluster_with_pebble()
    running, pebble = second[1], second[2]
    try:
        api = running.api_client()
        running.kubectl("apply", "-f", "-", input=_certificate("after", "letsencrypt-prod", f"after.{DOMAIN}"))
        wait_until(lambda: (_ready(_get(api, "certificates", "after")) or {}).get("status") == "True", timeout=90)
        bundle = pebble.ca_file(pebble.directories[0])
        assert bundle.read_text().count("BEGIN CERTIFICATE") == 4  # the CAs of both runs
        for name in ("before", "after"):
            chain = tmp_path / f"{name}.pem"
            chain.write_bytes(base64.b64decode(
                client.CoreV1Api(api).read_namespaced_secret(f"{name}-tls", "default").data["tls.crt"]))
            done = subprocess.run(["openssl", "verify", "-CAfile", str(bundle), "-untrusted", str(chain), str(chain)],
                                  capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        assert _get(api, "clusterissuers", "letsencrypt-prod", None)["status"]["acme"]["uri"] != old_uri
    finally:
        stop(*second)


def test_renew_before_moves_the_renewal_time(issued, tmp_path):
    api, running = issued["api"], issued["running"]
    (tmp_path / "soon.yaml").write_text(_certificate("soon", "letsencrypt-prod", f"soon.{DOMAIN}", renewBefore="43800h"))
    running.kubectl("apply", "-f", str(tmp_path / "soon.yaml"))
    cert = wait_until(lambda: (c := _get(api, "certificates", "soon")) and (_ready(c) or {}).get("status") == "True" and c,
                      timeout=60)
    lifetime = parse_rfc3339(cert["status"]["notAfter"]) - parse_rfc3339(cert["status"]["notBefore"])
    due_in = parse_rfc3339(cert["status"]["renewalTime"]) - running.cluster.clock.now()
    assert abs(due_in - (lifetime - 43800 * 3600)) < 120  # 43800h before the end, not at 2/3


def test_an_issuers_ca_bundle_is_what_it_trusts_the_acme_server_with(issued, tmp_path):
    api, running, pebble = issued["api"], issued["running"], issued["pebble"]
    docs = []
    for name, bundle in (("own-bundle", pebble.tls_ca_file.read_bytes()), ("other-bundle", running.cluster.ca_pem())):
        issuer = yaml.safe_load(_issuer(name, issued["directory"].url))
        issuer["spec"]["acme"]["caBundle"] = base64.b64encode(bundle).decode()
        docs.append(yaml.safe_dump(issuer))
    (tmp_path / "bundles.yaml").write_text("---\n".join(docs))
    running.kubectl("apply", "-f", str(tmp_path / "bundles.yaml"))
    trusted = wait_until(lambda: _ready(_get(api, "clusterissuers", "own-bundle", None)), timeout=30)
    assert trusted["status"] == "True"
    refused = wait_until(lambda: _ready(_get(api, "clusterissuers", "other-bundle", None)), timeout=30)
    assert (refused["status"], refused["reason"]) == ("False", "ErrRegisterACMEAccount")
    assert refused["message"] == (f'Failed to register ACME account: Get "{issued["directory"].url}": tls: failed to '
                                  "verify certificate: x509: certificate signed by unknown authority")
