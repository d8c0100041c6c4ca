"""The ResourceQuota plugin and what its controller counts: a namespace's quotas refuse (403) a
create that would take ``status.used`` past ``spec.hard`` (``pods``, ``requests.cpu``/``memory``,
``limits.*``, ``services``, ``requests.storage``, ``count/<resource>[.<group>]``...), with the
real plugin's messages. ``usage`` is shared with controllers/resourcequota.py, which fills
``status.used``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labsim.kube.errors import StoreError
from labsim.kube.resources import Resource

if TYPE_CHECKING:
    from labsim.kube.store import Store

_COMPUTE = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory",
            "requests.ephemeral-storage", "limits.ephemeral-storage", "ephemeral-storage")
# quota names counting objects of a core kind (besides count/<plural>)
_COUNTED = {"pods": "pods", "services": "services", "configmaps": "configmaps", "secrets": "secrets",
            "persistentvolumeclaims": "persistentvolumeclaims", "replicationcontrollers": "replicationcontrollers",
            "resourcequotas": "resourcequotas"}


def _quantity(value) -> float:
    from labsim.kube.controllers.quantity import parse_quantity  # the controllers package imports the store

    return parse_quantity(value)


def _terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def object_usage(res: Resource, obj: dict) -> dict[str, float]:
    """What one object counts against quota names."""
    usage: dict[str, float] = {f"count/{res.plural}" + (f".{res.group}" if res.group else ""): 1.0}
    if res.group:
        return usage
    if res.plural in _COUNTED:
        usage[res.plural] = 1.0
    if res.kind == "Pod":
        if _terminal(obj):
            return {}
        usage.update(_pod_compute(obj.get("spec") or {}))
    elif res.kind == "Service":
        kind = (obj.get("spec") or {}).get("type")
        usage["services.loadbalancers"] = 1.0 if kind == "LoadBalancer" else 0.0
        usage["services.nodeports"] = float(len((obj.get("spec") or {}).get("ports") or [])) \
            if kind in ("NodePort", "LoadBalancer") else 0.0
    elif res.kind == "PersistentVolumeClaim":
        requests = ((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}
        usage["requests.storage"] = _quantity(requests.get("storage", "0"))
    return usage


def _pod_compute(spec: dict) -> dict[str, float]:
    totals: dict[str, float] = {}
    for kind in ("requests", "limits"):
        for name in ("cpu", "memory", "ephemeral-storage"):
            values = [_quantity((c.get("resources") or {}).get(kind, {}).get(name, "0"))
                      for c in spec.get("containers") or []]
            init = [_quantity((c.get("resources") or {}).get(kind, {}).get(name, "0"))
                    for c in spec.get("initContainers") or []]
            totals[f"{kind}.{name}"] = max(sum(values), max(init, default=0.0))
    for name in ("cpu", "memory", "ephemeral-storage"):
        totals[name] = totals[f"requests.{name}"]
    return totals


def usage(store: Store, namespace: str, names: list[str]) -> dict[str, float]:
    """What a namespace uses of each quota name, as the quota controller counts it."""
    resources = {}
    for name in names:
        plural = name.removeprefix("count/") if name.startswith("count/") else _COUNTED.get(name)
        if name in _COMPUTE:
            plural = "pods"
        elif name.startswith("services."):
            plural = "services"
        elif name == "requests.storage":
            plural = "persistentvolumeclaims"
        if plural is None:
            continue
        resource, _, group = plural.partition(".")
        res = store.catalog.by_plural(group, None, resource)
        if res is not None:
            resources[res.key] = res
    total = {name: 0.0 for name in names}
    for res in resources.values():
        for obj in store.list(res, namespace):
            for name, value in object_usage(res, obj).items():
                if name in total:
                    total[name] += value
    return total


def show(name: str, value: float) -> str:
    """A quota figure as a Kubernetes quantity string."""
    if value != int(value):
        return f"{round(value * 1000)}m"
    value = int(value)
    if value and any(part in name for part in ("memory", "storage")):
        for suffix, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
            if value % size == 0:
                return f"{value // size}{suffix}"
    return str(value)


def _pretty(values: dict[str, float]) -> str:
    return ",".join(f"{k}={show(k, v)}" for k, v in sorted(values.items()))


def validate(store: Store, res: Resource, obj: dict, old: dict | None) -> None:
    if old is not None or not res.namespaced:
        return
    namespace = obj["metadata"].get("namespace") or "default"
    quotas = store.list(store.resource("v1", "ResourceQuota"), namespace)
    if not quotas:
        return
    delta = object_usage(res, obj)
    name = obj["metadata"].get("name", "")

    def refuse(text: str) -> StoreError:
        return StoreError(403, "Forbidden", f'{res.plural} "{name}" is forbidden: {text}',
                          details={"name": name, "group": res.group, "kind": res.plural})

    for quota in quotas:
        hard = (quota.get("status") or {}).get("hard") or {}
        tracked = [k for k in (quota.get("spec") or {}).get("hard") or {} if k in delta]
        if not tracked:
            continue
        if res.kind == "Pod" and not res.group:
            missing = _unspecified(obj.get("spec") or {}, tracked)
            if missing:
                raise refuse(f"failed quota: {quota['metadata']['name']}: must specify {missing}")
        if not hard:
            raise refuse(f"status unknown for quota: {quota['metadata']['name']}, resources: "
                         f"{','.join(sorted(tracked))}")
        used = {k: _quantity(v) for k, v in ((quota.get("status") or {}).get("used") or {}).items()}
        requested = {k: delta[k] for k in tracked if delta[k]}
        exceeded = [k for k, v in requested.items() if k in hard and used.get(k, 0.0) + v > _quantity(hard[k])]
        if exceeded:
            raise refuse(f"exceeded quota: {quota['metadata']['name']}, requested: "
                         f"{_pretty({k: requested[k] for k in exceeded})}, used: "
                         f"{_pretty({k: used.get(k, 0.0) for k in exceeded})}, limited: "
                         f"{','.join(f'{k}={hard[k]}' for k in sorted(exceeded))}")


def _unspecified(spec: dict, tracked: list[str]) -> str:
    """The compute resources a quota tracks that some container does not state, as the pod
    evaluator words it ("limits.cpu for: web; requests.memory for: web")."""
    parts = []
    for name in sorted(k for k in tracked if k in _COMPUTE):
        kind, _, resource = name.rpartition(".")
        kind = kind or "requests"
        lacking = [c.get("name", "") for c in spec.get("containers") or []
                   if resource not in ((c.get("resources") or {}).get(kind) or {})]
        if lacking:
            parts.append(f"{name} for: {','.join(lacking)}")
    return "; ".join(parts)
