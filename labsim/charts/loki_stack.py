"""grafana/helm-charts' ``loki-stack`` (2.10.x) with its ``loki`` subchart (2.16, Loki 2.6.1, single
binary): the StatefulSet, its Services (``<release>``, ``-headless``, ``-memberlist``), the config
Secret (``loki.yaml``: filesystem storage under /data/loki, retention from the values), the
ServiceAccount and RBAC, with the old-style labels the loki chart uses (app, release, chart,
heritage); and the stack's Grafana datasource ConfigMap (label ``grafana_datasource: "1"``) that
Grafana's sidecar collects. ``promtail.enabled`` (default true) adds the promtail subchart; the lab
installs promtail as its own release instead. What the pod runs is ``labsim.apps.loki``."""

from __future__ import annotations

import base64

import yaml

from labsim.charts import promtail
from labsim.charts.release import Release, value

LOKI_CHART, LOKI_VERSION = "loki-2.16.0", "v2.6.1"


def fullname(release: Release) -> str:
    return release.name if "loki" in release.name else f"{release.name}-loki"


def _labels(release: Release) -> dict:
    return {"app": "loki", "chart": LOKI_CHART, "release": release.name, "heritage": "Helm"}


def _meta(release: Release, name: str, namespaced: bool = True) -> dict:
    return {**release.meta(name, namespaced), "labels": _labels(release)}


def config(values: dict) -> dict:
    """loki.yaml: the chart's single-binary filesystem setup, retention from ``loki.config``."""
    retention = value(values, "loki.config.table_manager.retention_period") or \
        value(values, "loki.config.limits_config.retention_period") or "0s"
    return {"auth_enabled": False, "server": {"http_listen_port": 3100},
            "ingester": {"chunk_idle_period": "3m", "max_chunk_age": "1h", "chunk_target_size": 1048576},
            "limits_config": {"retention_period": retention, "enforce_metric_name": False,
                              "reject_old_samples": True, "reject_old_samples_max_age": "168h"},
            "compactor": {"working_directory": "/data/loki/boltdb-shipper-compactor", "shared_store": "filesystem",
                          "retention_enabled": value(values, "loki.config.compactor.retention_enabled", False)},
            "schema_config": {"configs": [{"from": "2020-10-24", "store": "boltdb-shipper", "object_store": "filesystem",
                                           "schema": "v11", "index": {"prefix": "index_", "period": "24h"}}]},
            "storage_config": {"boltdb_shipper": {"active_index_directory": "/data/loki/boltdb-shipper-active",
                                                  "cache_location": "/data/loki/boltdb-shipper-cache",
                                                  "shared_store": "filesystem"},
                               "filesystem": {"directory": "/data/loki/chunks"}},
            "table_manager": {"retention_deletes_enabled": retention != "0s", "retention_period": retention}}


def loki_stack(release: Release) -> list[dict]:
    values, name, ns = release.values, fullname(release), release.namespace
    selector = {"app": "loki", "release": release.name}
    port = [{"name": "http-metrics", "port": 3100, "protocol": "TCP", "targetPort": "http-metrics"}]
    secret = base64.b64encode(yaml.safe_dump(config(values), sort_keys=False).encode()).decode()
    persistence = value(values, "loki.persistence") or {}
    claim = {"metadata": {"name": "storage"},
             "spec": {"accessModes": persistence.get("accessModes", ["ReadWriteOnce"]),
                      "resources": {"requests": {"storage": persistence.get("size", "10Gi")}}}}
    if persistence.get("storageClassName"):
        claim["spec"]["storageClassName"] = persistence["storageClassName"]
    probe = {"httpGet": {"path": "/ready", "port": "http-metrics"}, "initialDelaySeconds": 45}
    pod = {"serviceAccountName": name, "securityContext": {"fsGroup": 10001, "runAsUser": 10001, "runAsNonRoot": True},
           "containers": [{"name": "loki", "image": f"grafana/loki:{value(values, 'loki.image.tag', '2.6.1')}",
                           "args": ["-config.file=/etc/loki/loki.yaml"],
                           "ports": [{"name": "http-metrics", "containerPort": 3100, "protocol": "TCP"},
                                     {"name": "grpc", "containerPort": 9095, "protocol": "TCP"},
                                     {"name": "memberlist-port", "containerPort": 7946, "protocol": "TCP"}],
                           "livenessProbe": probe, "readinessProbe": probe,
                           "volumeMounts": [{"name": "config", "mountPath": "/etc/loki"},
                                            {"name": "storage", "mountPath": "/data"}]}],
           "volumes": [{"name": "config", "secret": {"secretName": name}}]}
    if not persistence.get("enabled"):
        pod["volumes"].append({"name": "storage", "emptyDir": {}})
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(release, name)},
        {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(release, name), "data": {"loki.yaml": secret}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(release, name), "rules": []},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(release, name),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(release, name),
         "spec": {"type": "ClusterIP", "selector": selector, "ports": port}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(release, f"{name}-headless"),
         "spec": {"clusterIP": "None", "selector": selector, "ports": port}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(release, f"{name}-memberlist"),
         "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": selector,
                  "ports": [{"name": "http", "port": 7946, "protocol": "TCP", "targetPort": "memberlist-port"}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(release, name),
         "spec": {"replicas": 1, "serviceName": f"{name}-headless", "podManagementPolicy": "OrderedReady",
                  "selector": {"matchLabels": selector}, "updateStrategy": {"type": "RollingUpdate"},
                  "template": {"metadata": {"labels": {**selector, "name": name}}, "spec": pod},
                  "volumeClaimTemplates": [claim] if persistence.get("enabled") else []}},
    ]
    if value(values, "grafana.sidecar.datasources.enabled", True):
        objects.append(_datasource(release, name, ns))
    if value(values, "promtail.enabled", True):
        sub = Release(release.name, ns, "promtail", promtail.VERSION,
                      {"config": {"clients": [{"url": f"http://{name}:3100/loki/api/v1/push"}]},
                       **(value(values, "promtail") or {})})
        objects += promtail.promtail(sub)
    return objects


def _datasource(release: Release, name: str, ns: str) -> dict:
    """The stack's templates/datasources.yaml: Loki for Grafana's datasource sidecar."""
    url = value(release.values, "loki.url") or f"http://{name}:3100"
    doc = {"apiVersion": 1, "datasources": [{"name": "Loki", "type": "loki", "access": "proxy", "url": url,
                                             "version": 1, "isDefault": bool(value(release.values, "loki.isDefault", True))}]}
    meta = {**release.meta(name), "labels": {"app": "loki-stack", "chart": f"loki-stack-{release.version}",
                                             "release": release.name, "heritage": "Helm", "grafana_datasource": "1"}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {"loki-stack-datasource.yaml": yaml.safe_dump(doc, sort_keys=False)}}
