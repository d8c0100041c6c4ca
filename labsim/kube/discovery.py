"""API discovery: legacy (/api, /apis, /apis/G, per group/version resource lists) and aggregated
(apidiscovery.k8s.io/v2, what kubectl asks for first: the whole catalog in two requests)."""

from __future__ import annotations

from labsim.kube.resources import Catalog, Resource

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

# subresource -> (response group, version, kind or None for the parent's kind, verbs)
_SUBRESOURCES: dict[str, tuple[str, str, str | None, list[str]]] = {
    "status": ("", "", None, ["get", "patch", "update"]),
    "scale": ("autoscaling", "v1", "Scale", ["get", "patch", "update"]),
    "eviction": ("policy", "v1", "Eviction", ["create"]),
    "log": ("", "v1", "Pod", ["get"]),
    "exec": ("", "v1", "PodExecOptions", ["create", "get"]),
    "attach": ("", "v1", "PodAttachOptions", ["create", "get"]),
    "portforward": ("", "v1", "PodPortForwardOptions", ["create", "get"]),
    "binding": ("", "v1", "Binding", ["create"]),
    "finalize": ("", "v1", "Namespace", ["update"]),
    "proxy": ("", "v1", None, ["create", "delete", "get", "patch", "update"]),
    "token": ("authentication.k8s.io", "v1", "TokenRequest", ["create"]),
    "ephemeralcontainers": ("", "v1", "Pod", ["get", "patch", "update"]),
}


def wants_aggregated(accept: str) -> bool:
    return "as=APIGroupDiscoveryList" in accept and "v=v2" in accept


def api_versions(server_address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _group(name: str, versions: list[str]) -> dict:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def group_list(catalog: Catalog) -> dict:
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(g, vs) for g, vs in catalog.groups().items() if g]}


def group(catalog: Catalog, name: str) -> dict | None:
    versions = catalog.groups().get(name)
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)} if versions and name else None


def resource_list(catalog: Catalog, group_name: str, version: str) -> dict | None:
    resources = catalog.in_group_version(group_name, version)
    if not resources:
        return None
    out = []
    for res in resources:
        entry = {"name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
                 "kind": res.kind, "verbs": list(res.verbs)}
        if res.short_names:
            entry["shortNames"] = list(res.short_names)
        if res.categories:
            entry["categories"] = list(res.categories)
        out.append(entry)
        for sub in res.subresources:
            sgroup, sversion, skind, verbs = _SUBRESOURCES[sub]
            item = {"name": f"{res.plural}/{sub}", "singularName": "", "namespaced": res.namespaced,
                    "kind": skind or res.kind, "verbs": verbs}
            if sgroup:
                item.update(group=sgroup, version=sversion)
            out.append(item)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": resources[0].api_version,
            "resources": out}


def _aggregated_resource(res: Resource) -> dict:
    entry: dict = {"resource": res.plural,
                   "responseKind": {"group": res.group, "version": res.version, "kind": res.kind},
                   "scope": "Namespaced" if res.namespaced else "Cluster", "singularResource": res.singular,
                   "verbs": list(res.verbs)}
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    subs = []
    for sub in res.subresources:
        sgroup, sversion, skind, verbs = _SUBRESOURCES[sub]
        kind = {"group": sgroup if skind else res.group, "version": sversion or res.version,
                "kind": skind or res.kind}
        subs.append({"subresource": sub, "responseKind": kind, "verbs": verbs})
    if subs:
        entry["subresources"] = subs
    return entry


def aggregated(catalog: Catalog, *, core: bool) -> dict:
    """/api (core=True) or /apis as an APIGroupDiscoveryList."""
    items = []
    for name, versions in catalog.groups().items():
        if (name == "") != core:
            continue
        items.append({"metadata": {"name": name, "creationTimestamp": None},
                      "versions": [{"version": v, "freshness": "Current",
                                    "resources": [_aggregated_resource(r) for r in catalog.in_group_version(name, v)]}
                                   for v in versions]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items}
