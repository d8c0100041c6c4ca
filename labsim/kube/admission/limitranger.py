"""The LimitRanger plugin: a namespace's LimitRanges give containers their default requests and
limits (type Container: ``defaultRequest``, ``default``) and refuse pods and claims outside
``min``/``max``/``maxLimitRequestRatio``, with the real plugin's messages (403 Forbidden)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labsim.kube.errors import StoreError
from labsim.kube.resources import Resource

if TYPE_CHECKING:
    from labsim.kube.store import Store


def _ranges(store: Store, namespace: str) -> list[dict]:
    res = store.resource("v1", "LimitRange")
    return [item for r in store.list(res, namespace) for item in (r.get("spec") or {}).get("limits") or []]


def admit(store: Store, res: Resource, obj: dict, old: dict | None) -> None:
    """Defaults for the containers of a pod being created."""
    if old is not None or (res.group, res.kind) != ("", "Pod"):
        return
    for limit in _ranges(store, obj["metadata"].get("namespace") or "default"):
        if limit.get("type") != "Container":
            continue
        # a LimitRange's own defaulting: default limits from max, default requests from the
        # default limits, else from min
        default = {**(limit.get("max") or {}), **(limit.get("default") or {})}
        default_request = {**(limit.get("min") or {}), **default, **(limit.get("defaultRequest") or {})}
        for c in _containers(obj.get("spec") or {}):
            resources = c.setdefault("resources", {})
            for name, value in default.items():
                resources.setdefault("limits", {}).setdefault(name, value)
            for name, value in default_request.items():
                resources.setdefault("requests", {}).setdefault(name, value)


def _containers(spec: dict) -> list[dict]:
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def validate(store: Store, res: Resource, obj: dict, old: dict | None) -> None:
    """Refuse (403) a pod or claim a LimitRange of its namespace does not allow."""
    kind = (res.group, res.kind)
    if old is not None or kind not in (("", "Pod"), ("", "PersistentVolumeClaim")):
        return
    errors: list[str] = []
    for limit in _ranges(store, obj["metadata"].get("namespace") or "default"):
        kind_name = limit.get("type")
        if kind == ("", "Pod") and kind_name == "Container":
            for c in _containers(obj.get("spec") or {}):
                resources = c.get("resources") or {}
                errors += _check(limit, "Container", resources.get("requests") or {}, resources.get("limits") or {})
        elif kind == ("", "Pod") and kind_name == "Pod":
            errors += _check(limit, "Pod", *_pod_totals(obj.get("spec") or {}))
        elif kind == ("", "PersistentVolumeClaim") and kind_name == "PersistentVolumeClaim":
            requests = ((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}
            errors += _check(limit, "PersistentVolumeClaim", requests, {})
    if errors:
        name = obj["metadata"].get("name", "")
        text = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
        raise StoreError(403, "Forbidden", f'{res.plural} "{name}" is forbidden: {text}',
                         details={"name": name, "kind": res.plural})


def _pod_totals(spec: dict) -> tuple[dict, dict]:
    from labsim.kube.controllers.quantity import parse_quantity  # the controllers package imports the store

    requests: dict[str, float] = {}
    limits: dict[str, float] = {}
    for c in spec.get("containers") or []:
        resources = c.get("resources") or {}
        for into, values in ((requests, resources.get("requests") or {}), (limits, resources.get("limits") or {})):
            for name, value in values.items():
                into[name] = into.get(name, 0.0) + parse_quantity(value)
    return requests, limits


def _check(limit: dict, kind: str, requests: dict, limits: dict) -> list[str]:
    from labsim.kube.controllers.quantity import parse_quantity

    errors = []
    for name, low in (limit.get("min") or {}).items():
        if name in requests and parse_quantity(requests[name]) < parse_quantity(low):
            errors.append(f"minimum {name} usage per {kind} is {low}, but request is {_show(requests[name])}")
        elif name not in requests:
            errors.append(f"minimum {name} usage per {kind} is {low}.  No request is specified")
    for name, high in (limit.get("max") or {}).items():
        if name in limits and parse_quantity(limits[name]) > parse_quantity(high):
            errors.append(f"maximum {name} usage per {kind} is {high}, but limit is {_show(limits[name])}")
        elif name not in limits and kind != "PersistentVolumeClaim":
            errors.append(f"maximum {name} usage per {kind} is {high}.  No limit is specified")
        elif kind == "PersistentVolumeClaim" and name in requests and \
                parse_quantity(requests[name]) > parse_quantity(high):
            errors.append(f"maximum {name} usage per {kind} is {high}, but request is {_show(requests[name])}")
    for name, ratio in (limit.get("maxLimitRequestRatio") or {}).items():
        if name in limits and name in requests and parse_quantity(requests[name]):
            actual = parse_quantity(limits[name]) / parse_quantity(requests[name])
            if actual > parse_quantity(ratio):
                errors.append(f"{name} max limit to request ratio per {kind} is {ratio}, but provided ratio is "
                              f"{actual:f}")
    return errors


def _show(value) -> str:
    if isinstance(value, float):
        return str(int(value)) if value == int(value) else f"{round(value * 1000)}m"
    return str(value)
