"""The garbage collector's share that deletion itself does not do: the store cascades a
delete to the dependents present at that moment, and this controller catches the rest, as the
real collector does from its graph: dependents whose owners are all gone (created in a race,
or restored from a snapshot) are deleted, dangling references next to a live owner are
dropped, and the ``foregroundDeletion`` and ``orphan`` finalizers are honoured."""

from __future__ import annotations

from labsim.kube.controllers.workqueue import Controller, Key
from labsim.kube.resources import Resource
from labsim.kube.store import StoreError

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"


class GarbageCollector(Controller):
    name = "garbage-collector-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self._checked: dict[str, tuple] = {}  # uid -> the owner uids last found alive

    def watches(self):
        return [(None, self._interesting)]

    def _interesting(self, event_type: str, obj: dict) -> list[Key]:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid", "")
        if event_type == "DELETED":  # its owners, if deleting in the foreground, may now go
            self._checked.pop(uid, None)
            return [(ref.get("apiVersion"), ref.get("kind"), meta.get("namespace"), ref.get("name"))
                    for ref in meta.get("ownerReferences") or ()]
        finalizing = meta.get("deletionTimestamp") and {FOREGROUND, ORPHAN} & set(meta.get("finalizers") or ())
        owners = tuple(ref.get("uid") for ref in meta.get("ownerReferences") or ())
        if not finalizing and (not owners or self._checked.get(uid) == owners):
            return []  # owners already checked: their deletion cascades in the store
        return [(obj.get("apiVersion"), obj.get("kind"), meta.get("namespace"), meta["name"])]

    async def reconcile(self, key: Key) -> None:
        api_version, kind, namespace, name = key
        res = self.store.catalog.by_kind(api_version, kind)
        obj = self.store.get(res, namespace, name) if res else None
        if obj is None:
            return
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []):
            self._foreground(res, obj)
        elif meta.get("deletionTimestamp") and ORPHAN in (meta.get("finalizers") or []):
            self._orphan(res, obj)
        elif meta.get("ownerReferences"):
            self._check_owners(res, obj)

    def _owner_alive(self, ref: dict, namespace: str | None) -> bool:
        res = self.store.catalog.by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
        if res is None:
            return True  # an owner of a kind this cluster does not serve: leave it alone, as the real GC
        owner = self.store.get(res, namespace if res.namespaced else None, ref.get("name", ""))
        return owner is not None and owner["metadata"].get("uid") == ref.get("uid")

    def _check_owners(self, res: Resource, obj: dict) -> None:
        meta = obj["metadata"]
        refs = meta["ownerReferences"]
        alive = [ref for ref in refs if self._owner_alive(ref, meta.get("namespace"))]
        if len(alive) == len(refs):
            self._checked[meta["uid"]] = tuple(ref.get("uid") for ref in refs)
            return
        if not alive:
            self.store.delete(res, meta.get("namespace"), meta["name"])
            return
        meta["ownerReferences"] = alive
        self.store.update(obj)

    def _dependents(self, uid: str) -> list[tuple[Resource, dict]]:
        found = []
        for store_key, obj in list(self.store.all_objects()):
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or ()):
                versions = self.store.catalog.versions_of(store_key)
                if versions:
                    found.append((versions[0], obj))
        return found

    def _foreground(self, res: Resource, owner: dict) -> None:
        """Delete the dependents first; the owner goes once none is left."""
        dependents = self._dependents(owner["metadata"]["uid"])
        for dep_res, dep in dependents:
            if not dep["metadata"].get("deletionTimestamp"):
                self.store.delete(dep_res, dep["metadata"].get("namespace"), dep["metadata"]["name"],
                                  propagation="Foreground")
        uid = owner["metadata"]["uid"]
        blocking = [dep for _, dep in self._dependents(uid) if any(
            ref.get("uid") == uid and ref.get("blockOwnerDeletion") for ref in dep["metadata"]["ownerReferences"])]
        if not blocking:  # dependents that do not block their owner's deletion are not waited for
            self._drop_finalizer(owner, FOREGROUND)

    def _orphan(self, res: Resource, owner: dict) -> None:
        uid = owner["metadata"]["uid"]
        for _, dep in self._dependents(uid):
            dep = {**dep, "metadata": {**dep["metadata"], "ownerReferences": [
                r for r in dep["metadata"]["ownerReferences"] if r.get("uid") != uid]}}
            if not dep["metadata"]["ownerReferences"]:
                del dep["metadata"]["ownerReferences"]
            self.store.update(dep)
        self._drop_finalizer(owner, ORPHAN)

    def _drop_finalizer(self, obj: dict, finalizer: str) -> None:
        obj["metadata"]["finalizers"] = [f for f in obj["metadata"]["finalizers"] if f != finalizer]
        try:
            self.store.update(obj)
        except StoreError as err:
            if err.code != 404:
                raise

