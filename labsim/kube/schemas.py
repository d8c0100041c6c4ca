"""The fields of built-in kinds, read from the kubernetes client's generated models (each model
lists its JSON names and their types), so that the API can treat unknown fields as the real
one does: dropped, or refused with fieldValidation=Strict (kubectl's and helm's default)."""

from __future__ import annotations

import functools
from types import ModuleType

_SCALARS = {"str", "int", "bool", "float", "datetime", "date", "object", "bytearray"}
_GROUP_PREFIX = {"": "Core", "events.k8s.io": "Events", "authentication.k8s.io": "Authentication",
                 "storage.k8s.io": "Storage", "discovery.k8s.io": "Discovery", "rbac.authorization.k8s.io": "Rbac"}


@functools.cache
def _models() -> ModuleType:
    from kubernetes.client import models  # imported on first use: it takes a second

    return models


def model_for(group: str, version: str, kind: str) -> type | None:
    """The client's model class of a kind (V1Deployment, CoreV1Event...), None if it has none."""
    short = f"{version[0].upper()}{version[1:]}{kind}"
    models = _models()
    return getattr(models, short, None) or getattr(models, f"{_GROUP_PREFIX.get(group, '')}{short}", None)


@functools.cache
def _fields(model: type) -> dict[str, str]:
    """JSON name -> type string of one model."""
    return {model.attribute_map[attr]: type_ for attr, type_ in model.openapi_types.items()}


def _model(name: str) -> type | None:
    return getattr(_models(), name, None)


def unknown_fields(model: type, value: object, path: str = "") -> list[str]:
    """Dotted paths of the fields of ``value`` the model does not declare."""
    if not isinstance(value, dict):
        return []
    fields = _fields(model)
    found = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        type_ = fields.get(key)
        if type_ is None:
            found.append(where)
        else:
            found += _unknown_in(type_, item, where)
    return found


def _unknown_in(type_: str, value: object, path: str) -> list[str]:
    if type_ in _SCALARS:
        return []
    if type_.startswith("List[") and isinstance(value, list):
        inner = type_[5:-1]
        return [p for i, item in enumerate(value) for p in _unknown_in(inner, item, f"{path}[{i}]")]
    if type_.startswith("Dict[") and isinstance(value, dict):
        inner = type_[5:-1].split(", ", 1)[1]
        return [p for key, item in value.items() for p in _unknown_in(inner, item, f"{path}.{key}")]
    model = _model(type_)
    return unknown_fields(model, value, path) if model is not None else []


def prune(obj: dict, paths: list[str]) -> None:
    """Remove the fields at ``paths`` (as unknown_fields reports them)."""
    for path in sorted(paths, key=len, reverse=True):
        parts = path.replace("[", ".[").split(".")
        parent: object = obj
        for part in parts[:-1]:
            if isinstance(parent, list) and part.startswith("["):
                parent = parent[int(part[1:-1])]
            elif isinstance(parent, dict):
                parent = parent.get(part)
        if isinstance(parent, dict):
            parent.pop(parts[-1], None)
