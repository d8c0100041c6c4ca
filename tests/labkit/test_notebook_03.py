"""Notebook 03-core-infra end to end on the session's series lab (tests/labkit/series.py: 01 and 02,
03 as a dry run, then 03, each a real ``labkit run``), asserted on at length: every check passed and
what it changed; a second run (probes kept) that changes nothing, counted from the API server's
resourceVersions; the kept site answering real curl with verification on; the executed notebook's
HTML with its checks table and figures; then, on the same lab, pruning and the faults (each put
back: later notebooks' tests use this lab): a values file with an unknown key, a NAS that does not
answer, an exhausted pool, a wrong Cloudflare token."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml
from kubernetes import client

from labkit import certs, charts, infra, kube, manifests, net, ssh, storage
from labkit.params import Lab, load_lab
from labkit.records import applied_in, records_in
from labkit.render import render_html
from labkit.ssh import NAS
from labsim.charts import CHART_MODELS
from tests.labkit.series import Series
from tests.labkit.test_notebooks_01_02 import KUBECTL, run_notebook

NOTEBOOK = "03-core-infra"
CORE = NOTEBOOK + ".ipynb"
CURL = shutil.which("curl")
TWIN = {"nfs-subdir-external-provisioner", "metallb", "cert-manager"}  # chart models notebook 03 needs

if not set(CHART_MODELS) >= TWIN:
    pytest.skip(f"the twin has no chart model yet for {', '.join(sorted(TWIN - set(CHART_MODELS)))}",
                allow_module_level=True)


@dataclass
class Core:
    series: Series
    api: client.ApiClient
    dry: nbformat.NotebookNode  # a dry run before the first run
    first: nbformat.NotebookNode
    second: nbformat.NotebookNode
    before: dict[str, str]  # object -> resourceVersion before the second run
    after: dict[str, str]  # ... after it
    second_dir: Path

    @property
    def lab(self) -> Lab:
        return self.series.lab


def versions(api: client.ApiClient) -> dict[str, str]:
    """resourceVersion of every object the notebook owns (charts, their configs, pools, issuers,
    the token Secret, StorageClasses)."""
    custom, found = client.CustomObjectsApi(api), {}
    for group, version, plural, namespace in (
            ("helm.cattle.io", "v1", "helmcharts", "kube-system"), ("helm.cattle.io", "v1", "helmchartconfigs", "kube-system"),
            ("metallb.io", "v1beta1", "ipaddresspools", "metallb-system"),
            ("metallb.io", "v1beta1", "l2advertisements", "metallb-system")):
        for obj in custom.list_namespaced_custom_object(group, version, namespace, plural)["items"]:
            found[f"{plural}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    for obj in custom.list_cluster_custom_object("cert-manager.io", "v1", "clusterissuers")["items"]:
        found[f"clusterissuers/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    for sc in client.StorageV1Api(api).list_storage_class().items:
        found[f"storageclasses/{sc.metadata.name}"] = sc.metadata.resource_version
    secret = client.CoreV1Api(api).read_namespaced_secret(certs.TOKEN_SECRET, "infra")
    found["secrets/" + certs.TOKEN_SECRET] = secret.metadata.resource_version
    return found


@pytest.fixture(scope="module")
def core(series: Series) -> Core:
    """The session's series lab (01, 03 as a dry run, then 03 done) and a second run of 03 on it, probes kept."""
    api = kube.connect(series.lab.kubeconfig)
    before = versions(api)
    series.run("03", keep_probes=True)
    second_dir = series.folders[-1]
    return Core(series, api, series.executed(series.built["03-dry"], NOTEBOOK),
                series.executed(series.built["03"], NOTEBOOK), series.executed(second_dir, NOTEBOOK),
                before, versions(api), second_dir)


def _record(nb: nbformat.NotebookNode) -> dict:
    return records_in(json.loads(nbformat.writes(nb)))[-1]


def test_a_dry_run_on_the_fresh_cluster_plans_every_piece_and_changes_nothing(core: Core):
    record = _record(core.dry)
    assert record["dry_run"] and record["changes"] == []
    assert {(c["action"], c["target"]) for c in record["planned"]} >= {
        ("install", "HelmChart/nfs-subdir-external-provisioner"), ("install", "HelmChart/metallb"),
        ("install", "HelmChart/cert-manager"), ("install", "HelmChartConfig/traefik"),
        ("create", "IPAddressPool/metallb-system/default"), ("create", "ClusterIssuer/letsencrypt-prod")}
    assert "dry run: would fail" in nbformat.writes(core.dry)  # probes not run, shown as such
    # what the dry run saw is what the first run then did
    done = {(c["action"], c["target"]) for c in applied_in(json.loads(nbformat.writes(core.first)))}
    assert {(c["action"], c["target"]) for c in record["planned"]} == done


def test_the_first_run_installs_everything_and_proves_it_by_using_it(core: Core):
    record = _record(core.first)
    failed = [c for c in record["checks"] if not c["passed"]]
    assert not failed, failed
    names = {c["name"] for c in record["checks"]}
    assert {"core-infra preflight passes", "PVC on nfs-client binds", "a pod on another node reads what one wrote",
            "the NAS shows the volume's folder", "the NAS holds what the pod wrote",
            "LoadBalancer Service gets a pool address", "the address answers from the operator's machine",
            "Certificate for whoami.home.example.com is Ready", "Traefik serves the issued certificate",
            "https://whoami.home.example.com answers through Traefik", "http://whoami.home.example.com redirects to HTTPS",
            "charts as the lab file says", f"the NAS exports {core.lab.nfs.path} to every node (showmount -e)"} <= names
    changed = {(c["action"], c["target"]) for c in applied_in(json.loads(nbformat.writes(core.first)))}
    assert {("install", "HelmChart/nfs-subdir-external-provisioner"), ("install", "HelmChart/metallb"),
            ("install", "HelmChart/cert-manager"), ("install", "HelmChartConfig/traefik"),
            ("update", "StorageClass/local-path"), ("create", "IPAddressPool/metallb-system/default"),
            ("create", "L2Advertisement/metallb-system/default"), ("create", "ClusterIssuer/letsencrypt-prod"),
            ("create", "ClusterIssuer/letsencrypt-staging"), ("create", "Secret/infra/cloudflare-api-token"),
            *{("install", f"nfs-common/{node.name}") for node in core.lab.nodes},
            *{("create", f"local-storage.yaml.skip/{node.name}") for node in core.lab.servers}} == changed
    token = core.lab.secret(core.lab.tls.solver.dns01.api_token)
    assert token not in nbformat.writes(core.first)  # nor in its plans (Secrets are diffed by digest)


def test_kubectl_shows_nfs_client_as_the_default_class(core: Core):
    if not KUBECTL:
        pytest.skip("kubectl is not installed (make tools)")
    listed = subprocess.run([KUBECTL, "--kubeconfig", str(core.lab.kubeconfig), "get", "sc"], capture_output=True,
                            text=True, timeout=60, check=True).stdout
    assert "nfs-client (default)" in listed and "local-path (default)" not in listed


def test_the_second_run_changes_nothing(core: Core):
    record = _record(core.second)
    assert record["changes"] == [] and record["planned"] == []
    assert not [c for c in record["checks"] if not c["passed"]]
    assert core.after == core.before  # not one object written again (resourceVersions)
    assert len(core.before) >= 10


def test_kept_probes_answer_curl_with_the_issuers_ca_and_redirect_http(core: Core):
    if not CURL:
        pytest.skip("curl is not installed")
    address = net.traefik_address(core.api)
    host = f"whoami.{core.lab.ingress.domain}"
    ca = certs.issuer_ca(core.lab)
    https = subprocess.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result}",
                            "--cacert", str(ca), "--resolve", f"{host}:443:{address}", f"https://{host}/"],
                           capture_output=True, text=True, timeout=60)
    assert https.returncode == 0 and https.stdout == "200 0", https.stderr
    http = subprocess.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                           "--resolve", f"{host}:80:{address}", f"http://{host}/"], capture_output=True, text=True,
                          timeout=60)
    assert http.stdout.split()[0] in ("301", "308") and http.stdout.split()[1].startswith(f"https://{host}")
    untrusted = subprocess.run([CURL, "-sS", "--resolve", f"{host}:443:{address}", f"https://{host}/"],
                               capture_output=True, text=True, timeout=60)
    assert untrusted.returncode == 60  # the system's trust store does not know the lab's test CA


def test_the_executed_notebooks_html_has_its_checks_table_and_figures(core: Core):
    render_html(core.second_dir)
    page = (core.second_dir / CORE.replace(".ipynb", ".html")).read_text()
    assert page.count('class="labkit-figure"') >= 4  # pool usage, storage, certificate lifetimes, timeline
    for title in ("MetalLB pool usage", "Storage: volumes and the NAS export", "Certificate lifetimes",
                  "Core infrastructure timeline"):
        assert title in page
    assert "<th" in page and "LoadBalancer Service gets a pool address" in page and ">pass<" in page
    assert "FAIL" not in page


def test_removed_probes_leave_the_nas_folder_archived(core: Core):
    """The first run removed its probes: the namespace is gone, the volume's folder archived on the NAS."""
    session = ssh.connect(core.lab)
    try:
        listing = session.run(NAS, f"ls -1 {core.lab.nfs.path}").stdout.split()
    finally:
        session.close()
    assert any(n.startswith("archived-labkit-probes-labkit-probe-pvc-") for n in listing), listing


def test_a_pool_the_lab_file_no_longer_names_is_pruned(core: Core, tmp_path):
    doc = yaml.safe_load(core.series.lab_file.read_text())
    net_ = doc["network"]["subnet"].rsplit(".", 1)[0]
    doc["metallb"]["pools"] = [{"name": "reserved", "addresses": [f"{net_}.160-{net_}.160"], "auto_assign": False}]
    wider = tmp_path / "wider.yaml"
    wider.write_text(yaml.safe_dump(doc))
    lab = load_lab(wider)
    planned = manifests.deploy(core.api, "metallb", net.pool_objects(lab))
    assert {(c.action, c.target) for c in planned.changes() if c.is_change} == {
        ("create", "IPAddressPool/metallb-system/reserved"), ("update", "L2Advertisement/metallb-system/default")}

    # a full pool: the one address is taken, the next Service asking that pool stays pending
    core_v1 = client.CoreV1Api(core.api)
    kube.ensure_namespace(core.api, infra.PROBE_NAMESPACE)
    for name in ("first", "second"):
        core_v1.create_namespaced_service(infra.PROBE_NAMESPACE, {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "annotations": {"metallb.io/address-pool": "reserved"}},
            "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]}})
    assert net.wait_address(core.api, infra.PROBE_NAMESPACE, "first", timeout=30) == f"{net_}.160"
    with pytest.raises(net.NetError, match=r"got no load-balancer address within 5 s: AllocationFailed: .*\n"
                                           "Free an address"):
        net.wait_address(core.api, infra.PROBE_NAMESPACE, "second", timeout=5)
    usage = net.pool_usage(core.api, lab).set_index("pool")
    assert (usage.loc["reserved", "used"], usage.loc["reserved", "free"]) == (1, 0)
    infra.remove_probes(core.api)

    pruned = manifests.deploy(core.api, "metallb", net.pool_objects(core.lab))
    assert ("delete", "IPAddressPool/metallb-system/reserved") in {(c.action, c.target) for c in pruned.changes()}
    pools = client.CustomObjectsApi(core.api).list_namespaced_custom_object("metallb.io", "v1beta1", "metallb-system",
                                                                            "ipaddresspools")["items"]
    assert [p["metadata"]["name"] for p in pools] == ["default"]


def test_a_values_file_with_an_unknown_key_stops_03_before_it_applies_anything(core: Core, tmp_path):
    (tmp_path / "metallb.yaml").write_text("speaker:\n  frr: {enabled: false}\ncontroler: {}\n")
    doc = yaml.safe_load(core.series.lab_file.read_text())
    doc["charts"]["metallb"]["values"] = str(tmp_path / "metallb.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    before = versions(core.api)
    with pytest.raises(papermill.PapermillExecutionError, match=r"charts.metallb.values: unknown key 'controler' .*"
                                                                r"did you mean 'controller'"):
        run_notebook(CORE, bad, tmp_path)
    assert versions(core.api) == before


def test_a_nas_that_does_not_answer_stops_the_preflight_and_the_claim_says_why(core: Core):
    core.series.fault("nas_down")
    session = ssh.connect(core.lab)
    try:
        pre = infra.preflight(core.api, session, core.lab)
        assert not pre.ok and pre.problems[0].startswith(f"the NAS {core.lab.nfs.server}:2049 is reachable from every node")
        assert set(pre.nodes["nfs"]) != {"reachable"}
        with pytest.raises(storage.StorageError, match=r"did not bind within 10 s; the provisioner says: "
                                                       r"ProvisioningFailed: .*connection timed out"):
            storage.probe_volume(core.api, core.lab, timeout=10)
    finally:
        core.series.fault("nas_up")
        session.close()
    assert storage.wait_bound(core.api, infra.PROBE_NAMESPACE, storage.PROBE, timeout=60)  # it binds once it can
    infra.remove_probes(core.api)


def test_a_wrong_cloudflare_token_fails_the_certificate_with_the_challenges_reason(core: Core):
    secret = next(o for o in certs.issuer_objects(core.lab) if o["kind"] == "Secret")
    wrong = {**secret, "data": {certs.TOKEN_KEY: base64.b64encode(b"not-the-token").decode()}}
    manifests.apply(core.api, manifests.plan(core.api, "issuers", [wrong]))
    try:
        kube.ensure_namespace(core.api, infra.PROBE_NAMESPACE)
        net.apply_objects(core.api, [certs.certificate(core.lab, "wrong-token", infra.PROBE_NAMESPACE,
                                                       [f"wrong.{core.lab.ingress.domain}"])])
        with pytest.raises(certs.CertError, match=r"Certificate labkit-probes/wrong-token is not Ready after 20 s: "
                                                  r"Challenge .*"):
            certs.wait_certificate(core.api, infra.PROBE_NAMESPACE, "wrong-token", timeout=20)
    finally:
        manifests.deploy(core.api, "issuers", certs.issuer_objects(core.lab))
        infra.remove_probes(core.api)
    assert charts.verify(core.api, charts.from_lab(core.lab)) == []
