"""labkit's pieces of notebook 03 that need no whole lab: the values the lab file derives for the
charts and the values files' checks, MetalLB's and Traefik's objects from the lab file, the TLS
and redirect probes against real local servers (a CA of the test's own, SNI, verification on),
and over the wire against the twin's API server: the default StorageClass switched, the Cloudflare
token Secret planned without ever showing its value."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client

from labkit import certs, charts, manifests, net, secrets, storage
from labkit.params import load_lab
from tests.labfiles import REPO, sim_lab, write_lab
from tests.labsim.kube_fixtures import RunningCluster, running_cluster
from tests.polling import wait_until


def _lab(tmp_path: Path, **changes):
    doc = sim_lab(tmp_path)
    for section, values in changes.items():
        doc[section].update(values)
    return load_lab(write_lab(tmp_path, doc), check_files=False)


def test_the_nfs_chart_gets_the_lab_files_server_export_and_class_merged_into_its_values_file(tmp_path):
    lab = _lab(tmp_path, nfs={"server": "127.0.9.2", "path": "/volume2/kube", "archive_on_delete": False,
                              "reclaim_policy": "Retain"})
    found = {c.name: c for c in charts.from_lab(lab)}
    values = found["nfs-subdir-external-provisioner"].values
    assert values["nfs"] == {"server": "127.0.9.2", "path": "/volume2/kube", "mountOptions": ["nfsvers=4.1"]}
    assert values["storageClass"] == {"accessModes": "ReadWriteMany", "volumeBindingMode": "Immediate",  # values file
                                      "name": "nfs-client", "defaultClass": True, "reclaimPolicy": "Retain",
                                      "archiveOnDelete": False}  # the lab file's
    assert values["replicaCount"] == 1  # the values file's own
    rendered = found["nfs-subdir-external-provisioner"].manifest()["spec"]["valuesContent"]
    assert "server: 127.0.9.2" in rendered and "path: /volume2/kube" in rendered


@pytest.mark.parametrize(("chart", "content", "message"), [
    ("nfs-subdir-external-provisioner", {"nfs": {"server": "10.0.0.9"}},
     r"charts.nfs-subdir-external-provisioner.values: nfs.server in .*bad.yaml is derived from the lab file "
     r"\(the nfs section\); remove it from the values file"),
    ("metallb", {"speker": {"frr": {"enabled": False}}},
     r"charts.metallb.values: unknown key 'speker' in .*bad.yaml: metallb has no such value \(did you mean 'speaker'\?\)"),
    ("cert-manager", {"crds": {"enabled": True}, "installCRD": True},
     r"charts.cert-manager.values: unknown key 'installCRD' .*did you mean 'installCRDs'"),
])
def test_a_values_file_naming_an_unknown_or_derived_key_stops_before_anything_is_applied(tmp_path, chart, content, message):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(content))
    doc = sim_lab(tmp_path)
    doc["charts"][chart]["values"] = str(tmp_path / "bad.yaml")
    with pytest.raises(charts.ChartError, match=message):
        charts.from_lab(load_lab(write_lab(tmp_path, doc), check_files=False))


def test_pools_and_traefik_settings_follow_the_lab_file(tmp_path):
    doc = sim_lab(tmp_path)
    net_ = doc["network"]["subnet"].rsplit(".", 1)[0]
    doc["metallb"]["pools"] = [{"name": "reserved", "addresses": [f"{net_}.160-{net_}.163"], "auto_assign": False}]
    doc["ingress"].update(redirect_https=False, dashboard=True)
    lab = load_lab(write_lab(tmp_path, doc), check_files=False)
    pools = net.pool_objects(lab)
    assert [(o["kind"], o["metadata"]["name"], o["metadata"]["namespace"]) for o in pools] == [
        ("IPAddressPool", "default", "metallb-system"), ("IPAddressPool", "reserved", "metallb-system"),
        ("L2Advertisement", "default", "metallb-system")]
    assert pools[0]["spec"] == {"addresses": [lab.metallb.addresses], "autoAssign": True}
    assert pools[1]["spec"] == {"addresses": [f"{net_}.160-{net_}.163"], "autoAssign": False}
    assert pools[2]["spec"] == {"ipAddressPools": ["default", "reserved"]}

    values = net.traefik_config(lab).values
    assert "ports" not in values  # no redirect asked for
    assert values["api"] == {"dashboard": True} and values["logs"] == {"access": {"enabled": True}}
    default = net.traefik_config(load_lab(REPO / "parameters" / "sim.yaml", check_files=False)).values
    assert default["ports"]["web"]["redirections"]["entryPoint"] == {"to": "websecure", "scheme": "https",
                                                                     "permanent": True}
    assert default["api"] == {"dashboard": False}


def test_cluster_issuers_carry_the_acme_server_email_solver_and_the_test_cas_bundle(tmp_path):
    ca = tmp_path / "pebble.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    doc = sim_lab(tmp_path)
    doc["tls"]["issuers"][0]["server_ca_file"] = "pebble.pem"  # relative: to the lab file's folder
    del doc["tls"]["issuers"][1]["server_ca_file"]  # as for Let's Encrypt: the system's trust store
    (tmp_path / "labsim").mkdir()
    (tmp_path / "labsim" / "secrets.yaml").write_text("cloudflare_api_token: cf-token-under-test\n")
    lab = load_lab(write_lab(tmp_path, doc), check_files=False)
    secret, staging, prod = certs.issuer_objects(lab)
    assert (secret["kind"], secret["metadata"]) == ("Secret", {"name": "cloudflare-api-token", "namespace": "infra"})
    acme = staging["spec"]["acme"]
    assert (staging["metadata"]["name"], acme["server"], acme["email"]) == (
        "letsencrypt-staging", lab.tls.issuers[0].server, "admin@home.example.com")
    assert acme["solvers"] == [{"dns01": {"cloudflare": {"apiTokenSecretRef": {"name": "cloudflare-api-token",
                                                                                "key": "api-token"}}},
                                "selector": {"dnsZones": ["home.example.com"]}}]
    assert acme["caBundle"] and "caBundle" not in prod["spec"]["acme"]
    assert "cf-token-under-test" in secrets.registered()  # scrubbed from anything the notebook shows


# -- probes against real servers ---------------------------------------------------------------------


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca: tuple, host: str, path: Path) -> x509.Certificate:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=True).sign(ca_key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert


class _Site(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.server.redirect:
            self.send_response(308)
            self.send_header("Location", f"https://{self.headers['Host']}{self.path}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def serve() -> Iterator:
    servers = []

    def start(*, pem: Path | None = None, redirect: bool = False) -> int:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
        server.redirect = redirect
        if pem is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(pem)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_tls_probe_verifies_the_chain_and_the_name_it_asked_for_in_sni(tmp_path, serve):
    issuer, other = _ca("test issuer"), _ca("someone else")
    for name, (_, cert) in (("issuer.pem", issuer), ("other.pem", other)):
        (tmp_path / name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    leaf = _leaf(issuer, "whoami.home.example.com", tmp_path / "site.pem")
    port = serve(pem=tmp_path / "site.pem")

    good = net.probe_tls("127.0.0.1", "whoami.home.example.com", ca_file=tmp_path / "issuer.pem", port=port)
    assert good.verified and good.status == 200 and good.serial == leaf.serial_number
    assert good.subject_names == ["whoami.home.example.com"] and good.issuer == "CN=test issuer"
    assert [c.passed for c in good.checks(expected_serial=leaf.serial_number)] == [True, True, True]
    assert not good.checks(expected_serial=leaf.serial_number + 1)[2].passed  # another certificate served

    untrusted = net.probe_tls("127.0.0.1", "whoami.home.example.com", ca_file=tmp_path / "other.pem", port=port)
    assert not untrusted.verified and "CERTIFICATE_VERIFY_FAILED" in untrusted.error
    wrong_name = net.probe_tls("127.0.0.1", "other.home.example.com", ca_file=tmp_path / "issuer.pem", port=port)
    assert not wrong_name.verified and "other.home.example.com" in wrong_name.error
    assert not wrong_name.checks()[0].passed


def test_the_redirect_probe_wants_https_to_the_same_host(serve):
    redirecting, plain = serve(redirect=True), serve()
    seen = net.probe_redirect("127.0.0.1", "whoami.home.example.com", port=redirecting)
    assert (seen.status, seen.location) == (308, "https://whoami.home.example.com/")
    assert seen.checks()[0].passed
    served = net.probe_redirect("127.0.0.1", "whoami.home.example.com", port=plain)
    assert served.status == 200 and not served.checks()[0].passed
    closed = net.probe_redirect("127.0.0.1", "whoami.home.example.com", port=1)
    assert closed.status is None and "no answer from 127.0.0.1:1" in closed.checks()[0].detail


# -- over the wire ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("kube"), nodes=2) as running:
        yield running


def test_the_nfs_class_becomes_the_only_default_once_and_local_path_steps_aside(cluster, tmp_path):
    api = cluster.api_client()
    sc = client.StorageV1Api(api)
    sc.create_storage_class({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "provisioner": "rancher.io/local-path",
                             "metadata": {"name": "local-path", "annotations": {storage.DEFAULT_CLASS: "true"}}})
    sc.create_storage_class({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                             "provisioner": "cluster.local/nfs-subdir-external-provisioner",
                             "metadata": {"name": "nfs-client", "annotations": {storage.DEFAULT_CLASS: "true"}}})
    lab = _lab(tmp_path)
    planned = storage.plan_default_class(api, lab)
    assert [(c.target, c.action) for c in planned.changes()] == [("StorageClass/local-path", "update")]
    assert storage.apply_default_class(api, planned, dry_run=True) == []
    assert not storage.verify_class(api, lab)[1].passed  # still two defaults

    assert [c.action for c in storage.apply_default_class(api, planned)] == ["update"]
    version = sc.read_storage_class("local-path").metadata.resource_version
    assert storage.plan_default_class(api, lab).is_empty
    checks = storage.verify_class(api, lab)
    assert all(c.passed for c in checks) and checks[1].detail == "default: nfs-client"
    assert sc.read_storage_class("local-path").metadata.resource_version == version


def test_the_token_secret_is_planned_and_diffed_by_digest_never_by_value(cluster):
    api = cluster.api_client()
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "infra"}})
    token = "cf-token-that-must-not-show"

    def secret(value: str) -> dict:
        import base64

        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "cloudflare-api-token", "namespace": "infra"},
                "data": {"api-token": base64.b64encode(value.encode()).decode()}}

    manifests.apply(api, manifests.plan(api, "issuers", [secret(token)]))
    assert manifests.plan(api, "issuers", [secret(token)]).is_empty
    changed = manifests.plan(api, "issuers", [secret(token + "-rotated")])
    (item,) = changed.items
    assert item.action == "update" and "api-token: sha256:" in item.diff
    shown = item.diff + str(changed.changes())
    assert token not in shown and "cf-token" not in shown
    import base64

    assert base64.b64encode(token.encode()).decode() not in shown


def test_a_kind_whose_crd_is_gone_is_not_served_even_if_an_earlier_process_saw_it(cluster):
    """Discovery is asked afresh: the library's cache file (shared by processes, named by the
    server's address) would still list a CRD's kind after the CRD is deleted. None is written."""
    api = cluster.api_client()
    cache = Path(tempfile.gettempdir(), f"osrcp-{hashlib.md5(api.configuration.host.encode()).hexdigest()}.json")
    cache.unlink(missing_ok=True)  # an earlier lab's at this address
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gadgets.example.com"},
           "spec": {"group": "example.com", "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                    "scope": "Namespaced", "versions": [{"name": "v1", "served": True, "storage": True,
                                                         "schema": {"openAPIV3Schema": {"type": "object",
                                                                    "x-kubernetes-preserve-unknown-fields": True}}}]}}
    extensions = client.ApiextensionsV1Api(api)
    extensions.create_custom_resource_definition(crd)
    assert wait_until(lambda: manifests.served(manifests.dynamic(api), "example.com/v1", "Gadget"), timeout=30)
    extensions.delete_custom_resource_definition("gadgets.example.com")
    assert wait_until(lambda: not manifests.served(manifests.dynamic(api), "example.com/v1", "Gadget"), timeout=30)
    assert not cache.exists()
