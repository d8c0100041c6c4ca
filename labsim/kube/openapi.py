"""OpenAPI documents: /openapi/v3, one per group/version (/openapi/v2 is not served).

kubectl downloads /openapi/v3 for `apply` (default validation): each group/version document's
PATCH operations carry x-kubernetes-group-version-kind and a fieldValidation parameter, which
tells kubectl the server validates fields itself. PATCH bodies list no strategic merge type, so
kubectl computes strategic patches from its own built-in types (and merge patches for CRDs).
"""

from __future__ import annotations

import hashlib
import json

from labsim.kube.resources import Catalog, Resource

_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _schema_name(res: Resource) -> str:
    group = res.group or "core"
    return f"{group}.{res.version}.{res.kind}"


def group_version_doc(catalog: Catalog, group: str, version: str, server_version: str) -> dict | None:
    resources = catalog.in_group_version(group, version)
    if not resources:
        return None
    paths, schemas = {}, {}
    for res in resources:
        gvk = {"group": res.group, "version": res.version, "kind": res.kind}
        ref = {"$ref": f"#/components/schemas/{_schema_name(res)}"}
        body = {"content": {t: {"schema": {"type": "object"}} for t in _PATCH_TYPES}, "required": True}
        params = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                  for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
        item = f"/{_gv_path(group, version)}/{'namespaces/{namespace}/' if res.namespaced else ''}{res.plural}/{{name}}"
        ops = {"get": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "get",
                       "responses": {"200": {"content": {"application/json": {"schema": ref}}}}}}
        if "patch" in res.verbs:
            ops["patch"] = {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "patch",
                            "operationId": f"patch{res.kind}", "parameters": params, "requestBody": body,
                            "responses": {"200": {"content": {"application/json": {"schema": ref}}}}}
        paths[item] = ops
        schema = res.schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        schemas[_schema_name(res)] = {**schema, "x-kubernetes-group-version-kind": [gvk]}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": server_version}, "paths": paths,
            "components": {"schemas": schemas}}


def _hash(doc: dict) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:128].upper()


def index(catalog: Catalog, server_version: str) -> dict:
    paths = {}
    for group, versions in catalog.groups().items():
        for version in versions:
            doc = group_version_doc(catalog, group, version, server_version)
            path = _gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={_hash(doc)}"}
    return {"paths": paths}
