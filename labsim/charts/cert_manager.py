"""cert-manager (jetstack chart): the controller, webhook and cainjector Deployments with their
ServiceAccounts and Services, and, when ``crds.enabled`` (or the deprecated ``installCRDs``) is
set, the CRDs of cert-manager.io/v1 and acme.cert-manager.io/v1, with the real chart's names,
labels, short names, categories and printer columns. What the controller does lives in
``labsim.apps.cert_manager``."""

from __future__ import annotations

from labsim.charts.release import Release, value

_READY = [{"jsonPath": '.status.conditions[?(@.type == "Ready")].status', "name": "Ready", "type": "string"}]
_STATUS = [{"jsonPath": '.status.conditions[?(@.type == "Ready")].message', "name": "Status", "priority": 1,
            "type": "string"}]
_AGE = [{"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"}]
_ISSUER = [{"jsonPath": ".spec.issuerRef.name", "name": "Issuer", "priority": 1, "type": "string"}]
_STATE = [{"jsonPath": ".status.state", "name": "State", "type": "string"}]
_REASON = [{"jsonPath": ".status.reason", "name": "Reason", "priority": 1, "type": "string"}]

# kind -> (group, plural, scope, short names, categories, printer columns)
CRDS: dict[str, tuple[str, str, str, list[str], list[str], list[dict]]] = {
    "Certificate": ("cert-manager.io", "certificates", "Namespaced", ["cert", "certs"], ["cert-manager"],
                    [*_READY, {"jsonPath": ".spec.secretName", "name": "Secret", "type": "string"}, *_ISSUER,
                     *_STATUS, {"jsonPath": ".status.notAfter", "name": "Expiration", "priority": 1,
                                "type": "string"}, *_AGE]),
    "CertificateRequest": ("cert-manager.io", "certificaterequests", "Namespaced", ["cr", "crs"], ["cert-manager"],
                           [{"jsonPath": '.status.conditions[?(@.type == "Approved")].status', "name": "Approved",
                             "type": "string"},
                            {"jsonPath": '.status.conditions[?(@.type == "Denied")].status', "name": "Denied",
                             "type": "string"}, *_READY,
                            {"jsonPath": ".spec.issuerRef.name", "name": "Issuer", "type": "string"},
                            {"jsonPath": ".spec.username", "name": "Requester", "type": "string"}, *_STATUS, *_AGE]),
    "Issuer": ("cert-manager.io", "issuers", "Namespaced", ["iss"], ["cert-manager"], [*_READY, *_STATUS, *_AGE]),
    "ClusterIssuer": ("cert-manager.io", "clusterissuers", "Cluster", ["ciss"], ["cert-manager"],
                      [*_READY, *_STATUS, *_AGE]),
    "Order": ("acme.cert-manager.io", "orders", "Namespaced", [], ["cert-manager", "cert-manager-acme"],
              [*_STATE, *_ISSUER, *_REASON, *_AGE]),
    "Challenge": ("acme.cert-manager.io", "challenges", "Namespaced", [], ["cert-manager", "cert-manager-acme"],
                  [*_STATE, {"jsonPath": ".spec.dnsName", "name": "Domain", "type": "string"}, *_REASON, *_AGE]),
}
COMPONENTS = {  # Deployment name suffix -> (component label, image, container ports)
    "": ("controller", "cert-manager-controller", [("http-metrics", 9402), ("http-healthz", 9403)]),
    "-webhook": ("webhook", "cert-manager-webhook", [("https", 10250), ("healthcheck", 6080), ("http-metrics", 9402)]),
    "-cainjector": ("cainjector", "cert-manager-cainjector", [("http-metrics", 9402)]),
}


def labels(release: Release, component: str, app: str) -> dict:
    return {"app": app, "app.kubernetes.io/name": app, "app.kubernetes.io/instance": release.name,
            "app.kubernetes.io/component": component, "app.kubernetes.io/version": release.version,
            "app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": f"cert-manager-{release.version.replace('+', '_')}"}


def _meta(release: Release, name: str, component: str, app: str, namespaced: bool = True) -> dict:
    meta = release.meta(name, namespaced=namespaced)
    meta["labels"] = labels(release, component, app)
    return meta


def cert_manager(release: Release) -> list[dict]:
    objects = crds(release) if value(release.values, "crds.enabled") or value(release.values, "installCRDs") else []
    for suffix, (component, image, ports) in COMPONENTS.items():
        objects += _component(release, suffix, component, image, ports)
    return objects + _service_monitor(release)


def _service_monitor(release: Release) -> list[dict]:
    """``prometheus.servicemonitor.enabled``: the chart's ServiceMonitor of the controller's metrics
    (labsim.apps.cert_manager_metrics serves them), with its ``labels`` for a Prometheus to select it."""
    monitor = value(release.values, "prometheus.servicemonitor", {}) or {}
    if not value(release.values, "prometheus.enabled", True) or not monitor.get("enabled"):
        return []
    meta = _meta(release, release.name, "controller", "cert-manager")
    meta["labels"] = {**meta["labels"], "prometheus": monitor.get("prometheusInstance", "default"),
                      **(monitor.get("labels") or {})}
    if monitor.get("namespace"):
        meta["namespace"] = monitor["namespace"]
    selector = {"app.kubernetes.io/name": "cert-manager", "app.kubernetes.io/instance": release.name,
                "app.kubernetes.io/component": "controller"}
    return [{"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": meta,
             "spec": {"jobLabel": release.name, "selector": {"matchLabels": selector},
                      "namespaceSelector": {"matchNames": [release.namespace]},
                      "endpoints": [{"targetPort": monitor.get("targetPort", "http-metrics"), "path": "/metrics",
                                     "interval": monitor.get("interval", "60s"),
                                     "scrapeTimeout": monitor.get("scrapeTimeout", "30s"), "honorLabels": False}]}}]


def crds(release: Release) -> list[dict]:
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    out = []
    for kind, (group, plural, scope, short, categories, columns) in CRDS.items():
        meta = _meta(release, f"{plural}.{group}", "crds", "cert-manager", namespaced=False)
        if value(release.values, "crds.keep", True):
            meta["annotations"]["helm.sh/resource-policy"] = "keep"
        names = {"categories": categories, "kind": kind, "listKind": f"{kind}List", "plural": plural,
                 "singular": kind.lower(), **({"shortNames": short} if short else {})}
        out.append({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": meta,
                    "spec": {"group": group, "names": names, "scope": scope,
                             "versions": [{"name": "v1", "served": True, "storage": True, "schema": schema,
                                           "additionalPrinterColumns": columns,
                                           "subresources": {"status": {}}}]}})
    return out


def _component(release: Release, suffix: str, component: str, image: str, ports: list) -> list[dict]:
    name, ns = f"{release.name}{suffix}", release.namespace
    app = {"": "cert-manager", "-webhook": "webhook", "-cainjector": "cainjector"}[suffix]
    meta = _meta(release, name, component, app)
    selector = {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": release.name,
                "app.kubernetes.io/component": component}
    key = {"": "", "-webhook": "webhook.", "-cainjector": "cainjector."}[suffix]
    tag = value(release.values, f"{key}image.tag", release.version)
    args = {"": [f"--cluster-resource-namespace={ns}", "--leader-election-namespace=kube-system",
                 f"--acme-http01-solver-image=quay.io/jetstack/cert-manager-acmesolver:{tag}", "--max-concurrent-challenges=60"],
            "-webhook": ["--secure-port=10250", "--dynamic-serving-ca-secret-namespace=" + ns,
                         f"--dynamic-serving-ca-secret-name={name}-ca", f"--dynamic-serving-dns-names={name},{name}.{ns},{name}.{ns}.svc"],
            "-cainjector": ["--leader-election-namespace=kube-system"]}[suffix]
    args += list(value(release.values, f"{key}extraArgs", []) or [])
    pod = {"serviceAccountName": name, "enableServiceLinks": False,
           "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
           "containers": [{"name": f"cert-manager-{component}", "image": f"quay.io/jetstack/{image}:{tag}",
                           "imagePullPolicy": "IfNotPresent", "args": ["--v=2", *args],
                           "ports": [{"containerPort": port, "name": pname, "protocol": "TCP"} for pname, port in ports],
                           "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]}],
           "nodeSelector": {"kubernetes.io/os": "linux"}}
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": True},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
         "spec": {"replicas": int(value(release.values, f"{key}replicaCount", 1)), "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": meta["labels"]}, "spec": pod}}},
    ]
    if suffix != "-cainjector":
        port = [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}] if suffix else \
            [{"name": "tcp-prometheus-servicemonitor", "port": 9402, "protocol": "TCP", "targetPort": "http-metrics"}]
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": meta,
                        "spec": {"type": "ClusterIP", "selector": selector, "ports": port}})
    return objects
