"""ControllerRevisions: the template history of StatefulSets and DaemonSets, which
``kubectl rollout history`` lists and ``kubectl rollout undo`` goes back to."""

from __future__ import annotations

import copy
from typing import Any

from labsim.kube.controllers.pods import controlled_by, controller_ref


def ensure_revision(store: Any, owner: dict, name: str) -> dict:
    """The revision ``name`` holding ``owner``'s current template: created with the next number,
    or renumbered as the latest when an earlier template comes back (a rollback)."""
    revisions = store.resource("apps/v1", "ControllerRevision")
    ns = owner["metadata"]["namespace"]
    history = [r for r in store.list(revisions, ns, labels=owner["spec"]["selector"].get("matchLabels"))
               if controlled_by(r, owner)]
    latest = max((int(r.get("revision", 0)) for r in history), default=0)
    current = next((r for r in history if r["metadata"]["name"] == name), None)
    if current is None:
        return store.create({
            "apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": name, "namespace": ns,
                         "labels": dict(owner["spec"]["selector"].get("matchLabels") or {}),
                         "ownerReferences": [controller_ref(owner)]},
            "data": {"spec": {"template": {**copy.deepcopy(owner["spec"]["template"]), "$patch": "replace"}}},
            "revision": latest + 1,
        })
    if int(current.get("revision", 0)) < latest:
        current["revision"] = latest + 1
        current = store.update(current)
    return current
