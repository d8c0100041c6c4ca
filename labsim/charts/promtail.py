"""grafana/helm-charts' ``promtail`` chart (6.16.x, promtail 3.0): the DaemonSet (on every node,
control plane included), its config Secret (``promtail.yaml``: the clients from ``config.clients``,
the kubernetes-pods scrape config), ServiceAccount, ClusterRole and binding, with the real chart's
names and labels. The ClusterRole also grants ``pods/log``: the twin's promtail model
(``labsim.apps.promtail``) reads the pods' logs through the API, where the real one reads
/var/log/pods from the node."""

from __future__ import annotations

import base64

import yaml

from labsim.charts.release import Release, helm_fullname, helm_labels, helm_selector, value

CHART, VERSION, APP_VERSION = "promtail", "6.16.6", "3.0.0"


def fullname(release: Release) -> str:
    return helm_fullname(release, CHART)


def selector(release: Release) -> dict:
    return helm_selector(release, CHART)


def _meta(release: Release, name: str, namespaced: bool = True) -> dict:
    return {**release.meta(name, namespaced), "labels": helm_labels(release, CHART, CHART, APP_VERSION)}


def config(values: dict) -> dict:
    clients = value(values, "config.clients") or [{"url": "http://loki-gateway/loki/api/v1/push"}]
    return {"server": {"log_level": "info", "http_listen_port": 3101}, "clients": clients,
            "positions": {"filename": "/run/promtail/positions.yaml"},
            "scrape_configs": [{"job_name": "kubernetes-pods", "kubernetes_sd_configs": [{"role": "pod"}],
                                "pipeline_stages": [{"cri": {}}]}]}


def promtail(release: Release) -> list[dict]:
    values, name = release.values, fullname(release)
    image = f"{value(values, 'image.registry', 'docker.io')}/{value(values, 'image.repository', 'grafana/promtail')}:" \
            f"{value(values, 'image.tag') or APP_VERSION}"
    secret = base64.b64encode(yaml.safe_dump(config(values), sort_keys=False).encode()).decode()
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": release.namespace}]
    container = {"name": CHART, "image": image, "imagePullPolicy": "IfNotPresent",
                 "args": ["-config.file=/etc/promtail/promtail.yaml"],
                 "env": [{"name": "HOSTNAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                 "ports": [{"name": "http-metrics", "containerPort": 3101, "protocol": "TCP"}],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": "http-metrics"}, "initialDelaySeconds": 10},
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/promtail"},
                                  {"name": "run", "mountPath": "/run/promtail"},
                                  {"name": "containers", "mountPath": "/var/lib/docker/containers", "readOnly": True},
                                  {"name": "pods", "mountPath": "/var/log/pods", "readOnly": True}]}
    volumes = [{"name": "config", "secret": {"secretName": name}},
               {"name": "run", "hostPath": {"path": "/run/promtail"}},
               {"name": "containers", "hostPath": {"path": "/var/lib/docker/containers"}},
               {"name": "pods", "hostPath": {"path": "/var/log/pods"}}]
    tolerations = value(values, "tolerations") or [
        {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(release, name)},
        {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(release, name), "data": {"promtail.yaml": secret}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(release, name, False),
         "rules": [{"apiGroups": [""], "resources": ["nodes", "nodes/proxy", "services", "endpoints", "pods"],
                    "verbs": ["get", "watch", "list"]},
                   {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": _meta(release, name, False),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}, "subjects": subject},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(release, name),
         "spec": {"selector": {"matchLabels": selector(release)}, "updateStrategy": {"type": "RollingUpdate"},
                  "template": {"metadata": {"labels": selector(release)},
                               "spec": {"serviceAccountName": name, "enableServiceLinks": True,
                                        "securityContext": {"runAsUser": 0, "runAsGroup": 0},
                                        "containers": [container], "tolerations": tolerations, "volumes": volumes}}}},
    ]
