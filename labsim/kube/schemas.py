"""The fields of built-in kinds, read from the kubernetes client's generated models (each model
lists its JSON names and their types), so that the API can treat unknown fields as the real
one does: dropped, or refused with fieldValidation=Strict (kubectl's and helm's default)."""

from __future__ import annotations

import functools
import re
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


# -- OpenAPI v3 (kubectl explain) -----------------------------------------------------------------
_OPENAPI_SCALARS = {"str": {"type": "string"}, "int": {"type": "integer", "format": "int64"},
                    "bool": {"type": "boolean"}, "float": {"type": "number", "format": "double"},
                    "datetime": {"type": "string", "format": "date-time"}, "date": {"type": "string", "format": "date"},
                    "bytearray": {"type": "string", "format": "byte"}, "object": {}}


def _description(model: type) -> str:
    text = (model.__doc__ or "").strip()
    return text.split("\n\n", 1)[0].strip() if not text.startswith("NOTE") else ""


_VERSIONED = re.compile(r"^([A-Z][a-z]+)?(V\d+(?:alpha\d+|beta\d+)?)(.+)$")


def component_name(model_name: str) -> str:
    """A schema name in the API's style (io.k8s.api.[group.]version.Type): kubectl explain shows
    the last part, e.g. Container for V1Container."""
    m = _VERSIONED.match(model_name)
    if not m:
        return f"io.k8s.labsim.{model_name}"
    group, version, rest = m.groups()  # the client prefixes a group only to tell same-named types apart
    return f"io.k8s.api.{group.lower() + '.' if group else ''}{version.lower()}.{rest}"


# What the client's models flatten: int-or-string fields (typed "object") and quantities (typed
# "str", or maps of them), published as the API's v3 documents do (oneOf, no type) so that
# `kubectl explain` shows <IntOrString> and <Quantity>.
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_INT_OR_STRING_FIELDS = {"max_surge", "max_unavailable", "min_available", "port", "target_port"}
_QUANTITY_FIELDS = {"limits", "requests", "capacity", "allocatable", "hard", "used", "default", "default_request",
                    "max", "min", "max_limit_request_ratio", "overhead", "size_limit"}
SPECIAL = {
    INT_OR_STRING: {"description": "IntOrString is a type that can hold an int32 or a string.  When used in JSON "
                    "or YAML marshalling and unmarshalling, it produces or consumes the inner type.  This allows "
                    "you to have, for example, a JSON field that can accept a name or number.",
                    "format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]},
    QUANTITY: {"description": "Quantity is a fixed-point representation of a number. It provides convenient "
               "marshaling/unmarshaling in JSON and YAML, in addition to String() and AsInt64() accessors.",
               "oneOf": [{"type": "string"}, {"type": "number"}]},
}


def _special(attr: str, type_: str) -> str | None:
    """The apimachinery type a model attribute really has, if the client flattened it."""
    if type_ == "object" and attr in _INT_OR_STRING_FIELDS:
        return INT_OR_STRING
    if type_ in ("str", "Dict[str, str]") and attr in _QUANTITY_FIELDS:
        return QUANTITY
    return None


def _property(type_: str, refs: set[str], attr: str = "") -> dict:
    special = _special(attr, type_)
    if special is not None:
        ref = {"allOf": [{"$ref": f"#/components/schemas/{special}"}]}
        return {"type": "object", "additionalProperties": ref} if type_.startswith("Dict[") else ref
    if type_ in _OPENAPI_SCALARS:
        return dict(_OPENAPI_SCALARS[type_])
    if type_.startswith("List["):
        return {"type": "array", "items": _property(type_[5:-1], refs)}
    if type_.startswith("Dict["):
        return {"type": "object", "additionalProperties": _property(type_[5:-1].split(", ", 1)[1], refs)}
    if _model(type_) is None:
        return {}
    refs.add(type_)
    return {"allOf": [{"$ref": f"#/components/schemas/{component_name(type_)}"}]}


@functools.cache
def _component(name: str) -> tuple[dict, frozenset[str]]:
    """One model's schema and the models it refers to."""
    model = _model(name)
    refs: set[str] = set()
    properties = {}
    for attr, type_ in model.openapi_types.items():
        prop = _property(type_, refs, attr)
        field = getattr(model, "model_fields", {}).get(attr)
        if field is not None and field.description:
            prop["description"] = field.description
        properties[model.attribute_map[attr]] = prop
    schema = {"type": "object", "description": _description(model), "properties": properties}
    return schema, frozenset(refs)


def openapi_components(model: type) -> dict[str, dict]:
    """The schemas of ``model`` and of every model it reaches, by component name."""
    found: dict[str, dict] = {}
    pending = [model.__name__]
    while pending:
        name = pending.pop()
        if component_name(name) in found:
            continue
        schema, refs = _component(name)
        found[component_name(name)] = schema
        pending += [r for r in refs if component_name(r) not in found]
    return {**found, **SPECIAL}
