"""8gears' ``n8n`` chart (``oci://8gears.container-registry.com/library/n8n``, 1.x): the main
Deployment, its Service (``main.service.port``, 80, to the container's ``http`` port 5678), the
ConfigMap ``<fullname>-app-config`` and Secret ``<fullname>-app-secret`` whose keys are the
environment variables flattened from ``main.config`` / ``main.secret`` as the chart's
``toEnvVars`` does (``db: {postgresdb: {host: x}}`` -> ``DB_POSTGRESDB_HOST: "x"``),
``main.extraEnv`` (name -> the env entry's value/valueFrom), the PVC with
``main.persistence.type: dynamic``, the ServiceAccount and, with ``ingress.enabled``, the
Ingress. Release ``n8n`` gives Deployment, Service and ServiceAccount ``n8n``, selector
``app.kubernetes.io/name: n8n``, ``app.kubernetes.io/instance: <release>``,
``app.kubernetes.io/type: master``. The pod's image is ``n8nio/n8n``: the twin runs its app model
(``labsim.apps.n8n``). Not modelled: worker and webhook processes (queue mode, Valkey)."""

from __future__ import annotations

import base64
import hashlib
import json

from labsim.charts.release import Release, helm_fullname, helm_ingress, helm_labels, helm_selector, value

CHART = "n8n"
APP_VERSION = "1.116.2"  # chart 1.1.0's


def fullname(release: Release) -> str:
    return helm_fullname(release, CHART)


def env_vars(tree: dict, prefix: str = "") -> dict[str, str]:
    """The chart's ``toEnvVars``: nested keys upper-cased and joined with ``_``, values as strings
    (Go's spelling of booleans)."""
    found: dict[str, str] = {}
    for key, item in sorted(tree.items()):
        name = f"{prefix}{str(key).upper()}"
        if isinstance(item, dict):
            found.update(env_vars(item, f"{name}_"))
        else:
            found[name] = str(item).lower() if isinstance(item, bool) else str(item)
    return found


def _selector(release: Release) -> dict:
    return helm_selector(release, value(release.values, "nameOverride") or CHART)


def _labels(release: Release) -> dict:
    return helm_labels(release, CHART, value(release.values, "nameOverride") or CHART, APP_VERSION)


def _meta(release: Release, name: str) -> dict:
    return {**release.meta(name), "labels": _labels(release)}


def _container(release: Release, name: str) -> dict:
    values = release.values
    config, secret = value(values, "main.config") or {}, value(values, "main.secret") or {}
    env_from = ([{"configMapRef": {"name": f"{name}-app-config"}}] if config else []) + \
               ([{"secretRef": {"name": f"{name}-app-secret"}}] if secret else [])
    port = int(value(config, "n8n.port", 5678) or 5678)
    probe = {"httpGet": {"path": "/healthz", "port": "http"}}
    container = {
        "name": CHART, "image": f"{value(values, 'image.repository', 'n8nio/n8n')}:"
                                f"{value(values, 'image.tag') or APP_VERSION}",
        "imagePullPolicy": value(values, "image.pullPolicy", "IfNotPresent"),
        "securityContext": value(values, "main.securityContext", {}) or {},
        "envFrom": env_from,
        "env": [{"name": key, **entry} for key, entry in (value(values, "main.extraEnv") or {}).items()],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "livenessProbe": value(values, "main.livenessProbe", probe),
        "readinessProbe": value(values, "main.readinessProbe", probe),
        "resources": value(values, "main.resources", {}) or {},
        "volumeMounts": [{"name": "data", "mountPath": "/home/node/.n8n"},
                         *(value(values, "main.extraVolumeMounts") or [])],
    }
    if value(values, "main.command"):
        container["command"] = list(value(values, "main.command"))
    return {k: v for k, v in container.items() if v is not None}


def _data_volume(release: Release, name: str) -> dict:
    persistence = value(release.values, "main.persistence", {}) or {}
    if not persistence.get("enabled") or persistence.get("type", "emptyDir") == "emptyDir":
        return {"emptyDir": {}}
    return {"persistentVolumeClaim": {"claimName": persistence.get("existingClaim") or name}}


def n8n(release: Release) -> list[dict]:
    values, name = release.values, fullname(release)
    config, secret = value(values, "main.config") or {}, value(values, "main.secret") or {}
    selector = {**_selector(release), "app.kubernetes.io/type": "master"}
    account = value(values, "main.serviceAccount.name") or (
        name if value(values, "main.serviceAccount.create", True) else "default")
    objects: list[dict] = []
    if config:
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(release, f"{name}-app-config"),
                        "data": env_vars(config)})
    if secret:
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": _meta(release, f"{name}-app-secret"),
                        "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode()
                                                   for k, v in env_vars(secret).items()}})
    if value(values, "main.serviceAccount.create", True):
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(release, account)})
    persistence = value(values, "main.persistence", {}) or {}
    if persistence.get("enabled") and not persistence.get("existingClaim") and persistence.get("type") == "dynamic":
        spec = {"accessModes": list(persistence.get("accessModes") or ["ReadWriteOnce"]),
                "resources": {"requests": {"storage": str(persistence.get("size", "1Gi"))}}}
        if persistence.get("storageClass"):
            spec["storageClassName"] = "" if persistence["storageClass"] == "-" else persistence["storageClass"]
        objects.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(release, name),
                        "spec": spec})
    if value(values, "main.service.enabled", True):
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": _meta(release, name),
                        "spec": {"type": value(values, "main.service.type", "ClusterIP") or "ClusterIP",
                                 "ports": [{"port": int(value(values, "main.service.port", 80) or 80),
                                            "targetPort": "http", "protocol": "TCP", "name": "http"}],
                                 "selector": selector}})
    strategy = value(values, "main.deploymentStrategy", {}) or {}
    rollout = {"type": strategy.get("type", "Recreate")}
    if rollout["type"] == "RollingUpdate":
        rollout["rollingUpdate"] = {"maxSurge": strategy.get("maxSurge") or "25%",
                                    "maxUnavailable": strategy.get("maxUnavailable") or "25%"}
    checksum = hashlib.sha256(json.dumps(value(values, "main", {}), sort_keys=True, default=str).encode()).hexdigest()
    objects.append({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(release, name),
        "spec": {"replicas": int(value(values, "main.replicaCount", 1)),
                 "strategy": rollout,
                 "selector": {"matchLabels": selector},
                 "template": {"metadata": {"annotations": {"checksum/config": checksum,
                                                           **(value(values, "main.podAnnotations") or {})},
                                           "labels": {**selector, **(value(values, "main.podLabels") or {})}},
                              "spec": {"serviceAccountName": account,
                                       "securityContext": value(values, "main.podSecurityContext", {
                                           "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                           "fsGroup": 1000}),
                                       "terminationGracePeriodSeconds": int(
                                           value(values, "main.terminationGracePeriodSeconds", 30)),
                                       "containers": [_container(release, name)],
                                       "volumes": [{"name": "data", **_data_volume(release, name)},
                                                   *(value(values, "main.extraVolumes") or [])]}}}})
    if value(values, "ingress.enabled"):
        objects.append(helm_ingress(values, _meta(release, name), name, int(value(values, "main.service.port", 80) or 80)))
    return objects
