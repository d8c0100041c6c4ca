"""OpenAPI documents: /openapi/v3, one per group/version (/openapi/v2: openapi_v2.py).

kubectl downloads /openapi/v3 for `apply` (default validation): each group/version document's
PATCH operations carry x-kubernetes-group-version-kind and a fieldValidation parameter, which
tells kubectl the server validates fields itself. PATCH bodies list no strategic merge type, so
kubectl computes strategic patches from its own built-in types (and merge patches for CRDs).
"""

from __future__ import annotations

import hashlib
import json

from labsim.kube import schemas
from labsim.kube.resources import Catalog, Resource

_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _schema_name(res: Resource) -> str:
    group = res.group or "core"
    return f"{group}.{res.version}.{res.kind}"


def _kind_schemas(res: Resource, gvk: dict) -> tuple[str, dict[str, dict]]:
    """The component name of a kind and the schemas to publish for it: a CRD's own schema, or a
    built-in kind's fields (from the client's models, so that `kubectl explain` has them)."""
    model = schemas.model_for(res.group, res.version, res.kind) if res.schema is None else None
    if model is None:
        schema = res.schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return _schema_name(res), {_schema_name(res): {**schema, "x-kubernetes-group-version-kind": [gvk]}}
    name = schemas.component_name(model.__name__)
    components = schemas.openapi_components(model)
    components[name] = {**components[name], "x-kubernetes-group-version-kind": [gvk]}
    return name, components


def group_version_doc(catalog: Catalog, group: str, version: str, server_version: str) -> dict | None:
    resources = catalog.in_group_version(group, version)
    if not resources:
        return None
    paths: dict = {}
    components: dict = {}
    kinds: dict = {}
    for res in resources:
        gvk = {"group": res.group, "version": res.version, "kind": res.kind}
        name, found = _kind_schemas(res, gvk)
        components.update({k: v for k, v in found.items() if k not in components})
        kinds[name] = found[name]  # the kind's own entry carries its GVK even if another kind refers to it
        ref = {"$ref": f"#/components/schemas/{name}"}
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
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": server_version}, "paths": paths,
            "components": {"schemas": {**components, **kinds}}}


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
