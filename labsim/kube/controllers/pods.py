"""What the workload controllers share about pods: state predicates, conditions, owner
references and making a pod from a template."""

from __future__ import annotations

import copy

from labsim.kube.controllers.times import rfc3339

TERMINAL = ("Succeeded", "Failed")


def is_terminating(obj: dict) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def is_active(pod: dict) -> bool:
    """Counted by its controller: not finished, not on its way out."""
    return (pod.get("status") or {}).get("phase") not in TERMINAL and not is_terminating(pod)


def condition(obj: dict, type_: str) -> dict | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def is_ready(pod: dict) -> bool:
    cond = condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True")


def set_condition(conditions: list[dict], type_: str, status: str, now: float, reason: str | None = None,
                  message: str | None = None, *, probe_time: bool = False, update_time: bool = False) -> list[dict]:
    """``conditions`` with ``type_`` set; lastTransitionTime moves only when the status changes."""
    old = next((c for c in conditions if c.get("type") == type_), None)
    cond: dict = {"type": type_, "status": status}
    if probe_time:
        cond["lastProbeTime"] = None
    if update_time:
        cond["lastUpdateTime"] = rfc3339(now)
    cond["lastTransitionTime"] = old["lastTransitionTime"] if old and old.get("status") == status \
        and old.get("lastTransitionTime") else rfc3339(now)
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    if old and update_time and old.get("status") == status and old.get("reason") == reason \
            and old.get("message") == message:
        cond["lastUpdateTime"] = old.get("lastUpdateTime", cond["lastUpdateTime"])
    return [cond if c.get("type") == type_ else c for c in conditions] if old else [*conditions, cond]


def controller_ref(owner: dict) -> dict:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controlled_by(obj: dict, owner: dict) -> bool:
    uid = owner["metadata"]["uid"]
    return any(ref.get("uid") == uid and ref.get("controller")
               for ref in obj["metadata"].get("ownerReferences") or ())


def pod_from_template(template: dict, owner: dict, *, name: str | None = None,
                      labels: dict | None = None, annotations: dict | None = None) -> dict:
    """A pod as a workload controller creates it: the template's metadata and spec, owned by
    ``owner`` (named ``name``, or ``<owner>-<random>`` through generateName)."""
    meta = copy.deepcopy(template.get("metadata") or {})
    pod_meta: dict = {
        "namespace": owner["metadata"]["namespace"],
        "labels": {**(meta.get("labels") or {}), **(labels or {})},
        "ownerReferences": [controller_ref(owner)],
    }
    if meta.get("annotations") or annotations:
        pod_meta["annotations"] = {**(meta.get("annotations") or {}), **(annotations or {})}
    if meta.get("finalizers"):
        pod_meta["finalizers"] = meta["finalizers"]
    if name:
        pod_meta["name"] = name
    else:
        pod_meta["generateName"] = f"{owner['metadata']['name']}-"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": copy.deepcopy(template.get("spec") or {})}


def ready_since(pod: dict) -> str | None:
    cond = condition(pod, "Ready")
    return cond.get("lastTransitionTime") if cond and cond.get("status") == "True" else None


def int_or_percent(value: int | str | None, total: int, *, round_up: bool) -> int:
    """A rolling update bound (``maxSurge: 25%``, ``maxUnavailable: 1``) as a pod count."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%"):
        return int(text)
    scaled = int(text[:-1]) * total
    return -(-scaled // 100) if round_up else scaled // 100
