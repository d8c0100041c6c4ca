"""kube-prometheus-stack in the twin, over the wire: the chart installs through a HelmChart, the
operator model turns its Prometheus and Alertmanager resources into pods running Debian's real
programs, Prometheus scrapes the targets its ServiceMonitors select (node-exporter on every node,
kube-state-metrics, the kubelets (with cAdvisor and probe counts), the API server, CoreDNS, Traefik, cert-manager,
the operator, itself, Alertmanager) with the operator's labels, loads the lab's P1 rules without errors, picks up
a ServiceMonitor added later, names a target that does not answer; the disk_full fault fires
NodeDiskAlmostFull (its real expression, a test-only short ``for``) through the real Alertmanager
to a webhook receiver, and the crash_loop fault fires PodCrashLooping. One cluster for the module."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import yaml
from aiohttp import web

from labsim.apps import cert_manager_metrics
from labsim.apps.prometheus_operator import prometheus_config, prometheus_statefulset
from labsim.charts.kube_prometheus_stack import kube_prometheus_stack
from labsim.charts.release import Release
from labsim.k3s.addons import coredns, k3s_crds, traefik
from labsim.kube import faults
from labsim.net import cidrs
from labsim.net.coredns import CoreDNS
from labsim.net.kubeletapi import KubeletApi
from labsim.net.kubeproxy import KubeProxy
from labsim.runtime.programs import alertmanager, prometheus
from tests.labfiles import REPO, free_port
from tests.labsim.kube_fixtures import RunningCluster, running_cluster
from tests.polling import wait_until

pytestmark = pytest.mark.skipif(any(p.bin_dir() is None for p in (prometheus, alertmanager)),
                                reason="Debian's prometheus packages are not installed (make programs)")

NS, RELEASE = "monitoring", "kube-prometheus-stack"
PROMETHEUS_POD = f"prometheus-{RELEASE}-prometheus-0"
ALERTMANAGER_POD = f"alertmanager-{RELEASE}-alertmanager-0"
WORKER = "k3s-worker-01"
# k3s' Traefik with its metrics Service and a ServiceMonitor this Prometheus selects, as a lab sets it
TRAEFIK_METRICS = {"apiVersion": "helm.cattle.io/v1", "kind": "HelmChartConfig",
                   "metadata": {"name": "traefik", "namespace": "kube-system"},
                   "spec": {"valuesContent": yaml.safe_dump({"metrics": {"prometheus": {
                       "service": {"enabled": True},
                       "serviceMonitor": {"additionalLabels": {"release": RELEASE}, "interval": "2s"}}}})}}

CERT_MANAGER = {"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart", "metadata": {"name": "cert-manager",
                                                                                   "namespace": "kube-system"},
                "spec": {"chart": "cert-manager", "repo": "https://charts.jetstack.io", "version": "v1.19.1",
                         "targetNamespace": "cert-manager", "createNamespace": True, "valuesContent": yaml.safe_dump({
                             "crds": {"enabled": True}, "prometheus": {"servicemonitor": {
                                 "enabled": True, "interval": "2s", "scrapeTimeout": "1s", "labels": {"release": RELEASE}}}})}}


@dataclass
class Webhook:
    """The receiver Alertmanager posts to: every notification's body, in order."""
    port: int
    received: list[dict] = field(default_factory=list)

    def alerts(self, name: str, status: str) -> list[dict]:
        return [a for body in self.received for a in body["alerts"]
                if a["labels"].get("alertname") == name and a["status"] == status]


def _values(webhook: Webhook) -> str:
    return yaml.safe_dump({
        "defaultRules": {"disabled": {"Watchdog": True}},  # the lab's own Watchdog is loaded below, as in 04
        "prometheus": {"prometheusSpec": {"scrapeInterval": "2s", "evaluationInterval": "2s", "retention": "7d",
                                          "retentionSize": "15GB", "secrets": ["scrape-ca"]}},
        "alertmanager": {
            "alertmanagerSpec": {"secrets": ["webhook-ca"]},
            "config": {"route": {"receiver": "lab", "group_by": ["alertname", "instance"], "group_wait": "1s",
                                 "group_interval": "2s", "repeat_interval": "4h",
                                 "routes": [{"receiver": "null", "matchers": ['alertname = "Watchdog"']}]},
                       "receivers": [{"name": "null"}, {"name": "lab", "webhook_configs": [
                           {"url": f"http://127.0.0.1:{webhook.port}/alerts", "send_resolved": True}]}]}}})


@dataclass
class Stack:
    kube: RunningCluster
    webhook: Webhook
    prometheus: str  # http://POD_IP:9090
    alertmanager: str

    def get(self, base: str, path: str, **query: str):
        url = f"{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.loads(reply.read())

    def targets(self) -> list[dict]:
        return self.get(self.prometheus, "/api/v1/targets")["data"]["activeTargets"]

    def query(self, promql: str) -> list[dict]:
        return self.get(self.prometheus, "/api/v1/query", query=promql)["data"]["result"]

    def apply(self, *objects: dict) -> None:
        self.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # time_scale 0.05: probe periods and back-offs pass 20x faster than real, yet leave a Python
    # app model the second it needs to start before its liveness probe gives up on it.
    with running_cluster(tmp_path_factory.mktemp("kps"), nodes=2, time_scale=0.05) as kube:
        for controller in (KubeProxy(kube.cluster), CoreDNS(kube.cluster), KubeletApi(kube.cluster)):  # as k3s does
            kube.call(lambda c=controller: kube.cluster._tasks.append(asyncio.create_task(c.run())))
        webhook = Webhook(free_port())
        runner = kube.call(_serve_webhook, webhook)
        try:
            dns = cidrs.cluster_dns_ip(kube.cluster.service_cidr)
            kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([*k3s_crds(), *coredns("", str(dns))]))
            kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([*traefik(), TRAEFIK_METRICS, CERT_MANAGER]))
            kube.kubectl("create", "namespace", NS)
            for name in ("webhook-ca", "scrape-ca"):
                kube.kubectl("-n", NS, "create", "secret", "generic", name, "--from-literal=ca.crt=PEM of " + name)
            kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(_helmchart(_values(webhook))))
            ips = {pod: wait_until(lambda pod=pod: _ready_ip(kube, pod), timeout=60)
                   for pod in (PROMETHEUS_POD, ALERTMANAGER_POD)}
            yield Stack(kube, webhook, f"http://{ips[PROMETHEUS_POD]}:9090", f"http://{ips[ALERTMANAGER_POD]}:9093")
        finally:
            kube.call(runner.cleanup)


async def _serve_webhook(webhook: Webhook) -> web.AppRunner:
    async def receive(request: web.Request) -> web.Response:
        webhook.received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/alerts", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", webhook.port).start()
    return runner


def _helmchart(values: str) -> dict:
    return {"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart", "metadata": {"name": RELEASE, "namespace": "kube-system"},
            "spec": {"chart": RELEASE, "repo": "https://prometheus-community.github.io/helm-charts",
                     "version": "75.15.1", "targetNamespace": NS, "valuesContent": values}}


def _ready_ip(kube: RunningCluster, pod: str) -> str | None:
    found = kube.kubectl("-n", NS, "get", "pod", pod, "-o", "json", check=False)
    if found.returncode:
        return None
    status = json.loads(found.stdout).get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    return status.get("podIP") if ready else None


def _rule(name: str, groups: list[dict]) -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": name, "namespace": NS, "labels": {"release": RELEASE}}, "spec": {"groups": groups}}


def _p1_rules() -> list[dict]:
    return [yaml.safe_load(path.read_text()) for path in sorted((REPO / "parameters" / "alerts").glob("*.yaml"))]


def _fast(alert: str, for_: str = "4s") -> dict:
    """The P1 rule ``alert`` as it is, but for ``for_``: Prometheus runs on real time."""
    for doc in _p1_rules():
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alert:
                    return _rule(f"test-{alert.lower()}", [{"name": f"test-{alert}", "rules": [{**rule, "for": for_}]}])
    raise AssertionError(f"no P1 rule {alert}")


def test_the_chart_installs_real_prometheus_and_alertmanager_with_the_charts_names(stack: Stack) -> None:
    kube = stack.kube
    crds = kube.kubectl("get", "crd", "-o", "name").stdout
    for plural in ("prometheuses", "alertmanagers", "servicemonitors", "podmonitors", "prometheusrules",
                   "alertmanagerconfigs"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{plural}.monitoring.coreos.com" in crds
    names = kube.kubectl("-n", NS, "get", "statefulset,deployment,daemonset,service", "-o", "name").stdout.split()
    for expected in (f"statefulset.apps/prometheus-{RELEASE}-prometheus", f"statefulset.apps/alertmanager-{RELEASE}-alertmanager",
                     f"deployment.apps/{RELEASE}-operator", f"deployment.apps/{RELEASE}-kube-state-metrics",
                     f"daemonset.apps/{RELEASE}-prometheus-node-exporter", f"service/{RELEASE}-prometheus",
                     f"service/{RELEASE}-alertmanager", "service/prometheus-operated", "service/alertmanager-operated"):
        assert expected in names
    sts = json.loads(kube.kubectl("-n", NS, "get", "statefulset", f"prometheus-{RELEASE}-prometheus", "-o", "json").stdout)
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--storage.tsdb.retention.time=7d" in args and "--storage.tsdb.retention.size=15GB" in args
    # the real programs answer on their pod IPs
    assert stack.get(stack.prometheus, "/api/v1/status/buildinfo")["data"]["version"].startswith("2.")
    assert stack.get(stack.alertmanager, "/api/v2/status")["cluster"]["status"] == "disabled"
    flags = stack.get(stack.prometheus, "/api/v1/status/flags")["data"]  # 7d as Prometheus prints it
    assert flags["storage.tsdb.retention.time"] == "1w" and flags["web.enable-lifecycle"] == "true"
    assert flags["rules.alert.resend-delay"] == "3s"  # 1m on the lab's clock (time scale 0.05)
    # secrets of the spec are mounted where the operator mounts them
    for pod, path in ((ALERTMANAGER_POD, "/etc/alertmanager/secrets/webhook-ca/ca.crt"),
                      (PROMETHEUS_POD, "/etc/prometheus/secrets/scrape-ca/ca.crt")):
        uid = json.loads(kube.kubectl("-n", NS, "get", "pod", pod, "-o", "json").stdout)["metadata"]["uid"]
        container = pod.split("-")[0]
        mounted = kube.cluster.state_dir / "pods" / uid / container / "root" / path.lstrip("/")
        assert mounted.read_text().startswith("PEM of ")


def test_targets_are_up_with_the_operators_labels(stack: Stack) -> None:
    def all_up() -> list[dict] | None:
        found = stack.targets()
        jobs = {t["labels"]["job"] for t in found if t["health"] == "up"}
        return found if {"node-exporter", "kube-state-metrics", "apiserver", "coredns", f"{RELEASE}-prometheus",
                         f"{RELEASE}-alertmanager", f"{RELEASE}-operator", "kubelet", "traefik-metrics",
                         "cert-manager"} <= jobs and all(t["health"] == "up" for t in found) else None

    targets = wait_until(all_up, timeout=30)
    exporters = [t for t in targets if t["labels"]["job"] == "node-exporter"]
    assert sorted(t["labels"]["nodename"] for t in exporters) == ["k3s-master", WORKER]
    exporter = exporters[0]
    assert exporter["scrapePool"] == f"serviceMonitor/{NS}/{RELEASE}-prometheus-node-exporter/0"
    assert exporter["labels"]["namespace"] == NS and exporter["labels"]["endpoint"] == "http-metrics"
    assert exporter["labels"]["service"] == f"{RELEASE}-prometheus-node-exporter"
    assert exporter["labels"]["pod"].startswith(f"{RELEASE}-prometheus-node-exporter-")
    assert exporter["labels"]["container"] == "node-exporter"
    api = next(t for t in targets if t["labels"]["job"] == "apiserver")
    assert api["labels"]["service"] == "kubernetes" and api["scrapeUrl"].startswith("https://")
    # what the targets report is the twin's: each node's disk, the store's objects
    sizes = {r["metric"]["nodename"]: float(r["value"][1]) for r in stack.query(
        'node_filesystem_size_bytes{job="node-exporter",mountpoint="/",fstype="ext4"}')}
    assert set(sizes) == {"k3s-master", WORKER} and all(30e9 < s < 34e9 for s in sizes.values())
    ready = stack.query('kube_node_status_condition{condition="Ready",status="true"}')
    assert sorted(r["metric"]["node"] for r in ready) == ["k3s-master", WORKER]
    assert all(r["value"][1] == "1" for r in ready)
    assert stack.query(f'kube_pod_container_status_restarts_total{{pod="{PROMETHEUS_POD}",container="prometheus"}}')
    assert stack.query('apiserver_request_total{job="apiserver",verb="LIST",code="200"}')
    assert stack.query('coredns_build_info{job="coredns",namespace="kube-system"}')
    kubelets = sorted((t["labels"]["node"], t["labels"]["metrics_path"]) for t in targets if t["labels"]["job"] == "kubelet")
    assert kubelets == [(n, p) for n in ("k3s-master", WORKER) for p in ("/metrics", "/metrics/cadvisor", "/metrics/probes")]
    probed = stack.query('prober_probe_total{job="kubelet",container="node-exporter",result="successful"}')
    assert {r["metric"]["probe_type"] for r in probed} == {"Liveness", "Readiness"}  # the chart's two probes, checked
    assert all(float(r["value"][1]) >= 1 and r["metric"]["metrics_path"] == "/metrics/probes" for r in probed)
    cpu = stack.query(f'container_cpu_usage_seconds_total{{job="kubelet",pod="{PROMETHEUS_POD}",container="prometheus"}}')
    assert cpu and cpu[0]["metric"]["namespace"] == NS and float(cpu[0]["value"][1]) >= 0
    traefik_target = next(t for t in targets if t["labels"]["job"] == "traefik-metrics")
    assert traefik_target["scrapePool"] == "serviceMonitor/kube-system/traefik/0"
    assert stack.query('traefik_config_reloads_total{job="traefik-metrics"}')  # the real Traefik's own metric
    assert stack.query('certmanager_clock_time_seconds{job="cert-manager",namespace="cert-manager"}')
    operator = next(t for t in targets if t["labels"]["job"] == f"{RELEASE}-operator")
    assert operator["scrapeUrl"].startswith("https://") and operator["scrapeUrl"].endswith(":10250/metrics")


def test_the_p1_rules_load_without_evaluation_errors(stack: Stack) -> None:
    stack.apply(*[_rule(f"p1-{doc['groups'][0]['name']}", doc["groups"]) for doc in _p1_rules()])

    def loaded() -> dict | None:
        groups = {g["name"]: g for g in stack.get(stack.prometheus, "/api/v1/rules")["data"]["groups"]}
        return groups if {"nodes", "workloads", "certificates", "general", "general.rules"} <= set(groups) else None

    groups = wait_until(loaded, timeout=20)
    rules = [r for g in groups.values() for r in g["rules"]]
    assert {"NodeDiskAlmostFull", "NodeDown", "PodCrashLooping", "CertificateExpiringSoon", "Watchdog"} <= \
        {r["name"] for r in rules}
    wait_until(lambda: all(r.get("lastEvaluation", "").startswith("2") and not r["lastEvaluation"].startswith("0001")
                           for g in stack.get(stack.prometheus, "/api/v1/rules")["data"]["groups"] for r in g["rules"]),
               timeout=10)
    for group in stack.get(stack.prometheus, "/api/v1/rules")["data"]["groups"]:
        for rule in group["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    # the rule files are the operator's: one per PrometheusRule in the rulefiles ConfigMap
    data = json.loads(stack.kube.kubectl("-n", NS, "get", "configmap", f"prometheus-{RELEASE}-prometheus-rulefiles-0",
                                         "-o", "json").stdout)["data"]
    assert any(key.startswith(f"{NS}-p1-nodes-") and key.endswith(".yaml") for key in data)


def test_a_full_disk_fires_node_disk_almost_full_through_alertmanager_to_the_webhook(stack: Stack) -> None:
    stack.apply(_fast("NodeDiskAlmostFull"))
    wait_until(lambda: any(r["name"] == "NodeDiskAlmostFull" for g in stack.get(
        stack.prometheus, "/api/v1/rules")["data"]["groups"] if g["name"] == "test-NodeDiskAlmostFull" for r in g["rules"]),
        timeout=20)
    assert not stack.webhook.alerts("NodeDiskAlmostFull", "firing")
    stack.kube.call(faults.disk_full, stack.kube.cluster, WORKER, 97)
    try:
        fired = wait_until(lambda: stack.webhook.alerts("NodeDiskAlmostFull", "firing"), timeout=40)
        labels = fired[0]["labels"]
        assert labels["severity"] == "critical" and labels["mountpoint"] == "/" and labels["nodename"] == WORKER
        assert "space left" in fired[0]["annotations"]["description"]
        routed = stack.get(stack.alertmanager, "/api/v2/alerts", filter='alertname="NodeDiskAlmostFull"')
        assert [a["labels"]["nodename"] for a in routed] == [WORKER]
        assert routed[0]["receivers"] == [{"name": "lab"}] and routed[0]["status"]["state"] == "active"
    finally:
        stack.kube.call(faults.disk_clear, stack.kube.cluster, WORKER)
    wait_until(lambda: stack.webhook.alerts("NodeDiskAlmostFull", "resolved"), timeout=40)


def test_a_crash_looping_pod_fires_pod_crash_looping(stack: Stack) -> None:
    stack.apply(_fast("PodCrashLooping"), {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "flaky", "namespace": NS},
        "spec": {"containers": [{"name": "app", "image": "example.org/flaky:1"}]}})
    wait_until(lambda: _ready_ip(stack.kube, "flaky"), timeout=20)
    stack.kube.call(faults.crash_loop, stack.kube.cluster, NS, "flaky")
    fired = wait_until(lambda: [a for a in stack.webhook.alerts("PodCrashLooping", "firing")
                                if a["labels"].get("pod") == "flaky"], timeout=45)
    assert fired[0]["labels"]["container"] == "app" and fired[0]["labels"]["namespace"] == NS


def test_a_servicemonitor_added_later_is_scraped_and_a_down_target_is_named(stack: Stack) -> None:
    labels = {"app": "extra"}
    stack.kube.kubectl("create", "namespace", "apps")
    stack.apply(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "extra", "namespace": "apps", "labels": labels},
         "spec": {"containers": [{"name": "exporter", "image": "quay.io/prometheus/node-exporter:v1.9.1",
                                  "ports": [{"name": "metrics", "containerPort": 9100}]}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "silent", "namespace": "apps", "labels": {"app": "silent"}},
         "spec": {"containers": [{"name": "app", "image": "example.org/silent:1",
                                  "ports": [{"name": "metrics", "containerPort": 8080}]}]}},
        *[{"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "apps", "labels": {"app": name}},
           "spec": {"selector": {"app": name}, "ports": [{"name": "metrics", "port": port, "targetPort": "metrics"}]}}
          for name, port in (("extra", 9100), ("silent", 8080))],
        *[{"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
           "metadata": {"name": name, "namespace": "apps", "labels": {"release": RELEASE}},
           "spec": {"selector": {"matchLabels": {"app": name}}, "endpoints": [{"port": "metrics", "interval": "2s"}]}}
          for name in ("extra", "silent")],
        # one Prometheus would refuse (timeout over interval): the operator leaves it out
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
         "metadata": {"name": "greedy", "namespace": "apps", "labels": {"release": RELEASE}},
         "spec": {"selector": {"matchLabels": {"app": "extra"}},
                  "endpoints": [{"port": "metrics", "interval": "2s", "scrapeTimeout": "10s"}]}})

    def scraped(pool: str, health: str) -> dict | None:
        return next((t for t in stack.targets() if t["scrapePool"] == pool and t["health"] == health), None)

    extra = wait_until(lambda: scraped("serviceMonitor/apps/extra/0", "up"), timeout=30)
    assert extra["labels"]["job"] == "extra" and extra["labels"]["pod"] == "extra"
    config = stack.get(stack.prometheus, "/api/v1/status/config")["data"]["yaml"]
    assert "job_name: serviceMonitor/apps/extra/0" in config  # reloaded with the new job
    assert "greedy" not in config
    silent = wait_until(lambda: scraped("serviceMonitor/apps/silent/0", "down"), timeout=30)
    assert "connection refused" in silent["lastError"] and silent["labels"]["job"] == "silent"
    assert stack.query('up{job="silent"} == 0')


def test_an_alertmanagerconfig_is_merged_with_its_namespace_matcher(stack: Stack) -> None:
    stack.apply({"apiVersion": "monitoring.coreos.com/v1alpha1", "kind": "AlertmanagerConfig",
                 "metadata": {"name": "team", "namespace": NS},
                 "spec": {"route": {"receiver": "pager", "matchers": [{"name": "severity", "value": "critical"}]},
                          "receivers": [{"name": "pager", "webhookConfigs": [
                              {"url": f"http://127.0.0.1:{stack.webhook.port}/alerts"}]}]}})

    def merged() -> str | None:
        text = stack.get(stack.alertmanager, "/api/v2/status")["config"]["original"]
        return text if f"{NS}/team/pager" in text else None

    config = yaml.safe_load(wait_until(merged, timeout=20))
    route = config["route"]["routes"][0]
    assert route["receiver"] == f"{NS}/team/pager" and route["continue"] is True
    assert route["matchers"] == [f'namespace="{NS}"', 'severity="critical"']
    assert config["route"]["receiver"] == "lab"  # the chart's config stays the root



def test_the_programs_run_on_the_labs_clock_while_the_objects_keep_the_users_values(stack: Stack) -> None:
    """At this lab's time scale (0.05) the configuration the programs loaded carries the waits
    scaled (floors: 1 s, 60 s for repeats; a value below its floor as it is),
    while the objects and the operator's Secrets keep what the user wrote; PromQL is not scaled."""
    kube = stack.kube
    stack.apply(_rule("clock", [{"name": "clock", "interval": "10s", "rules": [
        {"alert": "Clocked", "expr": "rate(prometheus_http_requests_total[5m]) < 0", "for": "1m"}]}]))
    group = wait_until(lambda: next((g for g in stack.get(stack.prometheus, "/api/v1/rules")["data"]["groups"]
                                     if g["name"] == "clock"), None), timeout=20)
    assert group["interval"] == 1 and group["rules"][0]["duration"] == 3  # 10s and 1m x 0.05, at least 1 s
    assert group["rules"][0]["query"] == "rate(prometheus_http_requests_total[5m]) < 0"
    rule = json.loads(kube.kubectl("-n", NS, "get", "prometheusrule", "clock", "-o", "json").stdout)
    assert rule["spec"]["groups"][0]["rules"][0]["for"] == "1m" and rule["spec"]["groups"][0]["interval"] == "10s"
    rulefiles = json.loads(kube.kubectl("-n", NS, "get", "configmap", f"prometheus-{RELEASE}-prometheus-rulefiles-0",
                                        "-o", "json").stdout)["data"]
    assert any("for: 1m" in text and "interval: 10s" in text for text in rulefiles.values())

    prom = json.loads(kube.kubectl("-n", NS, "get", "prometheus", f"{RELEASE}-prometheus", "-o", "json").stdout)
    assert (prom["spec"]["scrapeInterval"], prom["spec"]["evaluationInterval"]) == ("2s", "2s")
    loaded = yaml.safe_load(stack.get(stack.prometheus, "/api/v1/status/config")["data"]["yaml"])["global"]
    assert (loaded["scrape_interval"], loaded["evaluation_interval"]) == ("1s", "1s")  # 2s x 0.05, at least 1 s

    secret = json.loads(kube.kubectl("-n", NS, "get", "secret", f"alertmanager-{RELEASE}-alertmanager",
                                     "-o", "json").stdout)
    users = yaml.safe_load(base64.b64decode(secret["data"]["alertmanager.yaml"]))["route"]
    assert (users["group_wait"], users["group_interval"], users["repeat_interval"]) == ("1s", "2s", "4h")
    route = yaml.safe_load(stack.get(stack.alertmanager, "/api/v2/status")["config"]["original"])["route"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("1s", "1s", "12m")  # 720 s as Alertmanager prints it


def test_storage_spec_and_retention_reach_the_statefulset() -> None:
    """The chart's prometheusSpec as the operator turns it into the StatefulSet: the claim template
    on the storage class (mounted with the operator's subPath), retention time and size flags."""
    values = {"prometheus": {"prometheusSpec": {"retention": "7d", "retentionSize": "15GB", "storageSpec": {
        "volumeClaimTemplate": {"spec": {"storageClassName": "nfs-client", "accessModes": ["ReadWriteOnce"],
                                         "resources": {"requests": {"storage": "20Gi"}}}}}}}}
    objects = kube_prometheus_stack(Release(RELEASE, NS, RELEASE, "75.15.1", values))
    prom = next(o for o in objects if o["kind"] == "Prometheus")
    prom["metadata"]["uid"] = "u1"
    sts = prometheus_statefulset({"apiVersion": "monitoring.coreos.com/v1", **prom})
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == f"prometheus-{RELEASE}-prometheus-db"
    assert claim["spec"]["storageClassName"] == "nfs-client" and claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert {"name": claim["metadata"]["name"], "mountPath": "/prometheus", "subPath": "prometheus-db"} in \
        container["volumeMounts"]
    assert not any(v["name"] == claim["metadata"]["name"] for v in sts["spec"]["template"]["spec"]["volumes"])
    assert {"--storage.tsdb.retention.time=7d", "--storage.tsdb.retention.size=15GB"} <= set(container["args"])


def _chart_alerts(values: dict) -> list[str]:
    objects = kube_prometheus_stack(Release(RELEASE, NS, RELEASE, "75.15.1", values))
    return [r["alert"] for o in objects if o["kind"] == "PrometheusRule"
            for g in o["spec"]["groups"] for r in g["rules"] if "alert" in r]


def test_the_labs_values_leave_no_chart_alert_that_a_lab_rule_also_defines() -> None:
    """Two rules with one name and the same labels write one ALERTS series from two groups, and
    Prometheus fails one group's evaluation with "out of order sample": the chart's Watchdog is off."""
    assert "Watchdog" in _chart_alerts({})  # as the chart ships
    lab_values = yaml.safe_load((REPO / "parameters" / "values" / "kube-prometheus-stack.yaml").read_text())
    chart = _chart_alerts(lab_values)
    assert chart == ["TargetDown", "InfoInhibitor"]
    lab = {r["alert"] for doc in _p1_rules() for g in doc["groups"] for r in g["rules"]}
    assert "Watchdog" in lab and not lab & set(chart)


def test_the_operators_remembered_config_follows_every_change() -> None:
    """The operator renders its config at every Pod event and remembers the YAML by its data: a
    render is PyYAML's for that data, and any change (a job, the scrape interval) gives new YAML."""
    prom = {"metadata": {"name": "kps", "namespace": NS}, "spec": {"scrapeInterval": "30s"}}
    jobs = [{"job_name": "serviceMonitor/monitoring/a/0", "scrape_interval": "30s"}]
    first = prometheus_config(prom, jobs)
    assert yaml.safe_load(first)["scrape_configs"] == jobs and prometheus_config(prom, jobs) == first
    more = [*jobs, {"job_name": "serviceMonitor/monitoring/b/0"}]
    assert [j["job_name"] for j in yaml.safe_load(prometheus_config(prom, more))["scrape_configs"]] == \
        ["serviceMonitor/monitoring/a/0", "serviceMonitor/monitoring/b/0"]
    faster = {**prom, "spec": {"scrapeInterval": "1s"}}
    assert yaml.safe_load(prometheus_config(faster, jobs))["global"]["scrape_interval"] == "1s"
    assert yaml.safe_load(prometheus_config(prom, jobs))["global"]["scrape_interval"] == "30s"


def test_cert_manager_metrics_carry_each_certificates_expiry() -> None:
    cert = {"metadata": {"name": "wildcard", "namespace": "infra"},
            "spec": {"issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"}},
            "status": {"notAfter": "2027-03-06T07:00:00Z", "renewalTime": "2027-02-04T07:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True"}]}}
    text = cert_manager_metrics.render([cert], 1_796_000_000.0)
    labels = 'issuer_group="cert-manager.io",issuer_kind="ClusterIssuer",issuer_name="letsencrypt",name="wildcard",' \
             'namespace="infra"'
    assert f"certmanager_certificate_expiration_timestamp_seconds{{{labels}}} 1804316400" in text
    assert f'certmanager_certificate_ready_status{{condition="True",{labels}}} 1' in text
    assert f'certmanager_certificate_ready_status{{condition="False",{labels}}} 0' in text
    assert "certmanager_clock_time_seconds 1796000000" in text
