"""Watches: a JSON stream of {"type", "object"} lines, as the real API server sends them.

resourceVersion says where to start (unset or "0": synthetic ADDED events for what exists now;
older than the kept history: an ERROR event with 410 Expired), timeoutSeconds ends the stream,
allowWatchBookmarks adds BOOKMARKs, and sendInitialEvents=true (the watch-list protocol helm 4
and client-go use) sends the current state then a BOOKMARK annotated k8s.io/initial-events-end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web

from labsim.kube import tables
from labsim.kube.handling import Handler, Target
from labsim.kube.selectors import parse_fields, parse_labels
from labsim.kube.store import StoreError

CONTENT_TYPE = "application/json;stream=watch"
DEFAULT_TIMEOUT = 1800.0
BOOKMARK_EVERY = 60.0


def _line(kind: str, obj: dict) -> bytes:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _bookmark(target: Target, rv: int, *, initial_end: bool = False) -> bytes:
    meta: dict = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return _line("BOOKMARK", {"kind": target.res.kind, "apiVersion": target.res.api_version, "metadata": meta})


async def serve(handler: Handler, request: web.Request, target: Target) -> web.StreamResponse:
    q = request.query
    store = handler.store
    label_ok, field_ok = parse_labels(q.get("labelSelector") or None), parse_fields(q.get("fieldSelector") or None)
    initial_events = q.get("sendInitialEvents") == "true"
    bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
    rv_text = q.get("resourceVersion") or ""
    since = int(rv_text) if rv_text.isdigit() and rv_text != "0" and not initial_events else None
    as_table = tables.wanted(request)  # `kubectl get -w`: every event's object is a one-row Table

    def shown(obj: dict) -> dict:
        obj = handler.versioned(obj, target.res)
        return tables.table(handler.cluster, target.res, [obj], request) if as_table else obj

    response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        sub = store.subscribe(target.res, namespace=target.namespace, since=since)
    except StoreError as exc:
        await response.write(_line("ERROR", exc.status()))
        return response
    handler.watches.add(sub)
    try:
        if since is None:
            # The state now, as ADDED events; the subscription (made above, synchronously) follows on.
            for obj in store.list(target.res, target.namespace):
                if label_ok(obj) and field_ok(obj):
                    await response.write(_line("ADDED", shown(obj)))
            if initial_events:
                await response.write(_bookmark(target, store.resource_version, initial_end=True))
        await _stream(handler, response, target, sub, lambda o: label_ok(o) and field_ok(o), shown, _timeout(q),
                      bookmarks)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        sub.close()
        handler.watches.discard(sub)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def _seen_as(event, matches) -> str | None:
    """The event a selector-filtered watch sees: an object entering the selection is ADDED,
    one leaving it DELETED, as the real watch cache reports them."""
    now = matches(event.object)
    if event.type != "MODIFIED" or event.previous is None:
        return event.type if now else None
    before = matches(event.previous)
    if now:
        return "MODIFIED" if before else "ADDED"
    return "DELETED" if before else None


def _timeout(query) -> float:
    try:
        return float(query.get("timeoutSeconds") or DEFAULT_TIMEOUT)
    except ValueError:
        return DEFAULT_TIMEOUT


async def _stream(handler, response, target, sub, matches, shown, timeout: float, bookmarks: bool) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_rv = handler.store.resource_version
    while (left := deadline - loop.time()) > 0:
        try:
            event = await asyncio.wait_for(sub.next_event(), min(left, BOOKMARK_EVERY))
        except TimeoutError:
            if bookmarks:
                await response.write(_bookmark(target, last_rv))
            continue
        if event is None:
            return
        last_rv = event.rv
        kind = _seen_as(event, matches)
        if kind:
            await response.write(_line(kind, shown(dict(event.object))))
    if bookmarks:
        await response.write(_bookmark(target, handler.store.resource_version))
