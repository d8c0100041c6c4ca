"""The ServiceAccount plugin's check: a pod may only run as a ServiceAccount of its namespace
that exists (403 as the real plugin words it). The ``default`` account is not checked: the
twin's serviceaccount controller creates it just after its namespace, and a pod created in that
instant would be refused only by the race, not by its manifest."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labsim.kube.errors import StoreError
from labsim.kube.resources import Resource

if TYPE_CHECKING:
    from labsim.kube.store import Store


def validate(store: Store, res: Resource, obj: dict, old: dict | None) -> None:
    if old is not None or (res.group, res.kind) != ("", "Pod"):
        return
    account = (obj.get("spec") or {}).get("serviceAccountName") or "default"
    namespace = obj["metadata"].get("namespace") or "default"
    if account == "default" or store.get(store.resource("v1", "ServiceAccount"), namespace, account):
        return
    name = obj["metadata"].get("name", "")
    raise StoreError(403, "Forbidden", f'pods "{name}" is forbidden: error looking up service account '
                     f'{namespace}/{account}: serviceaccount "{account}" not found',
                     details={"name": name, "kind": "pods"})
