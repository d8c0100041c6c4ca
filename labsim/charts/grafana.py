"""grafana/grafana's ``grafana`` chart (9.x), alone or as kube-prometheus-stack's ``grafana``
subchart: the Deployment (Grafana plus the k8s-sidecar containers collecting dashboards and
datasources from labelled ConfigMaps), its admin Secret, ``grafana.ini`` and datasources ConfigMap,
the dashboard provider ConfigMap, Service, ServiceAccount, RBAC and the Ingress when enabled. Names
and labels are the real chart's: release ``kube-prometheus-stack`` gives ``kube-prometheus-stack-grafana``.
What the pods run is ``labsim.apps.grafana`` and ``labsim.apps.k8s_sidecar``."""

from __future__ import annotations

import base64
import secrets

import yaml

from labsim.charts.release import Release, value

CHART = "grafana"
APP_VERSION = "12.0.2"
SIDECAR_IMAGE = "quay.io/kiwigrid/k8s-sidecar:1.30.3"


def fullname(release: Release) -> str:
    return release.name if CHART in release.name else f"{release.name}-{CHART}"[:63].rstrip("-")


def selector(release: Release) -> dict:
    return {"app.kubernetes.io/name": CHART, "app.kubernetes.io/instance": release.name}


def labels(release: Release) -> dict:
    return {"helm.sh/chart": f"{CHART}-{release.version.replace('+', '_')}", **selector(release),
            "app.kubernetes.io/version": APP_VERSION, "app.kubernetes.io/managed-by": "Helm"}


def _meta(release: Release, name: str, namespaced: bool = True) -> dict:
    return {**release.meta(name, namespaced), "labels": labels(release)}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def grafana(release: Release) -> list[dict]:
    values, name = release.values, fullname(release)
    secret = value(values, "admin.existingSecret") or name
    keys = (value(values, "admin.userKey") or "admin-user", value(values, "admin.passwordKey") or "admin-password")
    objects = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(release, name)}]
    if not value(values, "admin.existingSecret"):
        password = value(values, "adminPassword") or secrets.token_urlsafe(30)
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": _meta(release, name), "type": "Opaque",
                        "data": {keys[0]: _b64(value(values, "adminUser", "admin")), keys[1]: _b64(password),
                                 "ldap-toml": ""}})
    config = {"grafana.ini": _ini(value(values, "grafana.ini") or {})}
    if value(values, "datasources"):
        config |= {key: yaml.safe_dump(doc, sort_keys=False) for key, doc in value(values, "datasources").items()}
    objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(release, name), "data": config})
    dashboards = bool(value(values, "sidecar.dashboards.enabled", False))
    if dashboards:
        provider = {"apiVersion": 1, "providers": [{
            "name": "sidecarProvider", "orgId": 1, "folder": "",
            "type": "file", "disableDeletion": False, "allowUiUpdates": False, "updateIntervalSeconds": 30,
            "options": {"foldersFromFilesStructure": False, "path": _dashboards_folder(values)}}]}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(release, f"{name}-config-dashboards"),
                        "data": {"provider.yaml": yaml.safe_dump(provider, sort_keys=False)}})
    objects += _rbac(release, name, dashboards or bool(value(values, "sidecar.datasources.enabled", False)))
    port_name = value(values, "service.portName", "service")
    objects.append({"apiVersion": "v1", "kind": "Service", "metadata": _meta(release, name), "spec": {
        "type": value(values, "service.type", "ClusterIP"), "selector": selector(release),
        "ports": [{"name": port_name, "port": int(value(values, "service.port", 80)), "protocol": "TCP",
                   "targetPort": int(value(values, "service.targetPort", 3000))}]}})
    objects.append(_deployment(release, name, secret, keys, config))
    if value(values, "ingress.enabled", False):
        objects.append(_ingress(release, name, int(value(values, "service.port", 80))))
    return objects


def _ini(sections: dict) -> str:
    """grafana.ini from the chart's ``grafana.ini`` value (sections of keys), as its configmap renders it."""
    lines = []
    for section, keys in sections.items():
        if isinstance(keys, dict):
            lines += [f"[{section}]", *(f"{k} = {v}" for k, v in keys.items())]
        else:
            lines.insert(0, f"{section} = {keys}")
    return "\n".join(lines) + "\n"


def _dashboards_folder(values: dict) -> str:
    return value(values, "sidecar.dashboards.folder", "/tmp/dashboards")


def _rbac(release: Release, name: str, sidecars: bool) -> list[dict]:
    if not value(release.values, "rbac.create", True):
        return []
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": release.namespace}]
    found = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(release, name), "rules": []},
             {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(release, name),
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}, "subjects": subject}]
    if sidecars:  # the sidecars list ConfigMaps and Secrets in every namespace
        found += [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": _meta(release, f"{name}-clusterrole", namespaced=False),
                   "rules": [{"apiGroups": [""], "resources": ["configmaps", "secrets"],
                              "verbs": ["get", "watch", "list"]}]},
                  {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": _meta(release, f"{name}-clusterrolebinding", namespaced=False),
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": f"{name}-clusterrole"}, "subjects": subject}]
    return found


def _sidecar(release: Release, kind: str, folder: str, secret: str, keys: tuple[str, str]) -> dict:
    values = release.values
    search = value(values, f"sidecar.{kind}.searchNamespace")
    env = [{"name": "METHOD", "value": value(values, f"sidecar.{kind}.watchMethod", "WATCH")},
           {"name": "LABEL", "value": value(values, f"sidecar.{kind}.label", f"grafana_{kind[:-1]}")},
           {"name": "FOLDER", "value": folder},
           {"name": "RESOURCE", "value": value(values, f"sidecar.{kind}.resource", "both")}]
    if value(values, f"sidecar.{kind}.labelValue"):
        env.insert(2, {"name": "LABEL_VALUE", "value": str(value(values, f"sidecar.{kind}.labelValue"))})
    if search:
        env.append({"name": "NAMESPACE", "value": ",".join(search) if isinstance(search, list) else str(search)})
    env += [{"name": "REQ_USERNAME", "valueFrom": {"secretKeyRef": {"name": secret, "key": keys[0]}}},
            {"name": "REQ_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": keys[1]}}},
            {"name": "REQ_URL", "value": f"http://localhost:3000/api/admin/provisioning/{kind}/reload"},
            {"name": "REQ_METHOD", "value": "POST"}]
    return {"name": f"{CHART}-sc-{'dashboard' if kind == 'dashboards' else kind}", "image": SIDECAR_IMAGE,
            "imagePullPolicy": "IfNotPresent", "env": env,
            "volumeMounts": [{"name": f"sc-{kind[:-1] if kind == 'dashboards' else kind}-volume", "mountPath": folder}]}


def _deployment(release: Release, name: str, secret: str, keys: tuple[str, str], config: dict) -> dict:
    values = release.values
    tag = value(values, "image.tag") or APP_VERSION
    image = f"{value(values, 'image.registry', 'docker.io')}/{value(values, 'image.repository', 'grafana/grafana')}:{tag}"
    mounts = [{"name": "config", "mountPath": "/etc/grafana/grafana.ini", "subPath": "grafana.ini"},
              {"name": "storage", "mountPath": "/var/lib/grafana"}]
    mounts += [{"name": "config", "mountPath": f"/etc/grafana/provisioning/datasources/{key}", "subPath": key}
               for key in config if key != "grafana.ini"]
    volumes = [{"name": "config", "configMap": {"name": name}}, {"name": "storage", "emptyDir": {}}]
    containers = []
    if value(values, "sidecar.dashboards.enabled", False):
        folder = _dashboards_folder(values)
        containers.append(_sidecar(release, "dashboards", folder, secret, keys))
        mounts += [{"name": "sc-dashboard-volume", "mountPath": folder},
                   {"name": "sc-dashboard-provider", "mountPath": "/etc/grafana/provisioning/dashboards/sc-dashboardproviders.yaml",
                    "subPath": "provider.yaml"}]
        volumes += [{"name": "sc-dashboard-volume", "emptyDir": {}},
                    {"name": "sc-dashboard-provider", "configMap": {"name": f"{name}-config-dashboards"}}]
    if value(values, "sidecar.datasources.enabled", False):
        containers.append(_sidecar(release, "datasources", "/etc/grafana/provisioning/datasources", secret, keys))
        mounts.append({"name": "sc-datasources-volume", "mountPath": "/etc/grafana/provisioning/datasources"})
        volumes.append({"name": "sc-datasources-volume", "emptyDir": {}})
    env = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
           {"name": "GF_SECURITY_ADMIN_USER", "valueFrom": {"secretKeyRef": {"name": secret, "key": keys[0]}}},
           {"name": "GF_SECURITY_ADMIN_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": keys[1]}}},
           {"name": "GF_PATHS_DATA", "value": "/var/lib/grafana/"}, {"name": "GF_PATHS_LOGS", "value": "/var/log/grafana"},
           {"name": "GF_PATHS_PLUGINS", "value": "/var/lib/grafana/plugins"},
           {"name": "GF_PATHS_PROVISIONING", "value": "/etc/grafana/provisioning"}]
    probe = {"httpGet": {"path": "/api/health", "port": 3000}}
    containers.append({"name": CHART, "image": image, "imagePullPolicy": "IfNotPresent", "env": env,
                       "ports": [{"name": "grafana", "containerPort": 3000, "protocol": "TCP"}],
                       "livenessProbe": {**probe, "initialDelaySeconds": 60, "timeoutSeconds": 30,
                                         "failureThreshold": 10},
                       "readinessProbe": probe,
                       "volumeMounts": mounts})
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(release, name), "spec": {
        "replicas": int(value(values, "replicas", 1)), "revisionHistoryLimit": 10,
        "selector": {"matchLabels": selector(release)}, "strategy": {"type": "RollingUpdate"},
        "template": {"metadata": {"labels": selector(release)},
                     "spec": {"serviceAccountName": name, "automountServiceAccountToken": True,
                              "containers": containers, "volumes": volumes}}}}


def _ingress(release: Release, name: str, port: int) -> dict:
    values = release.values
    hosts = value(values, "ingress.hosts") or []
    path = value(values, "ingress.path", "/")
    spec: dict = {"rules": [{"host": host, "http": {"paths": [{
        "path": path, "pathType": value(values, "ingress.pathType", "Prefix"),
        "backend": {"service": {"name": name, "port": {"number": port}}}}]}} for host in hosts]}
    if value(values, "ingress.ingressClassName"):
        spec["ingressClassName"] = value(values, "ingress.ingressClassName")
    if value(values, "ingress.tls"):
        spec["tls"] = value(values, "ingress.tls")
    meta = _meta(release, name)
    meta["annotations"] = {**meta["annotations"], **(value(values, "ingress.annotations") or {})}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}
