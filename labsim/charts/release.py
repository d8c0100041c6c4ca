"""A Helm release as a chart model sees it: name, namespace, chart, version and merged values,
with the labels and annotations Helm puts on every object it renders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    chart: str
    version: str
    values: dict

    def labels(self, component: str | None = None) -> dict:
        labels = {"app.kubernetes.io/instance": f"{self.name}-{self.namespace}",
                  "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/name": self.chart,
                  "helm.sh/chart": f"{self.chart}-{self.version.replace('+', '_')}"}
        if component:
            labels["app.kubernetes.io/component"] = component
        return labels

    def meta(self, name: str, namespaced: bool = True) -> dict:
        meta = {"name": name, "labels": self.labels(),
                "annotations": {"meta.helm.sh/release-name": self.name,
                                "meta.helm.sh/release-namespace": self.namespace}}
        if namespaced:
            meta["namespace"] = self.namespace
        return meta


ChartModel = Callable[[Release], list[dict]]


def helm_fullname(release: Release, chart: str) -> str:
    """The ``fullname`` helper of ``helm create``: ``fullnameOverride``, else the release name when
    it contains the chart's name (or ``nameOverride``), else ``<release>-<name>``; 63 characters at most."""
    override = value(release.values, "fullnameOverride")
    if override:
        return str(override)[:63].rstrip("-")
    name = value(release.values, "nameOverride") or chart
    return release.name[:63].rstrip("-") if name in release.name else f"{release.name}-{name}"[:63].rstrip("-")


def helm_selector(release: Release, name: str) -> dict:
    """The selector charts made by ``helm create`` put on their workloads and Services."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": release.name}


def helm_labels(release: Release, chart: str, name: str, app_version: str) -> dict:
    """The labels such charts put on every object: the selector's, plus chart, version and manager."""
    return {"helm.sh/chart": f"{chart}-{release.version.replace('+', '_')}", **helm_selector(release, name),
            "app.kubernetes.io/version": app_version, "app.kubernetes.io/managed-by": "Helm"}


def value(values: dict, path: str, default=None):
    """``values['a']['b']`` for path ``a.b``, or ``default`` where a key is missing."""
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def helm_ingress(values: dict, meta: dict, service: str, port: int) -> dict:
    """The Ingress ``helm create`` charts render from ``ingress.hosts`` (each path a string or a
    ``{path, pathType}``), ``ingress.className``, ``ingress.tls`` and ``ingress.annotations``."""
    def path(entry) -> dict:
        entry = {"path": entry} if isinstance(entry, str) else entry
        return {"path": entry.get("path", "/"), "pathType": entry.get("pathType", "Prefix"),
                "backend": {"service": {"name": service, "port": {"number": port}}}}
    spec: dict = {"rules": [{"host": host["host"], "http": {"paths": [path(p) for p in host.get("paths") or []]}}
                            for host in value(values, "ingress.hosts") or []]}
    if value(values, "ingress.className"):
        spec["ingressClassName"] = value(values, "ingress.className")
    if value(values, "ingress.tls"):
        spec["tls"] = [{"hosts": list(t.get("hosts") or []), "secretName": t.get("secretName")}
                       for t in value(values, "ingress.tls")]
    meta = {**meta, "annotations": {**meta.get("annotations", {}), **(value(values, "ingress.annotations") or {})}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}
