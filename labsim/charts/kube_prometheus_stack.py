"""prometheus-community's ``kube-prometheus-stack`` (chart 7x-8x, operator v0.8x-0.9x), with its
Grafana subchart from the grafana chart's own model (``labsim.charts.grafana``, plus the stack's
datasource and dashboard ConfigMaps): the monitoring.coreos.com CRDs (open schemas), the prometheus-operator
Deployment, the ``Prometheus`` and ``Alertmanager`` resources (the operator model,
``labsim.apps.prometheus_operator``, turns them into StatefulSets), the Alertmanager config
Secret from ``alertmanager.config``, the Services and ServiceMonitors (Prometheus, Alertmanager,
operator, apiserver, CoreDNS, kubelet, node-exporter, kube-state-metrics), the node-exporter
DaemonSet and kube-state-metrics Deployment of the sub-charts, RBAC, and the chart's
``general.rules`` PrometheusRule. Names and labels are the real chart's: release
``kube-prometheus-stack`` gives Prometheus ``kube-prometheus-stack-prometheus`` (pod
``prometheus-kube-prometheus-stack-prometheus-0``), Services ``kube-prometheus-stack-prometheus``
(9090) and ``-alertmanager`` (9093).

Left out on purpose: the ``reloader-web`` endpoints of the self-monitors (the config-reloader
sidecar is the operator model's work here, no process listens on 8080), the admission webhook
and its patch Jobs, the controller-manager/scheduler/proxy/etcd monitors (k3s runs them inside
its one binary; the lab file disables them), the other default rule groups.
"""

from __future__ import annotations

import base64
import json

import yaml

from labsim.charts import grafana
from labsim.charts.release import Release, value

CHART = "kube-prometheus-stack"
GROUP = "monitoring.coreos.com"
CRDS = {  # kind -> (plural, version, short names)
    "Alertmanager": ("alertmanagers", "v1", ["am"]), "AlertmanagerConfig": ("alertmanagerconfigs", "v1alpha1", ["amcfg"]),
    "PodMonitor": ("podmonitors", "v1", ["pmon"]), "Probe": ("probes", "v1", ["prb"]),
    "Prometheus": ("prometheuses", "v1", ["prom"]), "PrometheusAgent": ("prometheusagents", "v1alpha1", ["promagent"]),
    "PrometheusRule": ("prometheusrules", "v1", ["promrule"]), "ScrapeConfig": ("scrapeconfigs", "v1alpha1", ["scfg"]),
    "ServiceMonitor": ("servicemonitors", "v1", ["smon"]), "ThanosRuler": ("thanosrulers", "v1", ["ruler"]),
}
OPERATOR_VERSION = "v0.83.0"
_OPEN = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
# The chart's general.rules group (TargetDown, Watchdog, InfoInhibitor), as it ships.
GENERAL_RULES = [{"name": "general.rules", "rules": [
    {"alert": "TargetDown", "annotations": {
        "description": "{{ printf \"%.4g\" $value }}% of the {{ $labels.job }}/{{ $labels.service }} targets in "
                       "{{ $labels.namespace }} namespace are down.",
        "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/general/targetdown",
        "summary": "One or more targets are unreachable."},
     "expr": "100 * (count(up == 0) BY (cluster, job, namespace, service) / count(up) BY (cluster, job, namespace, "
             "service)) > 10", "for": "10m", "labels": {"severity": "warning"}},
    {"alert": "Watchdog", "annotations": {
        "description": "This is an alert meant to ensure that the entire alerting pipeline is functional.",
        "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/general/watchdog",
        "summary": "An alert that should always be firing to certify that Alertmanager is working properly."},
     "expr": "vector(1)", "labels": {"severity": "none"}},
    {"alert": "InfoInhibitor", "annotations": {
        "description": "This is an alert that is used to inhibit info alerts.",
        "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/general/infoinhibitor",
        "summary": "Info-level alert inhibition."},
     "expr": "ALERTS{severity = \"info\"} == 1 unless on (namespace) ALERTS{alertname != \"InfoInhibitor\", "
             "severity =~ \"warning|critical\", alertstate=\"firing\"} == 1", "labels": {"severity": "none"}}]}]
DEFAULT_ALERTMANAGER_CONFIG = {
    "global": {"resolve_timeout": "5m"},
    "inhibit_rules": [{"source_matchers": ["severity = critical"], "target_matchers": ["severity =~ warning|info"],
                       "equal": ["namespace", "alertname"]},
                      {"source_matchers": ["severity = warning"], "target_matchers": ["severity = info"],
                       "equal": ["namespace", "alertname"]},
                      {"source_matchers": ["alertname = InfoInhibitor"], "target_matchers": ["severity = info"],
                       "equal": ["namespace"]},
                      {"target_matchers": ["alertname = InfoInhibitor"]}],
    "route": {"group_by": ["namespace"], "group_wait": "30s", "group_interval": "5m", "repeat_interval": "12h",
              "receiver": "null", "routes": [{"receiver": "null", "matchers": ["alertname = \"Watchdog\""]}]},
    "receivers": [{"name": "null"}],
    "templates": ["/etc/alertmanager/config/*.tmpl"],
}


def fullname(release: Release) -> str:
    override = value(release.values, "fullnameOverride")
    name = override or (release.name if CHART in release.name else f"{release.name}-{CHART}")
    return name[:26].rstrip("-")


def labels(release: Release, app: str | None = None) -> dict:
    """The chart's ``kube-prometheus-stack.labels`` (and ``app: kube-prometheus-stack-<app>``)."""
    version = release.version.replace("+", "_")
    found = {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": release.name,
             "app.kubernetes.io/version": version, "app.kubernetes.io/part-of": CHART,
             "chart": f"{CHART}-{version}", "release": release.name, "heritage": "Helm"}
    return {"app": f"{CHART}-{app}", **found} if app else found


def kube_prometheus_stack(release: Release) -> list[dict]:
    values = release.values
    objects = crds(release) if value(values, "crds.enabled", True) else []
    objects += _operator(release)
    if value(values, "prometheus.enabled", True):
        objects += _prometheus(release)
    if value(values, "alertmanager.enabled", True):
        objects += _alertmanager(release)
    if value(values, "nodeExporter.enabled", True):
        objects += _node_exporter(release)
    if value(values, "kubeStateMetrics.enabled", True):
        objects += _kube_state_metrics(release)
    objects += _exporters(release)
    if value(values, "grafana.enabled", True):
        objects += _grafana(release)
    if value(values, "defaultRules.create", True) and value(values, "defaultRules.rules.general", True):
        disabled = value(values, "defaultRules.disabled", None) or {}  # {alert name: true}, as the chart reads it
        groups = [{**group, "rules": [r for r in group["rules"] if not disabled.get(r["alert"])]}
                  for group in GENERAL_RULES]
        objects.append({"apiVersion": f"{GROUP}/v1", "kind": "PrometheusRule",
                        "metadata": _meta(release, f"{fullname(release)}-general.rules", labels(release, CHART)),
                        "spec": {"groups": groups}})
    return objects


def crds(release: Release) -> list[dict]:
    annotations = {"controller-gen.kubebuilder.io/version": "v0.18.0", "operator.prometheus.io/version":
                   OPERATOR_VERSION.lstrip("v")}
    return [{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
             "metadata": {"name": f"{plural}.{GROUP}", "annotations": annotations},
             "spec": {"group": GROUP, "scope": "Namespaced", "names": {
                 "kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                 "shortNames": short, "categories": ["prometheus-operator"]},
                 "versions": [{"name": version, "served": True, "storage": True, "schema": _OPEN,
                               "subresources": {"status": {}}}]}}
            for kind, (plural, version, short) in CRDS.items()]


def _meta(release: Release, name: str, found_labels: dict, namespace: str | None = "") -> dict:
    meta = {"name": name, "labels": found_labels,
            "annotations": {"meta.helm.sh/release-name": release.name, "meta.helm.sh/release-namespace": release.namespace}}
    if namespace is not None:
        meta["namespace"] = namespace or release.namespace
    return meta


def _rbac(release: Release, name: str, account: str, found_labels: dict, rules: list[dict]) -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(release, account, found_labels),
         "automountServiceAccountToken": True},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": _meta(release, name, found_labels, None), "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _meta(release, name, found_labels, None),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": release.namespace}]},
    ]


def _service_monitor(release: Release, name: str, app: str, selector: dict, endpoints: list[dict],
                     namespaces: list[str] | None = None, job_label: str | None = None, extra_labels=None) -> dict:
    spec = {"selector": {"matchLabels": selector},
            "namespaceSelector": {"matchNames": namespaces or [release.namespace]}, "endpoints": endpoints}
    if job_label:
        spec["jobLabel"] = job_label
    return {"apiVersion": f"{GROUP}/v1", "kind": "ServiceMonitor",
            "metadata": _meta(release, name, {**labels(release, app), **(extra_labels or {})}), "spec": spec}


def _service(release: Release, name: str, found_labels: dict, selector: dict, ports: list[dict],
             namespace: str = "", cluster_ip: str | None = None) -> dict:
    spec = {"type": "ClusterIP", "selector": selector, "ports": ports}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(release, name, found_labels, namespace), "spec": spec}


def _operator(release: Release) -> list[dict]:
    values, full = release.values, fullname(release)
    name = f"{full}-operator"
    found = {**labels(release, "operator"), "app.kubernetes.io/name": f"{CHART}-prometheus-operator",
             "app.kubernetes.io/component": "prometheus-operator"}
    selector = {"app": f"{CHART}-operator", "release": release.name}
    tag = value(values, "prometheusOperator.image.tag") or OPERATOR_VERSION
    registry = value(values, "prometheusOperator.image.registry", "quay.io")
    repository = value(values, "prometheusOperator.image.repository", "prometheus-operator/prometheus-operator")
    tls = value(values, "prometheusOperator.tls.enabled", True)
    port = 10250 if tls else 8080
    args = [f"--kubelet-service=kube-system/{full}-kubelet", "--kubelet-endpoints=true",
            "--kubelet-endpointslice=false", "--localhost=127.0.0.1",
            f"--prometheus-config-reloader={registry}/prometheus-operator/prometheus-config-reloader:{tag}",
            "--config-reloader-cpu-request=0", "--config-reloader-cpu-limit=0",
            "--config-reloader-memory-request=0", "--config-reloader-memory-limit=0",
            "--thanos-default-base-image=quay.io/thanos/thanos:v0.39.2",
            "--secret-field-selector=type!=kubernetes.io/dockercfg,type!=kubernetes.io/service-account-token,"
            "type!=helm.sh/release.v1", f"--web.listen-address=:{port}"]
    if tls:
        args += ["--web.enable-tls=true", "--web.tls-min-version=VersionTLS13"]
    rules = [{"apiGroups": [GROUP], "resources": ["*"], "verbs": ["*"]},
             {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["*"]},
             {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["*"]},
             {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]},
             {"apiGroups": [""], "resources": ["services", "services/finalizers", "endpoints"],
              "verbs": ["get", "create", "update", "delete"]},
             {"apiGroups": [""], "resources": ["nodes", "namespaces"], "verbs": ["list", "watch"]},
             {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch"]}]
    port_name = "https" if tls else "http"
    objects = [*_rbac(release, name, name, found, rules),
               _service(release, name, found, selector, [{"name": port_name, "port": 443 if tls else 8080,
                                                          "targetPort": port_name}]),
               {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(release, name, found),
                "spec": {"replicas": 1, "revisionHistoryLimit": 10, "selector": {"matchLabels": selector},
                         "template": {"metadata": {"labels": found}, "spec": {
                             "serviceAccountName": name, "automountServiceAccountToken": True,
                             "containers": [{"name": CHART, "image": f"{registry}/{repository}:{tag}",
                                             "imagePullPolicy": "IfNotPresent", "args": args,
                                             "ports": [{"containerPort": port, "name": port_name}],
                                             "env": [{"name": "GOGC", "value": "30"}]}],
                             "securityContext": {"fsGroup": 65534, "runAsGroup": 65534, "runAsNonRoot": True,
                                                 "runAsUser": 65534}}}}}]
    if value(values, "prometheusOperator.serviceMonitor.selfMonitor", True):
        endpoint = {"port": port_name, "honorLabels": True}
        if tls:  # the operator serves its metrics over TLS with the chart's admission certificate
            endpoint.update(scheme="https", tlsConfig={"serverName": name, "insecureSkipVerify": True})
        objects.append(_service_monitor(release, name, "operator", {"app": f"{CHART}-operator", "release": release.name},
                                        [endpoint]))
    return objects


def _prometheus(release: Release) -> list[dict]:
    values, full = release.values, fullname(release)
    name = f"{full}-prometheus"
    found = labels(release, "prometheus")
    spec = value(values, "prometheus.prometheusSpec", {}) or {}
    selector = {"matchLabels": {"release": release.name}}
    cr_spec = {
        "alerting": {"alertmanagers": [{"namespace": release.namespace, "name": f"{full}-alertmanager",
                                        "port": "http-web", "pathPrefix": "/", "apiVersion": "v2"}]},
        "image": f"quay.io/prometheus/prometheus:{spec.get('image', {}).get('tag', 'v3.5.0')}",
        "version": spec.get("image", {}).get("tag", "v3.5.0"),
        "externalUrl": spec.get("externalUrl") or f"http://{name}.{release.namespace}:9090",
        "paused": False, "replicas": spec.get("replicas", 1), "shards": 1, "logLevel": "info", "logFormat": "logfmt",
        "listenLocal": False, "enableAdminAPI": False, "retention": spec.get("retention", "10d"),
        "tsdb": {"outOfOrderTimeWindow": "0s"}, "walCompression": True, "routePrefix": "/",
        "serviceAccountName": name, "portName": "http-web", "hostNetwork": False,
        "securityContext": {"fsGroup": 2000, "runAsGroup": 2000, "runAsNonRoot": True, "runAsUser": 1000},
    }
    for key in ("retentionSize", "scrapeInterval", "evaluationInterval", "externalLabels", "secrets", "configMaps",
                "resources", "additionalScrapeConfigs", "enableFeatures", "additionalArgs"):
        if spec.get(key):
            cr_spec[key] = spec[key]
    if spec.get("storageSpec"):
        cr_spec["storage"] = spec["storageSpec"]  # the chart's name for the resource's spec.storage
    for kind in ("serviceMonitor", "podMonitor", "probe", "rule", "scrapeConfig"):
        key = f"{kind}Selector"
        if spec.get(key) is not None:
            cr_spec[key] = spec[key]
        elif spec.get(f"{key}NilUsesHelmValues", True):
            cr_spec[key] = selector
        else:
            cr_spec[key] = {}
        cr_spec[f"{kind}NamespaceSelector"] = spec.get(f"{kind}NamespaceSelector", {})
    rules = [{"apiGroups": [""], "resources": ["nodes", "nodes/metrics", "services", "endpoints", "pods"],
              "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch"]},
             {"nonResourceURLs": ["/metrics", "/metrics/cadvisor"], "verbs": ["get"]}]
    service_labels = {**found, "self-monitor": "true"}
    objects = [
        *_rbac(release, name, name, found, rules),
        _service(release, name, service_labels, {"app.kubernetes.io/name": "prometheus", "operator.prometheus.io/name": name},
                 [{"name": "http-web", "port": int(value(values, "prometheus.service.port", 9090)),
                   "targetPort": 9090}]),
        {"apiVersion": f"{GROUP}/v1", "kind": "Prometheus", "metadata": _meta(release, name, found), "spec": cr_spec},
    ]
    if value(values, "prometheus.serviceMonitor.selfMonitor", True):
        objects.append(_service_monitor(release, name, "prometheus", {
            "app": f"{CHART}-prometheus", "release": release.name, "self-monitor": "true"},
            [{"port": "http-web", "path": "/metrics"}]))
    return objects


def _alertmanager(release: Release) -> list[dict]:
    values, full = release.values, fullname(release)
    name = f"{full}-alertmanager"
    found = labels(release, "alertmanager")
    spec = value(values, "alertmanager.alertmanagerSpec", {}) or {}
    config = value(values, "alertmanager.config", DEFAULT_ALERTMANAGER_CONFIG)
    text = value(values, "alertmanager.stringConfig") or yaml.safe_dump(config, sort_keys=False)
    cr_spec = {"image": f"quay.io/prometheus/alertmanager:{spec.get('image', {}).get('tag', 'v0.28.1')}",
               "version": spec.get("image", {}).get("tag", "v0.28.1"), "replicas": spec.get("replicas", 1),
               "listenLocal": False, "serviceAccountName": name, "logFormat": "logfmt", "logLevel": "info",
               "retention": spec.get("retention", "120h"), "routePrefix": "/", "portName": "http-web",
               "externalUrl": spec.get("externalUrl") or f"http://{name}.{release.namespace}:9093",
               "alertmanagerConfigSelector": spec.get("alertmanagerConfigSelector", {}),
               "alertmanagerConfigNamespaceSelector": spec.get("alertmanagerConfigNamespaceSelector", {}),
               "securityContext": {"fsGroup": 2000, "runAsGroup": 2000, "runAsNonRoot": True, "runAsUser": 1000}}
    for key in ("secrets", "configMaps", "storage", "resources", "alertmanagerConfigMatcherStrategy"):
        if spec.get(key):
            cr_spec[key] = spec[key]
    service_labels = {**found, "self-monitor": "true"}
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(release, name, found),
         "automountServiceAccountToken": True},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": _meta(release, f"alertmanager-{name}", found),
         "data": {"alertmanager.yaml": base64.b64encode(text.encode()).decode()}},
        _service(release, name, service_labels, {"app.kubernetes.io/name": "alertmanager", "alertmanager": name},
                 [{"name": "http-web", "port": int(value(values, "alertmanager.service.port", 9093)),
                   "targetPort": 9093, "protocol": "TCP"}]),
        {"apiVersion": f"{GROUP}/v1", "kind": "Alertmanager", "metadata": _meta(release, name, found), "spec": cr_spec},
    ]
    if value(values, "alertmanager.serviceMonitor.selfMonitor", True):
        objects.append(_service_monitor(release, name, "alertmanager", {
            "app": f"{CHART}-alertmanager", "release": release.name, "self-monitor": "true"},
            [{"port": "http-web", "path": "/metrics", "enableHttp2": True}]))
    return objects


def _subchart_labels(release: Release, chart: str, version: str, app_version: str) -> tuple[dict, dict]:
    selector = {"app.kubernetes.io/name": chart, "app.kubernetes.io/instance": release.name}
    return {"helm.sh/chart": f"{chart}-{version}", "app.kubernetes.io/managed-by": "Helm",
            "app.kubernetes.io/component": "metrics", "app.kubernetes.io/part-of": chart,
            **selector, "app.kubernetes.io/version": app_version, "release": release.name}, selector


def _node_exporter(release: Release) -> list[dict]:
    chart = "prometheus-node-exporter"
    name = f"{release.name}-{chart}" if chart not in release.name else release.name
    found, selector = _subchart_labels(release, chart, "4.47.3", "1.9.1")
    found = {**found, "jobLabel": "node-exporter"}
    host = [("proc", "/proc", "/host/proc"), ("sys", "/sys", "/host/sys"), ("root", "/", "/host/root")]
    pod = {"automountServiceAccountToken": False, "serviceAccountName": name, "hostNetwork": False, "hostPID": True,
           "securityContext": {"fsGroup": 65534, "runAsGroup": 65534, "runAsNonRoot": True, "runAsUser": 65534},
           "containers": [{"name": "node-exporter", "image": "quay.io/prometheus/node-exporter:v1.9.1",
                           "args": ["--path.procfs=/host/proc", "--path.sysfs=/host/sys", "--path.rootfs=/host/root",
                                    "--path.udev.data=/host/root/run/udev/data", "--web.listen-address=[$(HOST_IP)]:9100",
                                    "--collector.filesystem.mount-points-exclude=^/(dev|proc|sys|var/lib/docker/.+|"
                                    "var/lib/kubelet/.+)($|/)",
                                    "--collector.filesystem.fs-types-exclude=^(autofs|binfmt_misc|bpf|cgroup2?|configfs|"
                                    "debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|"
                                    "pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$"],
                           "env": [{"name": "HOST_IP", "value": "0.0.0.0"}],
                           "ports": [{"name": "http-metrics", "containerPort": 9100, "protocol": "TCP"}],
                           "livenessProbe": {"httpGet": {"path": "/", "port": 9100}},
                           "readinessProbe": {"httpGet": {"path": "/", "port": 9100}},
                           "volumeMounts": [{"name": v, "mountPath": m, "readOnly": True} for v, _, m in host]}],
           "tolerations": [{"effect": "NoSchedule", "operator": "Exists"}],
           "nodeSelector": {"kubernetes.io/os": "linux"},
           "volumes": [{"name": v, "hostPath": {"path": p}} for v, p, _ in host]}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(release, name, found),
         "automountServiceAccountToken": False},
        _service(release, name, found, selector, [{"name": "http-metrics", "port": 9100, "targetPort": 9100,
                                                   "protocol": "TCP"}]),
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(release, name, found),
         "spec": {"selector": {"matchLabels": selector}, "revisionHistoryLimit": 10,
                  "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                  "template": {"metadata": {"labels": found,
                                            "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}},
                               "spec": pod}}},
        {"apiVersion": f"{GROUP}/v1", "kind": "ServiceMonitor", "metadata": _meta(release, name, found),
         "spec": {"jobLabel": "jobLabel", "selector": {"matchLabels": selector}, "attachMetadata": {"node": False},
                  "endpoints": [{"port": "http-metrics", "scheme": "http",
                                 "relabelings": [{"action": "replace", "regex": "^(.*)$", "replacement": "$1",
                                                  "separator": ";", "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                                  "targetLabel": "nodename"}]}]}},
    ]


def _kube_state_metrics(release: Release) -> list[dict]:
    chart = "kube-state-metrics"
    name = f"{release.name}-{chart}" if chart not in release.name else release.name
    found, selector = _subchart_labels(release, chart, "6.1.4", "2.16.0")
    resources = ["certificatesigningrequests", "configmaps", "cronjobs", "daemonsets", "deployments", "endpoints",
                 "horizontalpodautoscalers", "ingresses", "jobs", "leases", "limitranges", "mutatingwebhookconfigurations",
                 "namespaces", "networkpolicies", "nodes", "persistentvolumeclaims", "persistentvolumes",
                 "poddisruptionbudgets", "pods", "replicasets", "replicationcontrollers", "resourcequotas", "secrets",
                 "services", "statefulsets", "storageclasses", "validatingwebhookconfigurations", "volumeattachments"]
    rules = [{"apiGroups": ["", "apps", "batch", "autoscaling", "networking.k8s.io", "policy", "storage.k8s.io",
                            "coordination.k8s.io", "certificates.k8s.io", "admissionregistration.k8s.io"],
              "resources": resources, "verbs": ["list", "watch"]}]
    pod = {"serviceAccountName": name, "automountServiceAccountToken": True,
           "securityContext": {"fsGroup": 65534, "runAsGroup": 65534, "runAsNonRoot": True, "runAsUser": 65534},
           "containers": [{"name": chart, "image": "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.16.0",
                           "args": ["--port=8080", "--resources=" + ",".join(resources)],
                           "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                           "livenessProbe": {"httpGet": {"path": "/livez", "port": 8080}},
                           "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}}}]}
    return [
        *_rbac(release, name, name, found, rules),
        _service(release, name, found, selector, [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]),
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(release, name, found),
         "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": found}, "spec": pod}}},
        {"apiVersion": f"{GROUP}/v1", "kind": "ServiceMonitor", "metadata": _meta(release, name, found),
         "spec": {"jobLabel": "app.kubernetes.io/name", "selector": {"matchLabels": selector},
                  "endpoints": [{"port": "http", "honorLabels": True}]}},
    ]


def _exporters(release: Release) -> list[dict]:
    """The apiserver, CoreDNS and kubelet monitors (the kubelet's Service is the operator's)."""
    values, full, objects = release.values, fullname(release), []
    if value(values, "kubeApiServer.enabled", True):
        objects.append(_service_monitor(
            release, f"{full}-apiserver", "apiserver", {"component": "apiserver", "provider": "kubernetes"},
            [{"bearerTokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token", "port": "https",
              "scheme": "https", "tlsConfig": {"caFile": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                                               "serverName": "kubernetes", "insecureSkipVerify": False}}],
            namespaces=["default"], job_label="component"))
    if value(values, "coreDns.enabled", True):
        found = {**labels(release, "coredns"), "jobLabel": "coredns"}
        objects += [
            _service(release, f"{full}-coredns", found, {"k8s-app": "kube-dns"},
                     [{"name": "http-metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}],
                     namespace="kube-system", cluster_ip="None"),
            _service_monitor(release, f"{full}-coredns", "coredns", {"app": f"{CHART}-coredns", "release": release.name},
                             [{"port": "http-metrics", "bearerTokenFile":
                               "/var/run/secrets/kubernetes.io/serviceaccount/token"}],
                             namespaces=["kube-system"], job_label="jobLabel")]
    if value(values, "kubelet.enabled", True):
        token = "/var/run/secrets/kubernetes.io/serviceaccount/token"
        tls = {"caFile": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", "insecureSkipVerify": True}
        path_label = [{"action": "replace", "sourceLabels": ["__metrics_path__"], "targetLabel": "metrics_path"}]
        objects.append(_service_monitor(
            release, f"{full}-kubelet", "kubelet", {"app.kubernetes.io/name": "kubelet", "k8s-app": "kubelet"},
            [{"port": "https-metrics", "scheme": "https", "bearerTokenFile": token, "tlsConfig": tls, "honorLabels": True,
              "relabelings": path_label},
             {"port": "https-metrics", "scheme": "https", "path": "/metrics/cadvisor", "bearerTokenFile": token,
              "tlsConfig": tls, "honorLabels": True, "honorTimestamps": True, "relabelings": path_label},
             {"port": "https-metrics", "scheme": "https", "path": "/metrics/probes", "bearerTokenFile": token,
              "tlsConfig": tls, "honorLabels": True, "relabelings": path_label}],  # kubelet.serviceMonitor.probes
            namespaces=["kube-system"], job_label="k8s-app"))
    return objects


# -- the grafana subchart ---------------------------------------------------------------------------
GRAFANA_VERSION = "9.2.10"  # the grafana chart kube-prometheus-stack 72.x depends on
# What kube-prometheus-stack's values.yaml sets for its grafana subchart.
GRAFANA_DEFAULTS = {
    "adminPassword": "prom-operator", "service": {"portName": "http-web"},
    "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1",
                               "searchNamespace": "ALL"},
                "datasources": {"enabled": True, "label": "grafana_datasource", "labelValue": "1"}},
}
# A few of the dashboards the stack ships as ConfigMaps (name suffix -> uid, title, tags).
DASHBOARDS = {
    "nodes": ("7d57716318ee0dddbac5a7f451fb7753", "Node Exporter / Nodes", ["node-exporter-mixin"]),
    "k8s-resources-cluster": ("efa86fd1d0c121a26444b636a3f509a8", "Kubernetes / Compute Resources / Cluster",
                              ["kubernetes-mixin"]),
    "alertmanager-overview": ("alertmanager-overview", "Alertmanager / Overview", ["alertmanager-mixin"]),
}


def _grafana(release: Release) -> list[dict]:
    """The grafana subchart (``labsim.charts.grafana``) with the stack's defaults, and the stack's
    own Grafana objects: the datasource ConfigMap (Prometheus, Alertmanager) and dashboards."""
    values, full, ns = release.values, fullname(release), release.namespace
    sub = Release(release.name, ns, "grafana", GRAFANA_VERSION, _merge(GRAFANA_DEFAULTS, value(values, "grafana") or {}))
    found = labels(release, f"{CHART}-grafana")
    sources = {"apiVersion": 1, "datasources": [
        {"name": "Prometheus", "type": "prometheus", "uid": "prometheus", "access": "proxy", "isDefault": True,
         "url": f"http://{full}-prometheus.{ns}:9090/", "jsonData": {"httpMethod": "POST", "timeInterval": "30s"}},
        {"name": "Alertmanager", "type": "alertmanager", "uid": "alertmanager", "access": "proxy",
         "url": f"http://{full}-alertmanager.{ns}:9093/", "jsonData": {"handleGrafanaManagedAlerts": False,
                                                                       "implementation": "prometheus"}}]}
    objects = grafana.grafana(sub)
    objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": _meta(release, f"{full}-grafana-datasource", {**found, "grafana_datasource": "1"}),
                    "data": {"datasource.yaml": yaml.safe_dump(sources, sort_keys=False)}})
    for suffix, (uid, title, tags) in DASHBOARDS.items():
        board = {"uid": uid, "title": title, "tags": tags, "timezone": "utc", "schemaVersion": 39, "panels": []}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": _meta(release, f"{full}-{suffix}", {**found, "grafana_dashboard": "1"}),
                        "data": {f"{suffix}.json": json.dumps(board)}})
    return objects


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, item in extra.items():
        out[key] = _merge(out[key], item) if isinstance(item, dict) and isinstance(out.get(key), dict) else item
    return out
