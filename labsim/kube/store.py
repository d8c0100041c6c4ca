"""The object store of one cluster: what etcd plus the API server's registry do.

Objects live in memory per (group, plural), keyed by (namespace, name); every write gets the
next resourceVersion and is published to subscribers (watches, controllers) and kept in a
bounded history so watches can resume from a resourceVersion (or get 410 Gone).
Admission (defaults, validation) runs on create and update. All calls happen on the cluster's
event loop thread; returned objects are copies the caller may change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from labsim.kube import admission, nsconditions
from labsim.kube.errors import StoreError
from labsim.kube.resources import Catalog, Resource
from labsim.kube.selectors import parse_fields, parse_labels

HISTORY = 10_000
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's rand.String: no vowels, no look-alikes
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_KEY = ("", "namespaces")
POD_KEY = ("", "pods")
FOREGROUND = "foregroundDeletion"


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: tuple[str, str]
    namespace: str
    object: dict
    previous: dict | None = None  # the object before a MODIFIED event (watches with selectors need it)


class Subscription:
    """Events of one resource (or all), in order; ``async for type, obj in sub``."""

    def __init__(self, store: Store, key: tuple[str, str] | None, namespace: str | None) -> None:
        self._store, self.key, self.namespace = store, key, namespace
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.closed = False

    def wants(self, event: Event) -> bool:
        return (self.key is None or event.key == self.key) and (
            not self.namespace or event.namespace == self.namespace)

    def _push(self, event: Event | None) -> None:
        self._queue.put_nowait(event)

    async def next_event(self) -> Event | None:
        """The next event, or None once closed."""
        if self.closed and self._queue.empty():
            return None
        return await self._queue.get()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[str, dict]:
        event = await self.next_event()
        if event is None:
            raise StopAsyncIteration
        return event.type, _clone(event.object)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._store._subs.discard(self)
            self._push(None)


def _clone(value):
    """A deep copy of JSON data (several times faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _meta(obj: dict) -> dict:
    return obj.setdefault("metadata", {})


class Store:
    def __init__(self, clock=None) -> None:
        self.clock = clock
        self.catalog = Catalog()
        self._data: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        self._rv = 0
        self._history: deque[Event] = deque(maxlen=HISTORY)
        self._subs: set[Subscription] = set()
        self._changed: dict[tuple[str, str], int] = {}  # per resource key, the rv of its last event
        self._emptying: set[str] = set()  # namespaces being swept by their deletion

    # -- lookups ------------------------------------------------------------------------------
    def resource(self, api_version: str, kind: str) -> Resource:
        res = self.catalog.by_kind(api_version, kind)
        if res is None:
            raise StoreError(404, "NotFound", f'no matches for kind "{kind}" in version "{api_version}"')
        return res

    def resource_for(self, plural: str, group: str = "", version: str | None = None) -> Resource:
        res = self.catalog.by_plural(group, version, plural)
        if res is None:
            raise StoreError(404, "NotFound", f"the server could not find the requested resource ({plural})")
        return res

    @property
    def resource_version(self) -> int:
        return self._rv

    def now(self, later: float = 0) -> str:
        """The lab clock's time (plus ``later`` seconds) as the API writes timestamps (RFC 3339, seconds, UTC)."""
        when = self.clock.now() if self.clock is not None else dt.datetime.now(dt.UTC)
        if isinstance(when, (int, float)):
            when = dt.datetime.fromtimestamp(when, dt.UTC)
        return (when + dt.timedelta(seconds=later)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def get(self, res: Resource, namespace: str | None, name: str) -> dict | None:
        obj = self._data.get(res.key, {}).get(((namespace or "default") if res.namespaced else "", name))
        return _clone(obj) if obj is not None else None

    def list(self, res: Resource, namespace: str | None = None, *, labels: dict[str, str] | str | None = None,
             fields: dict[str, str] | str | None = None) -> list[dict]:
        return [_clone(obj) for obj in self._select(res, namespace, labels, fields)]

    def _select(self, res, namespace, labels, fields) -> Iterator[dict]:
        label_ok, field_ok = parse_labels(labels), parse_fields(fields)
        items = self._data.get(res.key, {})
        for key in sorted(items):
            if namespace and res.namespaced and key[0] != namespace:
                continue
            obj = items[key]
            if label_ok(obj) and field_ok(obj):
                yield obj

    def all_objects(self) -> Iterator[tuple[tuple[str, str], dict]]:
        for key, items in self._data.items():
            for obj in items.values():
                yield key, obj

    # -- writes -------------------------------------------------------------------------------
    def create(self, obj: dict, *, dry_run: bool = False) -> dict:
        """Store a new object (admission first); ``dry_run`` returns what would be stored."""
        res = self.resource(obj.get("apiVersion", ""), obj.get("kind", ""))
        obj = _clone(obj)
        meta = _meta(obj)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_ALPHABET, k=5))
        name = meta.get("name") or ""
        ns = self._namespace_for_create(res, meta)
        if (ns, name) in self._data.get(res.key, {}):
            raise StoreError.already_exists(res, name)
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=self.now())
        if _tracks_generation(res):
            meta["generation"] = 1
        admission.admit(self, res, obj, None)
        self._check_valid(res, obj)
        if dry_run:
            return obj
        self._write(res, ns, name, obj, "ADDED")
        self._after_write(res, obj)
        return _clone(self._data[res.key][(ns, name)])

    def _namespace_for_create(self, res: Resource, meta: dict) -> str:
        if not res.namespaced:
            meta.pop("namespace", None)
            return ""
        ns = meta.setdefault("namespace", "default")
        space = self._data.get(NAMESPACE_KEY, {}).get(("", ns))
        if space is None:
            raise StoreError(404, "NotFound", f'namespaces "{ns}" not found',
                             details={"name": ns, "kind": "namespaces"})
        if (space.get("metadata") or {}).get("deletionTimestamp"):
            raise StoreError(403, "Forbidden", f'{res.plural} "{meta.get("name", "")}" is forbidden: unable to '
                             f"create new content in namespace {ns} because it is being terminated")
        return ns

    def _check_valid(self, res: Resource, obj: dict, old: dict | None = None) -> None:
        name = obj["metadata"].get("name") or ""
        causes = admission.validate(self, res, obj, old)
        if causes:
            raise StoreError.invalid(res, name, causes)

    def update(self, obj: dict, *, subresource: str | None = None, dry_run: bool = False) -> dict:
        res = self.resource(obj.get("apiVersion", ""), obj.get("kind", ""))
        new = _clone(obj)
        meta = _meta(new)
        ns = (meta.get("namespace") or "default") if res.namespaced else ""
        name = meta.get("name") or ""
        old = self._data.get(res.key, {}).get((ns, name))
        if old is None:
            raise StoreError.not_found(res, name)
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and str(wanted_rv) != old["metadata"]["resourceVersion"]:
            raise StoreError.conflict(res, name)
        new = self._merge_update(res, old, new, subresource)
        if new == old:
            return _clone(old)  # a no-op write keeps the resourceVersion, as the real server does
        if dry_run:
            self._check_valid(res, new, old)
            return new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(res, ns, name, new)
        self._check_valid(res, new, old)
        self._write(res, ns, name, new, "MODIFIED")
        self._after_write(res, new)
        return _clone(self._data[res.key][(ns, name)])

    def _merge_update(self, res: Resource, old: dict, new: dict, subresource: str | None) -> dict:
        """The object an update stores: which parts the caller may change depends on the subresource."""
        if subresource == "status":
            merged = _clone(old)
            merged["status"] = new.get("status", {})
            admission.admit(self, res, merged, old)
            return merged
        if subresource == "finalize":
            merged = _clone(old)
            merged.setdefault("spec", {})["finalizers"] = (new.get("spec") or {}).get("finalizers") or []
            if not merged["spec"]["finalizers"] and merged["metadata"].get("deletionTimestamp"):
                merged["metadata"].pop("finalizers", None)
            return merged
        meta, old_meta = new["metadata"], old["metadata"]
        for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "generation", "resourceVersion"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if res.namespaced:
            meta["namespace"] = old_meta.get("namespace")
        if res.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        admission.admit(self, res, new, old)
        if _tracks_generation(res) and _spec_of(new) != _spec_of(old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        return new

    def delete(self, res: Resource, namespace: str | None, name: str, *, propagation: str = "Background",
               preconditions: dict | None = None, grace: int | None = None) -> dict | None:
        """Delete (or, with finalizers, mark for deletion) an object; None if it did not exist.
        Dependents (ownerReferences) are deleted once it is gone, or orphaned with propagation
        "Orphan", or first with "Foreground". A pod on a node is deleted gracefully (``grace``
        seconds, else its terminationGracePeriodSeconds): see ``_mark_graceful``."""
        ns = (namespace or "default") if res.namespaced else ""
        obj = self._data.get(res.key, {}).get((ns, name))
        if obj is None:
            return None
        meta = obj["metadata"]
        pre = preconditions or {}
        if (pre.get("uid") and pre["uid"] != meta["uid"]) or (
                pre.get("resourceVersion") and str(pre["resourceVersion"]) != meta["resourceVersion"]):
            raise StoreError.conflict(res, name)
        if propagation == "Foreground" and res.key != NAMESPACE_KEY and self._dependents(meta["uid"]):
            return self._mark_foreground(res, ns, name, obj)
        if propagation == "Orphan":
            self._orphan_dependents(meta["uid"])
        if res.key == NAMESPACE_KEY:
            return self._delete_namespace(obj)
        if res.key == POD_KEY and _graceful(obj, grace):
            return self._mark_graceful(res, ns, name, obj, grace)
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                marked = _clone(obj)
                marked["metadata"].update(deletionTimestamp=self.now(), deletionGracePeriodSeconds=0)
                self._write(res, ns, name, marked, "MODIFIED")
                return _clone(marked)
            return _clone(obj)  # its dependents wait until it is really gone
        return self._remove(res, ns, name, obj)

    def _mark_graceful(self, res: Resource, ns: str, name: str, obj: dict, grace: int | None) -> dict:
        """A pod's graceful deletion, as the API server does it: marked now (deletionTimestamp at
        the end of its grace period), removed by its node's kubelet once its containers have
        stopped, so a StatefulSet's replacement never runs beside its predecessor."""
        if obj["metadata"].get("deletionTimestamp"):
            return _clone(obj)  # already on its way out
        seconds = _grace_seconds(obj, grace)
        marked = _clone(obj)
        marked["metadata"].update(deletionTimestamp=self.now(later=seconds), deletionGracePeriodSeconds=seconds)
        self._write(res, ns, name, marked, "MODIFIED")
        return _clone(marked)

    def _remove(self, res: Resource, ns: str, name: str, obj: dict) -> dict:
        """Drop an object; its dependents go too (in the background), as the collector does."""
        obj = _clone(obj)
        del self._data[res.key][(ns, name)]
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._publish(Event(self._rv, "DELETED", res.key, ns, obj))
        if obj["metadata"].get("uid"):
            self._delete_dependents(obj["metadata"]["uid"], "Background")
        if res.key == CRD_KEY:
            self._drop_crd(obj)
        if ns:
            self._maybe_finish_namespace(ns)
        return _clone(obj)

    def _dependents(self, uid: str) -> list[tuple[Resource, dict]]:
        found = []
        for key, obj in list(self.all_objects()):
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or []):
                versions = self.catalog.versions_of(key)
                if versions:
                    found.append((versions[0], obj))
        return found

    def _mark_foreground(self, res: Resource, ns: str, name: str, obj: dict) -> dict:
        """A foreground deletion: the owner stays, marked for deletion with the ``foregroundDeletion``
        finalizer, until the garbage collector has deleted its blocking dependents. (One without
        dependents goes at once: the collector would drop the finalizer straight away.)"""
        marked = _clone(obj)
        meta = marked["metadata"]
        if FOREGROUND not in (meta.get("finalizers") or []):
            meta["finalizers"] = [*(meta.get("finalizers") or []), FOREGROUND]
        if not meta.get("deletionTimestamp"):
            meta.update(deletionTimestamp=self.now(), deletionGracePeriodSeconds=0)
        if marked != obj:
            self._write(res, ns, name, marked, "MODIFIED")
        return _clone(marked)

    def _delete_dependents(self, uid: str, propagation: str) -> None:
        for res, obj in self._dependents(uid):
            refs = obj["metadata"]["ownerReferences"]
            if all(ref.get("uid") == uid or not self._uid_exists(ref.get("uid")) for ref in refs):
                self.delete(res, obj["metadata"].get("namespace"), obj["metadata"]["name"], propagation=propagation)

    def _orphan_dependents(self, uid: str) -> None:
        for res, obj in self._dependents(uid):
            freed = _clone(obj)
            freed["metadata"]["ownerReferences"] = [r for r in obj["metadata"]["ownerReferences"]
                                                    if r.get("uid") != uid]
            if not freed["metadata"]["ownerReferences"]:
                del freed["metadata"]["ownerReferences"]
            ns, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
            self._write(res, ns, name, freed, "MODIFIED")

    def _uid_exists(self, uid: str | None) -> bool:
        return any(obj["metadata"].get("uid") == uid for _, obj in self.all_objects())

    def _delete_namespace(self, space: dict) -> dict:
        """Namespace deletion, as the namespace controller does it: mark Terminating, delete the
        contents, and drop the namespace once nothing is left."""
        name = space["metadata"]["name"]
        res = self.catalog.by_plural("", "v1", "namespaces")
        if not space["metadata"].get("deletionTimestamp"):
            marked = _clone(space)
            marked["metadata"]["deletionTimestamp"] = self.now()
            marked.setdefault("status", {})["phase"] = "Terminating"
            self._write(res, "", name, marked, "MODIFIED")
        self._emptying.add(name)  # its conditions are reported once, after the sweep
        try:
            for key, items in list(self._data.items()):
                versions = self.catalog.versions_of(key)
                if not versions or not versions[0].namespaced:
                    continue
                for (ns, obj_name) in [k for k in items if k[0] == name]:
                    self.delete(versions[0], ns, obj_name)
        finally:
            self._emptying.discard(name)
        self._maybe_finish_namespace(name)
        current = self._data[NAMESPACE_KEY].get(("", name))
        return _clone(current) if current is not None else _clone(space)

    def _report_termination(self, space: dict) -> None:
        """Write the conditions of a Terminating namespace that cannot go yet."""
        name = space["metadata"]["name"]
        remaining = []
        for key, items in self._data.items():
            if key != NAMESPACE_KEY:
                qualified = f"{key[1]}.{key[0]}"
                remaining += [(qualified, obj) for (ns, _), obj in items.items() if ns == name]
        status = space.get("status") or {}
        wanted = nsconditions.conditions(remaining, status.get("conditions") or [], self.now())
        if wanted != status.get("conditions"):
            marked = _clone(space)
            marked.setdefault("status", {})["conditions"] = wanted
            self._write(self.catalog.by_plural("", "v1", "namespaces"), "", name, marked, "MODIFIED")

    def _maybe_finish_namespace(self, name: str) -> None:
        space = self._data.get(NAMESPACE_KEY, {}).get(("", name))
        if space is None or not space["metadata"].get("deletionTimestamp"):
            return
        if any(key[0] == name for key_res, items in self._data.items() for key in items
               if key_res != NAMESPACE_KEY) or space["metadata"].get("finalizers"):
            if name not in self._emptying:
                self._report_termination(space)
            return
        self._remove(self.catalog.by_plural("", "v1", "namespaces"), "", name, space)

    # -- internals ----------------------------------------------------------------------------
    def _write(self, res: Resource, ns: str, name: str, obj: dict, kind: str) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        items = self._data.setdefault(res.key, {})
        previous = items.get((ns, name))
        items[(ns, name)] = obj
        self._publish(Event(self._rv, kind, res.key, ns, obj, previous))

    def changed(self, key: tuple[str, str]) -> int:
        """The resourceVersion of the last write to a resource's objects (0 if none): caches of
        one kind (e.g. the RBAC authorizer's index) know when to rebuild."""
        return self._changed.get(key, 0)

    def _publish(self, event: Event) -> None:
        self._changed[event.key] = event.rv
        self._history.append(event)
        for sub in list(self._subs):
            if sub.wants(event):
                sub._push(event)

    def _after_write(self, res: Resource, obj: dict) -> None:
        if res.key == CRD_KEY:
            self._establish_crd(obj)

    def _establish_crd(self, crd: dict) -> None:
        """Register the CRD's resources and report it Established, as the apiextensions server does."""
        resources = self.catalog.register_crd(crd)
        names = (crd.get("spec") or {}).get("names") or {}
        accepted = {"plural": names.get("plural"), "singular": names.get("singular") or names.get("kind", "").lower(),
                    "kind": names.get("kind"), "listKind": names.get("listKind") or f"{names.get('kind')}List"}
        for extra in ("shortNames", "categories"):
            if names.get(extra):
                accepted[extra] = names[extra]
        now = self.now()
        conditions = [{"type": t, "status": "True", "lastTransitionTime": now, "reason": r, "message": m}
                      for t, r, m in (("NamesAccepted", "NoConflicts", "no conflicts found"),
                                      ("Established", "InitialNamesAccepted", "the initial names have been accepted"))]
        status = {"conditions": conditions, "acceptedNames": accepted,
                  "storedVersions": [r.version for r in resources if r.storage] or [r.version for r in resources]}
        if crd.get("status", {}).get("acceptedNames") != accepted or not crd.get("status", {}).get("conditions"):
            done = _clone(crd)
            done["status"] = status
            self._write(self.catalog.by_plural(CRD_KEY[0], None, CRD_KEY[1]), "", crd["metadata"]["name"], done, "MODIFIED")

    def _drop_crd(self, crd: dict) -> None:
        spec = crd.get("spec") or {}
        key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        for (ns, name), obj in list(self._data.get(key, {}).items()):
            self._remove(self.catalog.versions_of(key)[0], ns, name, obj)
        self._data.pop(key, None)
        self.catalog.unregister(key)

    # -- watching -----------------------------------------------------------------------------
    def subscribe(self, res: Resource | None = None, *, namespace: str | None = None,
                  since: int | None = None) -> Subscription:
        """Events from now on (or replayed from after ``since``; 410 Gone if that is compacted)."""
        sub = Subscription(self, res.key if res else None, namespace)
        if since is not None and since < self._rv:
            oldest = self._history[0].rv if self._history else self._rv + 1
            if since < oldest - 1:
                raise StoreError(410, "Expired", f"too old resource version: {since} ({oldest - 1})")
            for event in self._history:
                if event.rv > since and sub.wants(event):
                    sub._push(event)
        self._subs.add(sub)
        return sub

    def compact(self) -> None:
        """Forget the event history up to now, as etcd compaction does: older watches get 410 Gone."""
        self._history.clear()

    # -- etcd snapshots -----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        objects = [obj for _, obj in self.all_objects()]
        return json.dumps({"resourceVersion": self._rv, "objects": objects}, separators=(",", ":")).encode()

    def restore(self, data: bytes) -> None:
        """Replace the whole state; watchers see the difference as events with new resourceVersions."""
        doc = json.loads(data)
        before = {(k, key): obj for k, items in self._data.items() for key, obj in items.items()}
        self._data = {}
        self.catalog = Catalog()
        objects = doc.get("objects") or []
        for obj in sorted(objects, key=lambda o: o.get("kind") != "CustomResourceDefinition"):
            if obj.get("kind") == "CustomResourceDefinition":
                self.catalog.register_crd(obj)
            res = self.catalog.by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
            if res is None:
                continue
            ns = obj["metadata"].get("namespace", "") if res.namespaced else ""
            self._data.setdefault(res.key, {})[(ns, obj["metadata"]["name"])] = obj
        self._rv = max(self._rv, int(doc.get("resourceVersion", 0)))
        self._history.clear()
        after = {(k, key): obj for k, items in self._data.items() for key, obj in items.items()}
        for ident, obj in before.items():
            if ident not in after:
                self._rv += 1
                gone = _clone(obj)
                gone["metadata"]["resourceVersion"] = str(self._rv)
                self._publish(Event(self._rv, "DELETED", ident[0], ident[1][0], gone))
        for ident, obj in after.items():
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._publish(Event(self._rv, "MODIFIED" if ident in before else "ADDED", ident[0], ident[1][0], obj))


def _tracks_generation(res: Resource) -> bool:
    return res.has_status or res.schema is not None or res.key == CRD_KEY


def _spec_of(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _grace_seconds(pod: dict, grace: int | None) -> int:
    return int((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)) if grace is None else grace


def _graceful(pod: dict, grace: int | None) -> bool:
    """Whether a pod's deletion waits for its kubelet: not when it is on no node, has finished,
    or is deleted with grace 0 (``--force --grace-period=0``, or its kubelet saying it has stopped)."""
    phase = (pod.get("status") or {}).get("phase")
    return bool((pod.get("spec") or {}).get("nodeName")) and phase not in ("Succeeded", "Failed") \
        and _grace_seconds(pod, grace) > 0


__all__ = ["Event", "Store", "StoreError", "Subscription"]

