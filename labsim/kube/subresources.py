"""Subresources other than status: scale, pods/eviction (with PodDisruptionBudgets), pods/log,
pods/binding."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import json
import math

from aiohttp import web

from labsim.kube import apply, patch, tokens
from labsim.kube.handling import Handler, Target
from labsim.kube.resources import Resource
from labsim.kube.responses import json_response, success
from labsim.kube.selectors import match_label_selector, selector_string
from labsim.kube.store import StoreError


async def handle(handler: Handler, request: web.Request, target: Target) -> web.StreamResponse:
    store = handler.store
    await request.read()  # first: later reads return the cached body without suspending, so the
    # object read below is still current when it is written back
    obj = store.get(target.res, target.namespace, target.name or "")
    if obj is None:
        raise StoreError.not_found(target.res, target.name or "")
    sub, method = target.subresource, request.method
    if sub == "scale" and method == "GET":
        return json_response(scale_of(target.res, obj))
    if sub == "scale" and method in ("PUT", "PATCH"):
        return json_response(await _write_scale(handler, request, target, obj))
    if sub == "eviction" and method == "POST":
        evict(handler, obj, await handler.body(request, optional=True))
        return success()
    if sub == "binding" and method == "POST":
        body = await handler.body(request)
        obj["spec"]["nodeName"] = (body.get("target") or {}).get("name")
        store.update(obj)
        return success()
    if sub == "log" and method == "GET":
        return await _log(handler, request, obj)
    if sub == "token" and method == "POST":
        return json_response(_token(handler, obj, await handler.body(request)), 201)
    raise StoreError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


# -- scale ---------------------------------------------------------------------------------------
def _path(path: str) -> list[str]:
    return [p for p in path.strip(".").split(".") if p]


def _dig(obj: dict, path: str):
    node = obj
    for part in _path(path):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _paths(res: Resource) -> tuple[str, str, str]:
    return res.scale_paths or (".spec.replicas", ".status.replicas", "")


def scale_of(res: Resource, obj: dict) -> dict:
    spec_path, status_path, selector_path = _paths(res)
    meta = obj["metadata"]
    if selector_path:
        selector = _dig(obj, selector_path) or ""
    else:
        selector = selector_string((obj.get("spec") or {}).get("selector"))
    status = {"replicas": _dig(obj, status_path) or 0}
    if selector:
        status["selector"] = selector
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": _dig(obj, spec_path) or 0}, "status": status}


async def _write_scale(handler: Handler, request: web.Request, target: Target, obj: dict) -> dict:
    current = scale_of(target.res, obj)
    if request.method == "PUT":
        wanted = await handler.body(request)
    else:
        raw = await request.read()
        ctype = request.content_type
        if ctype == patch.JSON_PATCH:
            wanted = patch.json_patch(current, json.loads(raw))
        else:
            wanted = patch.merge_patch(current, json.loads(raw))
    rv = (wanted.get("metadata") or {}).get("resourceVersion")
    if rv and rv != obj["metadata"]["resourceVersion"]:
        raise StoreError.conflict(target.res, obj["metadata"]["name"])
    replicas = (wanted.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        raise StoreError.invalid(target.res, obj["metadata"]["name"],
                                 [("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")])
    before = copy.deepcopy(obj)
    node = obj
    parts = _path(_paths(target.res)[0])
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = replicas
    apply.record_update(before, obj, manager=handler.manager(request), group=target.res.group,
                        kind=target.res.kind, now=handler.store.now(), subresource="scale")
    return scale_of(target.res, handler.store.update(obj))


# -- eviction ------------------------------------------------------------------------------------
def _healthy(pod: dict) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _desired_healthy(pdb: dict, expected: int) -> int:
    spec = pdb.get("spec") or {}

    def count(value, up: bool) -> int:
        if isinstance(value, str) and value.endswith("%"):
            share = expected * int(value[:-1]) / 100
            return math.ceil(share) if up else math.floor(share)
        return int(value)

    if "minAvailable" in spec:
        return count(spec["minAvailable"], up=True)
    if "maxUnavailable" in spec:
        return expected - count(spec["maxUnavailable"], up=True)
    return 0


def evict(handler: Handler, pod: dict, options: dict) -> None:
    """Delete the pod unless a PodDisruptionBudget covering it allows no disruption (429)."""
    store = handler.store
    meta = pod["metadata"]
    pods_res = store.resource("v1", "Pod")
    if not meta.get("deletionTimestamp") and _healthy(pod):
        pdbs = store.list(store.resource("policy/v1", "PodDisruptionBudget"), meta["namespace"])
        labels = meta.get("labels") or {}
        for pdb in pdbs:
            if not match_label_selector((pdb.get("spec") or {}).get("selector"), labels):
                continue
            covered = [p for p in store.list(pods_res, meta["namespace"])
                       if match_label_selector(pdb["spec"]["selector"], p["metadata"].get("labels") or {})]
            healthy = sum(_healthy(p) for p in covered)
            if healthy - _desired_healthy(pdb, len(covered)) < 1:
                name = pdb["metadata"]["name"]
                raise StoreError(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's "
                                 "disruption budget.", details={"causes": [{
                                     "reason": "DisruptionBudget", "message": f"The disruption budget {name} needs "
                                     f"{_desired_healthy(pdb, len(covered))} healthy pods and has {healthy} currently"}]})
    delete_options = options.get("deleteOptions") or {}
    store.delete(pods_res, meta["namespace"], meta["name"], preconditions=delete_options.get("preconditions"))


# -- service account tokens ----------------------------------------------------------------------
def _token(handler: Handler, account: dict, request: dict) -> dict:
    spec = request.get("spec") or {}
    meta = account["metadata"]
    seconds = int(spec.get("expirationSeconds") or tokens.DEFAULT_SECONDS)
    token, expires = tokens.issue(handler.cluster.token, meta["namespace"], meta["name"], meta["uid"],
                                  audiences=spec.get("audiences") or [], seconds=seconds, now=handler.cluster.now())
    stamp = dt.datetime.fromtimestamp(expires, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "creationTimestamp": handler.store.now()},
            "spec": {**spec, "expirationSeconds": seconds}, "status": {"token": token, "expirationTimestamp": stamp}}


# -- logs ---------------------------------------------------------------------------------------
async def _log(handler: Handler, request: web.Request, pod: dict) -> web.StreamResponse:
    q = request.query
    names = [c["name"] for c in pod["spec"].get("containers") or []]
    every = names + [c["name"] for c in pod["spec"].get("initContainers") or []]
    container = q.get("container") or (names[0] if len(names) == 1 else None)
    pod_name = pod["metadata"]["name"]
    if container is None:
        raise StoreError(400, "BadRequest", f"a container name must be specified for pod {pod_name}, choose one "
                         f"of: [{' '.join(names)}]")
    if container not in every:
        raise StoreError(400, "BadRequest", f"container {container} is not valid for pod {pod_name}")
    previous = q.get("previous") == "true"
    restarted = int(_status(pod, container).get("restartCount") or 0) > 0  # a run ended: its log is there
    if _state(pod, container) in ("waiting", None) and not (previous or restarted):
        reason = ((_status(pod, container).get("state") or {}).get("waiting") or {}).get("reason", "ContainerCreating")
        raise StoreError(400, "BadRequest", f'container "{container}" in pod "{pod_name}" is waiting to start: '
                         f"{reason}")
    stamps = q.get("timestamps") == "true"
    tail = int(q["tailLines"]) if q.get("tailLines", "").isdigit() else None
    logs = handler.cluster.logs
    ns = pod["metadata"]["namespace"]
    lines = logs.read(pod, container, previous=previous)
    if lines is None:
        raise StoreError(400, "BadRequest", f'previous terminated container "{container}" in pod "{pod_name}" '
                         "not found")
    following = q.get("follow") == "true" and not previous and _state(pod, container) == "running"
    queue = logs.follow(ns, pod_name, container) if following else None
    since = _since(q, handler.cluster.now())
    if since is not None:  # the kubelet keeps a line stamped at or after it
        lines = [entry for entry in lines if _seconds(entry[0]) >= since]
    if tail is not None:
        lines = lines[-tail:] if tail else []
    if queue is None:
        return web.Response(body="".join(_line(entry, stamps) for entry in lines).encode(), content_type="text/plain")
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    try:
        await response.write("".join(_line(entry, stamps) for entry in lines).encode())
        await _follow(handler, response, pod, container, queue, stamps)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        logs.unfollow(ns, pod_name, container, queue)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def _follow(handler, response, pod: dict, container: str, queue: asyncio.Queue, stamps: bool) -> None:
    """Stream new lines until the container stops running, the pod goes or the server stops."""
    pods = handler.store.resource("v1", "Pod")
    meta = pod["metadata"]
    sub = handler.store.subscribe(pods, namespace=meta["namespace"])
    handler.watches.add(sub)
    try:
        while True:
            line = asyncio.ensure_future(queue.get())
            change = asyncio.ensure_future(sub.next_event())
            done, _ = await asyncio.wait({line, change}, return_when=asyncio.FIRST_COMPLETED)
            for task in (line, change):
                if task not in done:
                    task.cancel()
            if line in done:
                await response.write(_line(line.result(), stamps).encode())
            if change in done:
                event = change.result()
                if event is None:
                    return
                if event.object["metadata"]["name"] == meta["name"] and (
                        event.type == "DELETED" or _state(event.object, container) != "running"):
                    return
    finally:
        sub.close()
        handler.watches.discard(sub)


def _status(pod: dict, container: str) -> dict:
    status = pod.get("status") or {}
    every = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    return next((s for s in every if s.get("name") == container), {})


def _state(pod: dict, container: str) -> str | None:
    """running, terminated or waiting (None: no status yet)."""
    state = _status(pod, container).get("state") or {}
    return next(iter(state), None)


def _since(query, now: float) -> float | None:
    """``sinceTime`` (RFC 3339) or ``sinceSeconds`` (before now) as lab-clock seconds, or None."""
    if "sinceTime" in query:
        try:
            return _seconds(query["sinceTime"])
        except ValueError:
            raise StoreError(400, "BadRequest", f'parsing time "{query["sinceTime"]}" as "2006-01-02T15:04:05Z07:00": '
                             "cannot parse") from None
    if query.get("sinceSeconds", "").isdigit():
        return now - int(query["sinceSeconds"])
    return None


def _seconds(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _line(entry: tuple[str, str], stamps: bool) -> str:
    when, text = entry
    return (f"{when} {text}" if stamps else text) + "\n"
