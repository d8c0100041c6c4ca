"""What a k3s server deploys by itself: its CRDs (HelmChart, HelmChartConfig, Addon,
ETCDSnapshotFile) and the packaged components, written as manifests into
`/var/lib/rancher/k3s/server/manifests/` and applied as k3s' deploy controller applies them
(manifests.py). `--disable NAME` removes a component's files and objects; a `.skip` file beside
a manifest keeps k3s from rewriting it, as in k3s.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable

import yaml

from labsim.k3s.config import DATA_DIR
from labsim.k3s.logs import Logger
from labsim.k3s.manifests import MANIFESTS_DIR, addon, apply_text, delete_if_present
from labsim.net import cidrs

SYSTEM = "kube-system"
TRAEFIK_CHART = "traefik-37.1.1+up37.1.0"
TRAEFIK_CRD_CHART = "traefik-crd-37.1.1+up37.1.0"

CRITICAL = [{"key": "CriticalAddonsOnly", "operator": "Exists"},
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"}]


def _meta(name: str, namespace: str | None = SYSTEM, labels: dict | None = None, **extra) -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {}), **extra}
    if labels:
        meta["labels"] = labels
    return meta


def _sa(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name)}


def _cluster_role(name: str, rules: list[dict], labels: dict | None = None) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": _meta(name, None, labels), "rules": rules}


def _binding(kind: str, name: str, role_kind: str, role: str, sa: str, namespace: str | None = None) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": _meta(name, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": SYSTEM}]}


def _rule(groups: str, resources: str, verbs: str) -> dict:
    return {"apiGroups": groups.split(",") if groups else [""], "resources": resources.split(),
            "verbs": verbs.split()}


def _deployment(name: str, labels: dict, container: dict, *, sa: str, replicas: int | None = 1,
                volumes: list[dict] | None = None) -> dict:
    spec = {
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {"priorityClassName": "system-node-critical", "serviceAccountName": sa,
                     "tolerations": CRITICAL, "nodeSelector": {"kubernetes.io/os": "linux"},
                     "containers": [container], **({"volumes": volumes} if volumes else {})},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, labels=labels), "spec": spec}


# --- CoreDNS ------------------------------------------------------------------------------------

COREFILE = """\
.:53 {
    errors
    health
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
    }
    hosts /etc/coredns/NodeHosts {
      ttl 60
      reload 15s
      fallthrough
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
    import /etc/coredns/custom/*.override
}
import /etc/coredns/custom/*.server
"""


def coredns(node_hosts: str, cluster_dns: str) -> list[dict]:
    labels = {"k8s-app": "kube-dns"}
    container = {
        "name": "coredns", "image": "rancher/mirrored-coredns-coredns:1.13.1", "imagePullPolicy": "IfNotPresent",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
        "ports": [{"containerPort": 53, "name": "dns", "protocol": "UDP"},
                  {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                  {"containerPort": 9153, "name": "metrics", "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
                          "initialDelaySeconds": 60, "periodSeconds": 10},
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
    }
    volumes = [{"name": "config-volume", "configMap": {"name": "coredns", "items": [
        {"key": "Corefile", "path": "Corefile"}, {"key": "NodeHosts", "path": "NodeHosts"}]}}]
    return [
        _sa("coredns"),
        _cluster_role("system:coredns", [_rule("", "endpoints services pods namespaces", "list watch"),
                                         _rule("discovery.k8s.io", "endpointslices", "list watch")],
                      {"kubernetes.io/bootstrapping": "rbac-defaults"}),
        _binding("ClusterRoleBinding", "system:coredns", "ClusterRole", "system:coredns", "coredns"),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("coredns"),
         "data": {"Corefile": COREFILE, "NodeHosts": node_hosts}},
        _deployment("coredns", labels, container, sa="coredns", replicas=None, volumes=volumes),
        {"apiVersion": "v1", "kind": "Service",
         "metadata": _meta("kube-dns", labels={**labels, "kubernetes.io/cluster-service": "true",
                                               "kubernetes.io/name": "CoreDNS"},
                           annotations={"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}),
         "spec": {"selector": labels, "clusterIP": cluster_dns, "clusterIPs": [cluster_dns],
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                            {"name": "metrics", "port": 9153, "protocol": "TCP"}],
                  "ipFamilyPolicy": "PreferDualStack"}},
    ]


# --- local-path-provisioner ----------------------------------------------------------------------

LOCAL_PATH_CONFIG = {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES",
                                      "paths": [f"{DATA_DIR}/storage"]}]}


def local_storage() -> list[dict]:
    labels = {"app": "local-path-provisioner"}
    sa = "local-path-provisioner-service-account"
    container = {
        "name": "local-path-provisioner", "image": "rancher/local-path-provisioner:v0.0.32",
        "imagePullPolicy": "IfNotPresent",
        "command": ["local-path-provisioner", "start", "--config", "/etc/config/config.json"],
        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/config/"}],
    }
    return [
        _sa(sa),
        _cluster_role("local-path-provisioner-role", [
            _rule("", "nodes persistentvolumeclaims configmaps pods pods/log", "get list watch"),
            _rule("", "persistentvolumes", "get list watch create patch update delete"),
            _rule("", "events", "create patch"),
            _rule("storage.k8s.io", "storageclasses", "get list watch")]),
        _binding("ClusterRoleBinding", "local-path-provisioner-bind", "ClusterRole",
                 "local-path-provisioner-role", sa),
        _deployment("local-path-provisioner", labels, container, sa=sa,
                    volumes=[{"name": "config-volume", "configMap": {"name": "local-path-config"}}]),
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": _meta("local-path", None, annotations={
             "storageclass.kubernetes.io/is-default-class": "true", "defaultVolumeType": "local"}),
         "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer",
         "reclaimPolicy": "Delete", "allowVolumeExpansion": True},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("local-path-config"),
         "data": {"config.json": json.dumps(LOCAL_PATH_CONFIG, indent=2),
                  "setup": '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "${VOL_DIR}"\nchmod 700 "${VOL_DIR}/.."\n',
                  "teardown": '#!/bin/sh\nset -eu\nrm -rf "${VOL_DIR}"\n',
                  "helperPod.yaml": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: helper-pod\nspec:\n"
                                    "  containers:\n  - name: helper-pod\n"
                                    "    image: rancher/mirrored-library-busybox:1.37.0\n"}},
    ]


# --- metrics-server -------------------------------------------------------------------------------

def metrics_server_deployment() -> list[dict]:
    labels = {"k8s-app": "metrics-server"}
    container = {
        "name": "metrics-server", "image": "rancher/mirrored-metrics-server:v0.8.0",
        "args": ["--cert-dir=/tmp", "--secure-port=10250", "--kubelet-preferred-address-types=InternalIP",
                 "--kubelet-use-node-status-port", "--metric-resolution=15s", "--tls-cipher-suites="
                 "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
        "ports": [{"containerPort": 10250, "name": "https", "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "70Mi"}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"}},
        "volumeMounts": [{"name": "tmp-dir", "mountPath": "/tmp"}],
    }
    return [_sa("metrics-server"),
            _deployment("metrics-server", labels, container, sa="metrics-server", replicas=None,
                        volumes=[{"name": "tmp-dir", "emptyDir": {}}])]


def metrics_server_service() -> list[dict]:
    labels = {"k8s-app": "metrics-server"}
    return [{"apiVersion": "v1", "kind": "Service",
             "metadata": _meta("metrics-server", labels={**labels, "kubernetes.io/cluster-service": "true",
                                                         "kubernetes.io/name": "Metrics-server"}),
             "spec": {"selector": labels, "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                                      "targetPort": "https"}]}}]


def metrics_server_rbac() -> list[dict]:
    reader = {"rbac.authorization.k8s.io/aggregate-to-view": "true",
              "rbac.authorization.k8s.io/aggregate-to-edit": "true",
              "rbac.authorization.k8s.io/aggregate-to-admin": "true"}
    return [
        _cluster_role("system:aggregated-metrics-reader", [_rule("metrics.k8s.io", "pods nodes", "get list watch")],
                      reader),
        _cluster_role("system:metrics-server", [_rule("", "nodes/metrics", "get"),
                                                _rule("", "pods nodes namespaces configmaps", "get list watch")]),
        _binding("ClusterRoleBinding", "system:metrics-server", "ClusterRole", "system:metrics-server",
                 "metrics-server"),
        _binding("ClusterRoleBinding", "metrics-server:system:auth-delegator", "ClusterRole",
                 "system:auth-delegator", "metrics-server"),
        _binding("RoleBinding", "metrics-server-auth-reader", "Role", "extension-apiserver-authentication-reader",
                 "metrics-server", SYSTEM),
    ]


# --- Traefik (through k3s' Helm controller) --------------------------------------------------------

TRAEFIK_VALUES = """\
deployment:
  podAnnotations:
    prometheus.io/port: "8082"
    prometheus.io/scrape: "true"
providers:
  kubernetesIngress:
    publishedService:
      enabled: true
priorityClassName: "system-cluster-critical"
image:
  repository: "rancher/mirrored-library-traefik"
  tag: "3.5.1"
tolerations:
- key: "CriticalAddonsOnly"
  operator: "Exists"
- key: "node-role.kubernetes.io/control-plane"
  operator: "Exists"
  effect: "NoSchedule"
- key: "node-role.kubernetes.io/master"
  operator: "Exists"
  effect: "NoSchedule"
service:
  ipFamilyPolicy: "PreferDualStack"
"""


def traefik() -> list[dict]:
    def chart(name: str, archive: str, values: str | None) -> dict:
        spec = {"chart": f"https://%{{KUBERNETES_API}}%/static/charts/{archive}.tgz",
                "set": {"global.systemDefaultRegistry": ""}}
        if values:
            spec["valuesContent"] = values
        return {"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart", "metadata": _meta(name), "spec": spec}

    return [chart("traefik-crd", TRAEFIK_CRD_CHART, None), chart("traefik", TRAEFIK_CHART, TRAEFIK_VALUES)]


# --- k3s' own CRDs ---------------------------------------------------------------------------------

def _crd(group: str, kind: str, plural: str, properties: dict, *, namespaced: bool = True,
         short: list[str] | None = None, columns: list[dict] | None = None) -> dict:
    schema = {"type": "object", "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": properties, "x-kubernetes-preserve-unknown-fields": True},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
    version = {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema},
               "subresources": {"status": {}}}
    if columns:
        version["additionalPrinterColumns"] = columns
    names = {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()}
    if short:
        names["shortNames"] = short
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "names": names, "scope": "Namespaced" if namespaced else "Cluster",
                     "versions": [version]}}


def _props(spec: str) -> dict:
    """``name:type`` words as OpenAPI properties."""
    props = {}
    for word in spec.split():
        name, kind = word.split(":")
        props[name] = ({"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": True}}
                       if kind == "map" else {"type": kind})
    return props


def k3s_crds() -> list[dict]:
    chart_props = _props("chart:string repo:string version:string targetNamespace:string "
                         "createNamespace:boolean helmVersion:string bootstrap:boolean valuesContent:string "
                         "jobImage:string timeout:string failurePolicy:string authSecret:object repoCA:string "
                         "repoCAConfigMap:object insecureSkipTLSVerify:boolean plainHTTP:boolean "
                         "backOffLimit:integer chartContent:string set:map podSecurityContext:object "
                         "securityContext:object valuesSecrets:array")
    chart_columns = [{"name": n, "type": "string", "jsonPath": f".spec.{f}"}
                     for n, f in (("Job", "jobName"), ("Chart", "chart"), ("TargetNamespace", "targetNamespace"),
                                  ("Version", "version"), ("Repo", "repo"), ("HelmVersion", "helmVersion"),
                                  ("Bootstrap", "bootstrap"))]
    chart_columns[0]["jsonPath"] = ".status.jobName"
    snapshot_columns = [{"name": n, "type": t, "jsonPath": p} for n, t, p in (
        ("SnapshotName", "string", ".spec.snapshotName"), ("Node", "string", ".spec.nodeName"),
        ("Location", "string", ".spec.location"), ("Size", "string", ".status.size"),
        ("CreationTime", "date", ".status.creationTime"))]
    return [
        _crd("helm.cattle.io", "HelmChart", "helmcharts", chart_props, columns=chart_columns),
        _crd("helm.cattle.io", "HelmChartConfig", "helmchartconfigs",
             _props("valuesContent:string failurePolicy:string valuesSecrets:array")),
        _crd("k3s.cattle.io", "Addon", "addons", _props("source:string checksum:string"),
             columns=[{"name": "Source", "type": "string", "jsonPath": ".spec.source"},
                      {"name": "Checksum", "type": "string", "jsonPath": ".spec.checksum"}]),
        _crd("k3s.cattle.io", "ETCDSnapshotFile", "etcdsnapshotfiles",
             _props("snapshotName:string nodeName:string location:string"), namespaced=False,
             columns=snapshot_columns),
    ]


# --- deploying ------------------------------------------------------------------------------------

def packaged(node_hosts: str, cluster_dns: str) -> dict[str, dict[str, Callable[[], list[dict]]]]:
    """Component (the name `--disable` takes) -> manifest file (relative) -> its objects."""
    return {
        "coredns": {"coredns.yaml": lambda: coredns(node_hosts, cluster_dns)},
        "local-storage": {"local-storage.yaml": local_storage},
        "metrics-server": {"metrics-server/metrics-server-deployment.yaml": metrics_server_deployment,
                           "metrics-server/metrics-server-service.yaml": metrics_server_service,
                           "metrics-server/resource-reader.yaml": metrics_server_rbac},
        "traefik": {"traefik.yaml": traefik},
    }


async def deploy(node, cluster, disable: list[str], log: Logger) -> None:
    """At server start: k3s' CRDs, then each packaged component's manifest files written and
    applied, or removed with what they deployed when the component is disabled."""
    for crd in k3s_crds():
        await cluster.apply_manifest(crd)
    node.mkdir(MANIFESTS_DIR)
    node_hosts = _node_hosts(cluster, node.spec.ip, node.hostname)
    for component, files in packaged(node_hosts, cidrs.cluster_dns_ip(cluster.service_cidr)).items():
        for relative, build in files.items():
            path = f"{MANIFESTS_DIR}/{relative}"
            objects = build()
            if component in disable:
                await _undeploy(node, cluster, path, objects)
            elif not node.exists(f"{path}.skip"):
                text = yaml.safe_dump_all(objects, sort_keys=False)
                node.mkdir(posixpath.dirname(path))
                node.write(path, text.encode(), mode=0o600)
                log.info(f"Writing manifest: {path}")
                await apply_text(cluster, path, text)


async def _undeploy(node, cluster, path: str, objects: list[dict]) -> None:
    if not node.exists(path):
        return
    text = node.read(path).decode()
    node.remove(path)
    for obj in [addon(path, text), *objects]:
        await delete_if_present(cluster, obj)


def _node_hosts(cluster, ip: str, name: str) -> str:
    """CoreDNS' NodeHosts with ``name`` at ``ip`` added to the nodes it lists already."""
    config = cluster.store.get(cluster.store.resource("v1", "ConfigMap"), SYSTEM, "coredns") or {}
    hosts = [entry for entry in (config.get("data") or {}).get("NodeHosts", "").splitlines()
             if entry.split()[1:2] != [name]]
    return "".join(f"{h}\n" for h in sorted([*hosts, f"{ip} {name}"]))


async def add_node_host(cluster, ip: str, name: str) -> None:
    """k3s keeps CoreDNS' NodeHosts listing every node."""
    config = cluster.store.get(cluster.store.resource("v1", "ConfigMap"), SYSTEM, "coredns")
    if config is not None:
        config.setdefault("data", {})["NodeHosts"] = _node_hosts(cluster, ip, name)
        cluster.store.update(config)
