"""Plain Kubernetes objects (IPAddressPool, ClusterIssuer...) applied with server-side apply.

``plan`` asks the API server what an apply would do (a dry-run apply, as ``kubectl diff``) and
compares it with the live object, so defaults and other managers' fields never show as changes.
``apply`` performs exactly the plan with field manager ``labkit``. Every object carries the label
``labkit.io/applied-by: <set>``; an object of the set that the lab file no longer names is pruned,
but only if its managedFields show labkit applied it: an object someone else made, even with the
label copied onto it, is never touched.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError, ResourceNotFoundError

from labkit.changes import Change, Plan, StepTimer, untimed
from labkit.errors import LabError

MANAGER = "labkit"
APPLIED_BY = "labkit.io/applied-by"
# What the API server keeps about an object that is not its content.
_BOOKKEEPING = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp")


class ManifestError(LabError):
    """The API server refused an object, or its kind is not served (a CRD not installed yet)."""


@dataclass(frozen=True)
class ObjectPlan:
    """One object: create, update (with the diff of its content), unchanged, or delete (prune)."""

    kind: str
    name: str
    namespace: str | None
    action: str
    diff: str = ""
    desired: dict = field(default_factory=dict, compare=False, repr=False)
    api_version: str = ""

    @property
    def target(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"

    def change(self) -> Change:
        detail = {"create": "absent", "delete": "no longer in the lab file (applied by labkit)",
                  "unchanged": "as applied"}.get(self.action, _changed_keys(self.diff))
        return Change(self.target, self.action, detail)


def _changed_keys(diff: str) -> str:
    lines = [line[1:].strip() for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    return "differs: " + "; ".join(lines[:4]) + (" ..." if len(lines) > 4 else "")


# The library caches discovery in /tmp/osrcp-<md5 of the server address>.json, shared by every
# process: a lab rebuilt at the same address (or a CRD deleted since) would be planned against kinds
# it no longer serves, and each address leaves a file behind. A path that cannot exist turns it off
# (the library skips a cache it cannot read or write).
NO_DISCOVERY_CACHE = os.path.join(os.devnull, "labkit-discovery")


def dynamic(api: client.ApiClient) -> DynamicClient:
    """A dynamic client that asks the API server what it serves now, and writes no cache file."""
    return DynamicClient(api, cache_file=NO_DISCOVERY_CACHE)


def labelled(obj: dict, set_name: str) -> dict:
    """The object with the label that names the set it belongs to (for pruning)."""
    out = copy.deepcopy(obj)
    out.setdefault("metadata", {}).setdefault("labels", {})[APPLIED_BY] = set_name
    return out


def plan(api: client.ApiClient, set_name: str, objects: list[dict], prune_kinds: Iterable[tuple[str, str]] = ()) -> Plan[ObjectPlan]:
    """Each object against the live one; then the set's objects of these kinds (and of
    ``prune_kinds``, ``(apiVersion, kind)``) that are no longer named, to delete."""
    dyn = dynamic(api)
    items = [plan_object(dyn, labelled(obj, set_name)) for obj in objects]
    kinds = dict.fromkeys([(o["apiVersion"], o["kind"]) for o in objects] + list(prune_kinds))
    wanted = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects}
    for api_version, kind in kinds:
        for live in _owned(dyn, set_name, api_version, kind):
            meta = live["metadata"]
            if (kind, meta.get("namespace"), meta["name"]) not in wanted:
                items.append(ObjectPlan(kind, meta["name"], meta.get("namespace"), "delete", api_version=api_version))
    return Plan(items)


def plan_object(dyn: DynamicClient, obj: dict) -> ObjectPlan:
    meta = obj["metadata"]
    base = ObjectPlan(obj["kind"], meta["name"], meta.get("namespace"), "create", desired=obj,
                      api_version=obj["apiVersion"])
    if not served(dyn, obj["apiVersion"], obj["kind"]):
        return base  # its CRD comes with a chart planned before it (applying fails if it did not)
    res = resource(dyn, obj["apiVersion"], obj["kind"])
    try:
        live = res.get(name=meta["name"], namespace=meta.get("namespace")).to_dict()
    except NotFoundError:
        return base
    except DynamicApiError as exc:
        raise _refused(base.target, exc) from None
    would = server_side_apply(res, obj, dry_run=True)
    if content(would) == content(live):
        return ObjectPlan(**{**base.__dict__, "action": "unchanged"})
    return ObjectPlan(**{**base.__dict__, "action": "update", "diff": diff(content(live), content(would), base.target)})


def content(obj: dict) -> dict:
    """An object without the server's bookkeeping (what a plan compares)."""
    out = copy.deepcopy(obj)
    for key in _BOOKKEEPING:
        out.get("metadata", {}).pop(key, None)
    out.pop("status", None)
    if out.get("kind") == "Secret":  # compared by digest: a plan never shows a Secret's value
        out["data"] = {k: "sha256:" + hashlib.sha256(str(v).encode()).hexdigest()[:16]
                       for k, v in (out.get("data") or {}).items()}
    return out


def diff(before: object, after: object, name: str) -> str:
    """A unified diff of two documents as YAML."""
    def lines(doc: object) -> list[str]:
        return yaml.safe_dump(doc, sort_keys=True).splitlines(keepends=True) if doc not in (None, {}) else []

    return "".join(difflib.unified_diff(lines(before), lines(after), f"{name} (live)", f"{name} (lab file)"))


def apply(api: client.ApiClient, plan_: Plan[ObjectPlan], *, dry_run: bool = False,
          step: StepTimer = untimed) -> list[Change]:
    """Perform the plan: apply what is absent or differs, delete what was pruned. Returns what was
    done (a dry run: nothing)."""
    if dry_run:
        return []
    dyn = dynamic(api)
    done = []
    for item in plan_.items:
        if not item.change().is_change:
            continue
        res = resource(dyn, item.api_version, item.kind)
        with step(f"{item.action} {item.kind}", item.target):
            if item.action == "delete":
                _delete(res, item)
            else:
                server_side_apply(res, item.desired)
        done.append(item.change())
    return done


def _delete(res, item: ObjectPlan) -> None:
    try:
        res.delete(name=item.name, namespace=item.namespace)
    except NotFoundError:
        pass  # gone already: what the plan wanted
    except DynamicApiError as exc:
        raise _refused(item.target, exc) from None


def server_side_apply(res, obj: dict, *, dry_run: bool = False) -> dict:
    meta = obj["metadata"]
    try:
        # force: the lab file is the authority over the fields it names (kubectl apply --force-conflicts)
        return res.server_side_apply(body=obj, name=meta["name"], namespace=meta.get("namespace"),
                                     field_manager=MANAGER, force_conflicts=True,
                                     **({"dry_run": "All"} if dry_run else {})).to_dict()
    except DynamicApiError as exc:
        raise _refused(f"{obj['kind']}/{meta['name']}", exc) from None


def _owned(dyn: DynamicClient, set_name: str, api_version: str, kind: str) -> list[dict]:
    """Objects of the kind labelled as the set's AND applied by labkit (managedFields)."""
    if not served(dyn, api_version, kind):
        return []
    res = resource(dyn, api_version, kind)
    try:
        found = res.get(label_selector=f"{APPLIED_BY}={set_name}").to_dict()["items"]
    except DynamicApiError as exc:
        raise _refused(f"list {kind}", exc) from None
    return [o for o in found if applied_by_labkit(o)]


def applied_by_labkit(obj: dict) -> bool:
    return any(m.get("manager") == MANAGER and m.get("operation") == "Apply"
               for m in obj["metadata"].get("managedFields") or [])


def _lookup(dyn: DynamicClient, api_version: str, kind: str):
    # The core group's "v1" names no group: without its prefix the library looks for the kind in
    # every group that serves a v1 too, and asks each one's discovery (16 requests in the lab).
    return dyn.resources.get(prefix="apis" if "/" in api_version else "api", api_version=api_version, kind=kind)


def served(dyn: DynamicClient, api_version: str, kind: str) -> bool:
    try:
        _lookup(dyn, api_version, kind)
    except ResourceNotFoundError:  # (discovery is asked again on a miss: a CRD installed since is found)
        return False
    return True


def resource(dyn: DynamicClient, api_version: str, kind: str):
    try:
        return _lookup(dyn, api_version, kind)
    except ResourceNotFoundError:
        raise ManifestError(f"the API server does not serve {kind} ({api_version}); install the chart that "
                            "brings its CRD first") from None


def _refused(target: str, exc: DynamicApiError) -> ManifestError:
    message = getattr(exc, "summary", lambda: str(exc))()
    return ManifestError(f"{target}: the API server refused it: {message}")


def verify(api: client.ApiClient, set_name: str, objects: list[dict]) -> list[str]:
    """What still differs after an apply (empty when every object is as the lab file says)."""
    return [f"{item.target}: {item.change().detail}" for item in plan(api, set_name, objects).items
            if item.change().is_change]


def deploy(api: client.ApiClient, set_name: str, objects: list[dict], *, prune_kinds: Iterable[tuple[str, str]] = (),
           dry_run: bool = False, step: StepTimer = untimed) -> Plan[ObjectPlan]:
    """plan -> apply (unless ``dry_run``) -> verify; returns the plan. Verification failing raises."""
    plan_ = plan(api, set_name, objects, prune_kinds)
    if dry_run or plan_.is_empty:
        return plan_
    apply(api, plan_, step=step)
    left = verify(api, set_name, objects)
    if left:
        raise ManifestError("after the apply these objects still differ from the lab file:\n" + "\n".join(left))
    return plan_
