"""REST handlers of the Kubernetes API: paths to resources, verbs to store operations.

/api/v1/[namespaces/NS/]PLURAL[/NAME[/SUBRESOURCE]] and /apis/GROUP/VERSION/... are parsed into
a Target; GET/POST/PUT/PATCH/DELETE on collections and items map to the store, with content
negotiation (JSON and Table out; JSON, YAML and protobuf in), dry runs, field managers and patches.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

import yaml
from aiohttp import web

from labsim.kube import (
    admission,
    apply,
    authn,
    authz,
    fieldselectors,
    metrics,
    patch,
    protobuf,
    schemas,
    streaming,
    subresources,
    tables,
    watch,
)
from labsim.kube.handling import Target
from labsim.kube.resources import Resource
from labsim.kube.responses import WARNINGS, dumps, json_response, status_response
from labsim.kube.store import StoreError

if TYPE_CHECKING:
    from labsim.kube.cluster import Cluster

def parse_target(parts: list[str]) -> tuple[str, str, list[str]]:
    """Split /api/v1/... or /apis/G/V/... into (group, version, rest)."""
    if parts[0] == "api" and len(parts) >= 2:
        return "", parts[1], parts[2:]
    if parts[0] == "apis" and len(parts) >= 3:
        return parts[1], parts[2], parts[3:]
    raise StoreError(404, "NotFound", "the server could not find the requested resource")


def resolve(cluster: Cluster, group: str, version: str, rest: list[str]) -> Target:
    catalog = cluster.store.catalog
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        inner = catalog.by_plural(group, version, rest[2])
        if inner is not None and inner.namespaced:
            namespace, rest = rest[1], rest[2:]
    res = catalog.by_plural(group, version, rest[0])
    if res is None:
        raise StoreError(404, "NotFound", "the server could not find the requested resource")
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub and sub not in res.subresources:
        raise StoreError(404, "NotFound", "the server could not find the requested resource")
    return Target(res, namespace, name, sub)


# Kinds whose DELETE answers with the deleted object (the rest answer with a Status), as the
# real registries do; an object still present (finalizers) is always returned.
_RETURNS_DELETED = {("", "Pod"), ("", "Service"), ("", "ServiceAccount"), ("", "PersistentVolume"),
                    ("", "PersistentVolumeClaim"), ("", "PodTemplate"), ("", "ResourceQuota")}


def _verb(method: str, target: Target, watching: bool) -> str:
    if target.name is None:
        return {"GET": "watch" if watching else "list", "POST": "create",
                "DELETE": "deletecollection"}.get(method, method.lower())
    return {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())


class RestHandler:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.watches: set = set()  # open watch subscriptions, ended when the server stops
        self.authorizer = authz.Authorizer(self.store)

    def close_watches(self) -> None:
        for sub in list(self.watches):
            sub.close()

    async def handle(self, request: web.Request, group: str, version: str, rest: list[str]) -> web.StreamResponse:
        target = resolve(self.cluster, group, version, rest)
        method = request.method
        verb = _verb(method, target, request.query.get("watch") in ("1", "true"))
        if not target.subresource and verb not in target.res.verbs:
            return status_response(405, "MethodNotAllowed", f"the server does not allow this method on the "
                                   f"requested resource ({verb} {target.res.plural})")
        if target.name is None and request.query.get("fieldSelector"):
            fieldselectors.check(target.res, request.query["fieldSelector"])
        if target.res.group == metrics.GROUP:
            return metrics.serve(self, request, target)
        if target.subresource in streaming.SUBRESOURCES:
            return await streaming.handle(self, request, target)
        if target.subresource and target.subresource not in ("status", "finalize"):
            return await subresources.handle(self, request, target)
        if target.name is None:
            if method == "GET":
                if request.query.get("watch") in ("1", "true"):
                    return await watch.serve(self, request, target)
                return self.list(request, target)
            if method == "POST":
                return self.create(request, target, await self.body(request))
            if method == "DELETE":
                return self.delete_collection(request, target)
        else:
            if method == "GET":
                return self.get(request, target)
            if method == "PUT":
                return self.update(request, target, await self.body(request))
            if method == "PATCH":
                return await self.patch(request, target)
            if method == "DELETE":
                return self.delete(request, target, await self.body(request, optional=True))
        return status_response(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # -- bodies and representations ---------------------------------------------------------------
    async def body(self, request: web.Request, *, optional: bool = False) -> dict:
        raw = await request.read()
        if not raw:
            if optional:
                return {}
            raise StoreError(400, "BadRequest", "the request body is empty")
        ctype = request.content_type
        try:
            if ctype == protobuf.CONTENT_TYPE:
                return protobuf.decode(raw)
            if "yaml" in ctype:
                return yaml.safe_load(raw) or {}
            return json.loads(raw)
        except protobuf.ProtobufError as exc:
            raise StoreError(415, "UnsupportedMediaType", str(exc)) from exc
        except (ValueError, yaml.YAMLError) as exc:
            raise StoreError(400, "BadRequest", f"the body of the request could not be decoded: {exc}") from exc

    def respond(self, request: web.Request, obj: dict, target: Target, status: int = 200) -> web.StreamResponse:
        obj = self.versioned(obj, target.res)
        if tables.wanted(request):
            return json_response(tables.table(self.cluster, target.res, [obj], request), status)
        return json_response(obj, status)

    @staticmethod
    def versioned(obj: dict, res: Resource) -> dict:
        """The object as the requested version (CRD versions share one storage)."""
        if obj.get("apiVersion") != res.api_version and res.group:
            obj["apiVersion"] = res.api_version
        return obj

    @staticmethod
    def manager(request: web.Request) -> str:
        name = request.query.get("fieldManager")
        if name:
            return name
        agent = request.headers.get("User-Agent", "unknown")
        return agent.split("/", 1)[0][:128] or "unknown"

    @staticmethod
    def dry_run(request: web.Request) -> bool:
        return "All" in request.query.getall("dryRun", [])

    def check_body(self, target: Target, obj: dict, *, name: str | None = None) -> dict:
        if not isinstance(obj, dict):
            raise StoreError(400, "BadRequest", "the object provided is not a JSON object")
        obj.setdefault("apiVersion", target.res.api_version)
        obj.setdefault("kind", target.res.kind)
        if obj["kind"] != target.res.kind:
            raise StoreError(400, "BadRequest", f"the kind {obj['kind']!r} does not match the resource "
                             f"{target.res.plural} ({target.res.kind})")
        obj["apiVersion"] = self.stored_api_version(target.res)
        meta = obj.setdefault("metadata", {})
        if target.namespace:
            if meta.get("namespace") and meta["namespace"] != target.namespace:
                raise StoreError(400, "BadRequest", "the namespace of the provided object does not match "
                                 "the namespace sent on the request")
            meta["namespace"] = target.namespace
        if name and meta.get("name") and meta["name"] != name:
            raise StoreError(400, "BadRequest", "the name of the object does not match the name on the URL")
        if name:
            meta.setdefault("name", name)
        return obj

    @staticmethod
    def unknown_fields(target: Target, obj: dict) -> list[str]:
        res = target.res
        if res.schema is not None:
            return admission.unknown_fields(res.schema, obj)
        model = schemas.model_for(res.group, res.version, res.kind)
        return schemas.unknown_fields(model, obj) if model is not None else []

    def check_fields(self, request: web.Request, target: Target, obj: dict, current: dict | None = None) -> None:
        """Fields the kind does not declare: refused with fieldValidation=Strict (kubectl's and
        helm's default), dropped otherwise (with a Warning header unless Ignore), as the real decoder
        does. Only what this request adds
        counts (not what the stored object already carried)."""
        unknown = self.unknown_fields(target, obj)
        if unknown and current is not None:
            known_before = set(self.unknown_fields(target, current))
            unknown = [p for p in unknown if p not in known_before]
        if not unknown:
            return
        mode = request.query.get("fieldValidation", "Warn")
        if mode == "Strict":
            text = ", ".join(f'unknown field "{f}"' for f in unknown)
            raise StoreError(400, "BadRequest", f"strict decoding error: {text}")
        if mode == "Warn":
            request.setdefault(WARNINGS, []).extend(f'unknown field "{f}"' for f in unknown)
        schemas.prune(obj, unknown)

    def stored_api_version(self, res: Resource) -> str:
        stored = self.store.catalog.by_plural(res.group, None, res.plural)
        return (stored or res).api_version

    # -- verbs --------------------------------------------------------------------------------
    def list(self, request: web.Request, target: Target) -> web.StreamResponse:
        q = request.query
        items = self.store.list(target.res, target.namespace, labels=q.get("labelSelector") or None,
                                fields=q.get("fieldSelector") or None)
        rv = str(self.store.resource_version)
        start = 0
        if q.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(q["continue"]))
                start, rv = int(token["start"]), token["rv"]
            except (ValueError, KeyError) as exc:
                raise StoreError(400, "BadRequest", "invalid continue token") from exc
        limit = int(q.get("limit") or 0)
        page = items[start:start + limit] if limit else items[start:]
        meta: dict = {"resourceVersion": rv}
        if limit and start + limit < len(items):
            token = {"start": start + limit, "rv": rv}
            meta["continue"] = base64.urlsafe_b64encode(dumps(token)).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        page = [self.versioned(obj, target.res) for obj in page]
        if tables.wanted(request):
            out = tables.table(self.cluster, target.res, page, request)
            out["metadata"] = meta
            return json_response(out)
        body = {"kind": target.res.list_kind, "apiVersion": target.res.api_version, "metadata": meta,
                "items": page}
        return json_response(body)

    def get(self, request: web.Request, target: Target) -> web.StreamResponse:
        obj = self.store.get(target.res, target.namespace, target.name)
        if obj is None:
            raise StoreError.not_found(target.res, target.name or "")
        return self.respond(request, obj, target)

    def create(self, request: web.Request, target: Target, obj: dict) -> web.StreamResponse:
        obj = self.check_body(target, obj)
        self.check_fields(request, target, obj)
        apply.record_update(None, obj, manager=self.manager(request), group=target.res.group,
                            kind=target.res.kind, now=self.store.now())
        if obj["kind"] == "TokenReview":
            return json_response(authn.token_review(self.cluster, obj), 201)
        if target.res.group in ("authorization.k8s.io", "authentication.k8s.io"):
            answer = authz.review(self.authorizer, request[authn.USER], obj,
                                  target.namespace if obj["kind"] == "LocalSubjectAccessReview" else None)
            return json_response(answer, 201)
        return self.respond(request, self.store.create(obj, dry_run=self.dry_run(request)), target, 201)

    def update(self, request: web.Request, target: Target, obj: dict) -> web.StreamResponse:
        obj = self.check_body(target, obj, name=target.name)
        old = self.store.get(target.res, target.namespace, target.name)
        if old is None:
            raise StoreError.not_found(target.res, target.name or "")
        self.check_fields(request, target, obj, old)
        apply.record_update(old, obj, manager=self.manager(request), group=target.res.group,
                            kind=target.res.kind, now=self.store.now(), subresource=target.subresource)
        stored = self.store.update(obj, subresource=target.subresource, dry_run=self.dry_run(request))
        return self.respond(request, stored, target)

    async def patch(self, request: web.Request, target: Target) -> web.StreamResponse:
        raw = await request.read()
        # No await from here on: the patch applies to the object as stored, as one atomic update.
        current = self.store.get(target.res, target.namespace, target.name)
        ctype = request.content_type
        if ctype in (patch.APPLY_PATCH, patch.APPLY_PATCH_CBOR):
            return self.server_side_apply(request, target, current, raw)
        if current is None:
            raise StoreError.not_found(target.res, target.name or "")
        updated = self.patched(target, current, raw, ctype)
        updated = self.check_body(target, updated, name=target.name)
        self.check_fields(request, target, updated, current)
        apply.record_update(current, updated, manager=self.manager(request), group=target.res.group,
                            kind=target.res.kind, now=self.store.now(), subresource=target.subresource)
        stored = self.store.update(updated, subresource=target.subresource, dry_run=self.dry_run(request))
        return self.respond(request, stored, target)

    def patched(self, target: Target, current: dict, raw: bytes, ctype: str) -> dict:
        try:
            body = json.loads(raw) if raw else {}
            if ctype == patch.JSON_PATCH:
                return patch.json_patch(current, body)
            if ctype == patch.MERGE_PATCH:
                return patch.merge_patch(current, body)
            if ctype == patch.STRATEGIC_PATCH:
                if target.res.schema is not None:
                    raise StoreError(415, "UnsupportedMediaType", "strategic merge patch is not supported for "
                                     "custom resources; use a JSON merge patch")
                return patch.strategic_merge(current, body, target.res.group, target.res.kind)
        except (ValueError, patch.PatchError) as exc:
            raise StoreError(422, "Invalid", f"the patch could not be applied: {exc}") from exc
        raise StoreError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}")

    def server_side_apply(self, request: web.Request, target: Target, current: dict | None,
                          raw: bytes) -> web.StreamResponse:
        if not request.query.get("fieldManager"):
            raise StoreError(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required "
                             "value: is required for apply patch")
        try:
            applied = yaml.safe_load(raw) or {}
        except yaml.YAMLError as exc:
            raise StoreError(400, "BadRequest", f"error decoding YAML: {exc}") from exc
        applied = self.check_body(target, applied, name=target.name)
        self.check_fields(request, target, applied)
        force = request.query.get("force") in ("true", "1")
        try:
            result = apply.server_side_apply(current or {}, applied, manager=self.manager(request),
                                             group=target.res.group, kind=target.res.kind, force=force,
                                             now=self.store.now())
        except apply.ApplyConflict as exc:
            causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}"', "field": p}
                      for m, p in exc.conflicts]
            raise StoreError(409, "Conflict", str(exc), details={"causes": causes}) from exc
        result["metadata"].pop("resourceVersion", None)
        dry = self.dry_run(request)
        if current is None:
            return self.respond(request, self.store.create(result, dry_run=dry), target, 201)
        return self.respond(request, self.store.update(result, subresource=target.subresource, dry_run=dry), target)

    def delete(self, request: web.Request, target: Target, options: dict) -> web.StreamResponse:
        propagation = (options.get("propagationPolicy") or request.query.get("propagationPolicy")
                       or ("Orphan" if options.get("orphanDependents") is True else "Background"))
        if self.dry_run(request) or "All" in (options.get("dryRun") or []):
            return self.get(request, target)
        grace = options.get("gracePeriodSeconds", request.query.get("gracePeriodSeconds"))
        deleted = self.store.delete(target.res, target.namespace, target.name or "", propagation=propagation,
                                    preconditions=options.get("preconditions"),
                                    grace=None if grace is None else int(grace))
        if deleted is None:
            raise StoreError.not_found(target.res, target.name or "")
        res = target.res
        still_there = self.store.get(res, target.namespace, target.name or "") is not None
        if still_there or res.schema is not None or (res.group, res.kind) in _RETURNS_DELETED:
            return self.respond(request, deleted, target)
        meta = deleted["metadata"]
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {
            "name": meta["name"], "group": res.group, "kind": res.plural, "uid": meta.get("uid")}})

    def delete_collection(self, request: web.Request, target: Target) -> web.StreamResponse:
        q = request.query
        items = self.store.list(target.res, target.namespace, labels=q.get("labelSelector") or None,
                                fields=q.get("fieldSelector") or None)
        for obj in items:
            meta = obj["metadata"]
            self.store.delete(target.res, meta.get("namespace"), meta["name"],
                              propagation=q.get("propagationPolicy") or "Background")
        return json_response({"kind": target.res.list_kind, "apiVersion": target.res.api_version,
                              "metadata": {"resourceVersion": str(self.store.resource_version)}, "items": items})
