"""The namespace controller: a Terminating namespace is emptied, then removed.

The store does the work as the deletion happens (contents deleted, the namespace dropped once
nothing is left, objects with finalizers waited for). This controller drives namespaces that
are Terminating with nothing in motion, e.g. restored from a snapshot taken mid-deletion.
Its status conditions (what content and finalizers remain) are written by the store (nsconditions).
"""

from __future__ import annotations

from labsim.kube.controllers.workqueue import Controller, Key


class NamespaceController(Controller):
    name = "namespace-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.namespaces = self.res("v1", "Namespace")

    def watches(self):
        return [(self.namespaces, _terminating)]

    async def reconcile(self, key: Key) -> None:
        space = self.store.get(self.namespaces, None, key)
        if space is not None and space["metadata"].get("deletionTimestamp"):
            self.store.delete(self.namespaces, None, key)


def _terminating(event_type: str, space: dict) -> list[Key]:
    meta = space["metadata"]
    return [meta["name"]] if event_type != "DELETED" and meta.get("deletionTimestamp") else []
