"""Bitnami's ``postgresql`` chart (architecture standalone): the primary StatefulSet, its Services
(ClusterIP and headless), the credentials Secret unless ``auth.existingSecret`` names one, and the
postgres-exporter sidecar and metrics Service when ``metrics.enabled`` (and its ServiceMonitor with
``metrics.serviceMonitor.enabled``, which needs prometheus-operator's CRDs). Names and labels are the real
chart's: release ``postgresql`` gives StatefulSet ``postgresql``, pod ``postgresql-0``, claim
``data-postgresql-0``. The pod's image is ``bitnami/postgresql``: the twin runs the real PostgreSQL
with its data directory (/bitnami/postgresql/data) on the claim."""

from __future__ import annotations

import base64
import secrets

from labsim.charts.release import Release, value


def _fullname(release: Release) -> str:
    """The chart's fullname helper: the release name when it contains the chart name."""
    return release.name if "postgresql" in release.name else f"{release.name}-postgresql"


def _labels(release: Release, component: str | None = None) -> dict:
    labels = {"app.kubernetes.io/instance": release.name, "app.kubernetes.io/managed-by": "Helm",
              "app.kubernetes.io/name": "postgresql", "app.kubernetes.io/version": "17.5.0",
              "helm.sh/chart": f"postgresql-{release.version}"}
    return {**labels, "app.kubernetes.io/component": component} if component else labels


def _meta(release: Release, name: str, component: str | None = None) -> dict:
    return {**release.meta(name), "labels": _labels(release, component)}


def postgresql(release: Release) -> list[dict]:
    values, name = release.values, _fullname(release)
    selector = {"app.kubernetes.io/instance": release.name, "app.kubernetes.io/name": "postgresql",
                "app.kubernetes.io/component": "primary"}
    secret = value(values, "auth.existingSecret") or name
    keys = {"admin": value(values, "auth.secretKeys.adminPasswordKey", "postgres-password"),
            "user": value(values, "auth.secretKeys.userPasswordKey", "password")}
    objects = []
    if not value(values, "auth.existingSecret"):
        passwords = {k: value(values, f"auth.{v}") or secrets.token_urlsafe(8)
                     for k, v in (("admin", "postgresPassword"), ("user", "password"))}
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": _meta(release, name), "type": "Opaque",
                        "data": {keys[k]: base64.b64encode(p.encode()).decode() for k, p in passwords.items()}})
    user = value(values, "auth.username", "")
    env = [{"name": "POSTGRESQL_PORT_NUMBER", "value": "5432"},
           {"name": "POSTGRESQL_VOLUME_DIR", "value": "/bitnami/postgresql"},
           {"name": "PGDATA", "value": "/bitnami/postgresql/data"},
           {"name": "POSTGRES_POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": keys["admin"]}}}]
    if user:
        env += [{"name": "POSTGRESQL_USERNAME", "value": user},
                {"name": "POSTGRESQL_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": keys["user"]}}},
                {"name": "POSTGRESQL_DATABASE", "value": value(values, "auth.database", user)}]
    image = f"{value(values, 'image.registry', 'docker.io')}/{value(values, 'image.repository', 'bitnami/postgresql')}:" \
            f"{value(values, 'image.tag', '17.5.0-debian-12-r0')}"
    containers = [{
        "name": "postgresql", "image": image, "env": env,
        "ports": [{"name": "tcp-postgresql", "containerPort": 5432, "protocol": "TCP"}],
        "resources": value(values, "primary.resources", {}),
        "volumeMounts": [{"name": "data", "mountPath": "/bitnami/postgresql"}],
    }]
    metrics = bool(value(values, "metrics.enabled", False))
    if metrics:
        # As the chart's metrics sidecar: the pod's own server on localhost, as the app user if there is one.
        own_user = user and user != "postgres"
        source = [{"name": "DATA_SOURCE_URI",
                   "value": f"127.0.0.1:5432/{value(values, 'auth.database', user or 'postgres')}?sslmode=disable"},
                  {"name": "DATA_SOURCE_PASS", "valueFrom": {"secretKeyRef": {
                      "name": secret, "key": keys["user"] if own_user else keys["admin"]}}},
                  {"name": "DATA_SOURCE_USER", "value": user or "postgres"}]
        containers.append({"name": "metrics", "image": "docker.io/bitnami/postgres-exporter:0.17.1-debian-12-r0",
                           "env": source,
                           "ports": [{"name": "http-metrics", "containerPort": 9187, "protocol": "TCP"}]})
    persistence = value(values, "primary.persistence", {}) or {}
    claim = {"metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": persistence.get("size", "8Gi")}}}}
    if persistence.get("storageClass"):
        claim["spec"]["storageClassName"] = persistence["storageClass"]
    port = [{"name": "tcp-postgresql", "port": 5432, "targetPort": "tcp-postgresql", "protocol": "TCP"}]
    objects += [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(release, name)},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(release, f"{name}-hl", "primary"),
         "spec": {"type": "ClusterIP", "clusterIP": "None", "publishNotReadyAddresses": True,
                  "selector": selector, "ports": port}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(release, name, "primary"),
         "spec": {"type": "ClusterIP", "selector": selector, "ports": port}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(release, name, "primary"),
         "spec": {"replicas": 1, "serviceName": f"{name}-hl", "selector": {"matchLabels": selector},
                  "updateStrategy": {"type": "RollingUpdate"},
                  "template": {"metadata": {"name": name, "labels": {**_labels(release, "primary"), **selector}},
                               "spec": {"serviceAccountName": name, "containers": containers,
                                        "securityContext": {"fsGroup": 1001}}},
                  "volumeClaimTemplates": [claim] if persistence.get("enabled", True) else []}},
    ]
    if metrics:
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": _meta(release, f"{name}-metrics", "metrics"),
                        "spec": {"type": "ClusterIP", "selector": selector,
                                 "ports": [{"name": "http-metrics", "port": 9187, "targetPort": "http-metrics"}]}})
        if value(values, "metrics.serviceMonitor.enabled", False):
            objects.append(_service_monitor(release, name))
    return objects


def _service_monitor(release: Release, name: str) -> dict:
    """As the chart's: the metrics Service's ``http-metrics`` port, in the release's namespace."""
    monitor = value(release.values, "metrics.serviceMonitor", {}) or {}
    meta = _meta(release, name, "metrics")
    meta["namespace"] = monitor.get("namespace") or release.namespace
    meta["labels"] = {**meta["labels"], **(monitor.get("labels") or {})}
    endpoint = {"port": "http-metrics", **{k: monitor[k] for k in ("interval", "scrapeTimeout") if monitor.get(k)}}
    spec = {"selector": {"matchLabels": {"app.kubernetes.io/instance": release.name,
                                         "app.kubernetes.io/name": "postgresql", "app.kubernetes.io/component": "metrics"}},
            "endpoints": [endpoint], "namespaceSelector": {"matchNames": [release.namespace]}}
    if monitor.get("jobLabel"):
        spec["jobLabel"] = monitor["jobLabel"]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": meta, "spec": spec}

