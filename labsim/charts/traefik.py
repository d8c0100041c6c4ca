"""k3s' bundled Traefik: the ``traefik-crd`` chart (Traefik's CRDs) and the ``traefik`` chart
(Deployment, LoadBalancer Service, default IngressClass), with the real chart's names and labels."""

from __future__ import annotations

from labsim.charts.release import Release, value

_TRAEFIK_CRDS = ("ingressroutes", "ingressroutetcps", "ingressrouteudps", "middlewares", "middlewaretcps",
                 "serverstransports", "serverstransporttcps", "tlsoptions", "tlsstores", "traefikservices")
_KINDS = {"ingressroutes": "IngressRoute", "ingressroutetcps": "IngressRouteTCP", "ingressrouteudps": "IngressRouteUDP",
          "middlewares": "Middleware", "middlewaretcps": "MiddlewareTCP", "serverstransports": "ServersTransport",
          "serverstransporttcps": "ServersTransportTCP", "tlsoptions": "TLSOption", "tlsstores": "TLSStore",
          "traefikservices": "TraefikService"}

_PORTS = (("metrics", 9100), ("traefik", 8080), ("web", 8000), ("websecure", 8443))
_EXPOSED = {"web": 80, "websecure": 443}
_READ = ["get", "list", "watch"]
# The chart's ClusterRole: what Traefik's providers read (the twin's RBAC enforces it).
_RULES = [{"apiGroups": [""], "resources": ["configmaps", "nodes", "services"], "verbs": _READ},
          {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
          {"apiGroups": [""], "resources": ["secrets"], "verbs": _READ},
          {"apiGroups": ["extensions", "networking.k8s.io"], "resources": ["ingressclasses", "ingresses"],
           "verbs": _READ},
          {"apiGroups": ["extensions", "networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]},
          {"apiGroups": ["traefik.io"], "resources": list(_TRAEFIK_CRDS), "verbs": _READ}]


def traefik_crd(release: Release) -> list[dict]:
    """traefik-crd: Traefik's CustomResourceDefinitions (traefik.io/v1alpha1)."""
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return [{
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {**release.meta(f"{plural}.traefik.io", namespaced=False)},
        "spec": {"group": "traefik.io", "scope": "Namespaced",
                 "names": {"kind": _KINDS[plural], "listKind": f"{_KINDS[plural]}List", "plural": plural,
                           "singular": _KINDS[plural].lower()},
                 "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": schema}]},
    } for plural in _TRAEFIK_CRDS]


def _args(values: dict, service: str) -> list[str]:
    """The Traefik arguments the chart's pod template renders from the values that matter here:
    entry points, dashboard, providers, HTTP -> HTTPS redirect (``ports.web.redirections`` of
    chart 34+, ``ports.web.redirectTo`` before), log level, access logs, additionalArguments."""
    args = [f"--entryPoints.{port}.address=:{number}/tcp" for port, number in _PORTS]
    args += [f"--api.dashboard={str(bool(value(values, 'api.dashboard', True))).lower()}", "--ping=true",
             "--metrics.prometheus=true", "--metrics.prometheus.entrypoint=metrics",
             "--providers.kubernetescrd", "--providers.kubernetescrd.allowEmptyServices=true",
             "--providers.kubernetesingress", "--providers.kubernetesingress.allowEmptyServices=true"]
    if value(values, "providers.kubernetesIngress.publishedService.enabled", False):
        args.append(f"--providers.kubernetesingress.ingressendpoint.publishedservice={service}")
    redirect = value(values, "ports.web.redirections.entryPoint") or value(values, "ports.web.redirectTo")
    if redirect:
        target = redirect.get("to") or redirect.get("port") or "websecure"
        exposed = value(values, f"ports.{target}.exposedPort", _EXPOSED.get(target, 443))
        args += [f"--entryPoints.web.http.redirections.entryPoint.to=:{exposed}",
                 f"--entryPoints.web.http.redirections.entryPoint.scheme={redirect.get('scheme', 'https')}",
                 f"--entryPoints.web.http.redirections.entryPoint.permanent={str(redirect.get('permanent', True)).lower()}"]
    args += ["--entryPoints.websecure.http.tls=true", f"--log.level={value(values, 'logs.general.level', 'INFO')}"]
    if value(values, "logs.access.enabled", False):
        args.append("--accesslog=true")
        if value(values, "logs.access.format"):
            args.append(f"--accesslog.format={value(values, 'logs.access.format')}")
        args += ["--accesslog.fields.defaultmode=keep", "--accesslog.fields.headers.defaultmode=drop"]
    return args + [str(arg) for arg in value(values, "additionalArguments", []) or []]


def traefik(release: Release) -> list[dict]:
    """traefik: the ingress controller k3s ships, default IngressClass, LoadBalancer Service."""
    values, name, ns = release.values, release.name, release.namespace
    selector = {"app.kubernetes.io/name": "traefik", "app.kubernetes.io/instance": f"{name}-{ns}"}
    image = f"{value(values, 'image.registry', 'docker.io')}/{value(values, 'image.repository', 'traefik')}:" \
            f"{value(values, 'image.tag', '3.5.1')}"
    pod_spec = {
        "serviceAccountName": name,
        "terminationGracePeriodSeconds": 60,
        "containers": [{
            "name": name, "image": image,
            "args": _args(values, f"{ns}/{name}"),
            "ports": [{"name": p, "containerPort": n, "protocol": "TCP"} for p, n in _PORTS],
            "readinessProbe": {"httpGet": {"path": "/ping", "port": 8080, "scheme": "HTTP"}},
            "livenessProbe": {"httpGet": {"path": "/ping", "port": 8080, "scheme": "HTTP"}},
        }],
    }
    if value(values, "tolerations"):
        pod_spec["tolerations"] = value(values, "tolerations")
    if value(values, "priorityClassName"):
        pod_spec["priorityClassName"] = value(values, "priorityClassName")
    service_spec = {"type": value(values, "service.type", "LoadBalancer"), "selector": selector,
                    "ports": [{"name": "web", "port": 80, "protocol": "TCP", "targetPort": "web"},
                              {"name": "websecure", "port": 443, "protocol": "TCP", "targetPort": "websecure"}]}
    if value(values, "service.ipFamilyPolicy"):
        service_spec["ipFamilyPolicy"] = value(values, "service.ipFamilyPolicy")
    service_spec.update(value(values, "service.spec", {}) or {})  # loadBalancerIP, loadBalancerClass...
    service_meta = release.meta(name)
    service_meta["labels"].update(value(values, "service.labels", {}) or {})
    service_meta["annotations"].update(value(values, "service.annotations", {}) or {})  # metallb.io/...
    return [*_objects(release, pod_spec, selector, service_meta, service_spec), *_dashboard(release),
            *_metrics(release, selector)]


def _metrics(release: Release, selector: dict) -> list[dict]:
    """``metrics.prometheus.service.enabled``: the ``<name>-metrics`` Service of the metrics entry
    point; ``metrics.prometheus.serviceMonitor`` (a map): the ServiceMonitor of the real chart
    (job label the release name unless ``jobLabel``; ``additionalLabels`` such as ``release:
    kube-prometheus-stack`` for a Prometheus to select it)."""
    values, name = release.values, release.name
    service = bool(value(values, "metrics.prometheus.service.enabled", False))
    monitor = value(values, "metrics.prometheus.serviceMonitor")
    metrics_selector = {**selector, "app.kubernetes.io/component": "metrics"}
    labels = {**release.labels(), **metrics_selector}
    objects = []
    if service:
        objects.append({"apiVersion": "v1", "kind": "Service",
                        "metadata": {**release.meta(f"{name}-metrics"), "labels": labels},
                        "spec": {"type": "ClusterIP", "selector": selector, "ports": [
                            {"name": "metrics", "port": 9100, "protocol": "TCP", "targetPort": "metrics"}]}})
    if isinstance(monitor, dict) and monitor.get("enabled", True):
        meta = {**release.meta(name), "labels": {**(labels if service else release.labels()),
                                                 **(monitor.get("additionalLabels") or {})}}
        if monitor.get("namespace"):
            meta["namespace"] = monitor["namespace"]
        endpoint = {"port": "metrics", "path": "/metrics",
                    **{k: monitor[k] for k in ("interval", "scrapeTimeout", "honorLabels") if monitor.get(k)}}
        objects.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": meta,
                        "spec": {"jobLabel": monitor.get("jobLabel") or name, "endpoints": [endpoint],
                                 "namespaceSelector": monitor.get("namespaceSelector") or
                                 {"matchNames": [release.namespace]},
                                 "selector": {"matchLabels": metrics_selector if service else selector}}})
    return objects


def _dashboard(release: Release) -> list[dict]:
    """The dashboard's IngressRoute (``ingressRoute.dashboard.enabled``; off by default since chart 26)."""
    values = release.values
    if not value(values, "ingressRoute.dashboard.enabled", False):
        return []
    rule = value(values, "ingressRoute.dashboard.matchRule", "PathPrefix(`/dashboard`) || PathPrefix(`/api`)")
    return [{"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
             "metadata": release.meta(f"{release.name}-dashboard"),
             "spec": {"entryPoints": list(value(values, "ingressRoute.dashboard.entryPoints", ["traefik"])),
                      "routes": [{"match": rule, "kind": "Rule",
                                  "services": [{"name": "api@internal", "kind": "TraefikService"}]}]}}]


def _objects(release: Release, pod_spec: dict, selector: dict, service_meta: dict, service_spec: dict) -> list[dict]:
    values, name, ns = release.values, release.name, release.namespace
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": release.meta(name)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": release.meta(f"{name}-{ns}", namespaced=False),
         "rules": _RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": release.meta(f"{name}-{ns}", namespaced=False),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{name}-{ns}"},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": release.meta(name),
         "spec": {"replicas": int(value(values, "deployment.replicas", 1)),
                  "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": {**release.labels(), **selector},
                                            "annotations": dict(value(values, "deployment.podAnnotations", {}))},
                               "spec": pod_spec}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": service_meta, "spec": service_spec},
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {**release.meta(name, namespaced=False),
                      "annotations": {**release.meta(name)["annotations"],
                                      "ingressclass.kubernetes.io/is-default-class": "true"}},
         "spec": {"controller": "traefik.io/ingress-controller"}},
    ]
