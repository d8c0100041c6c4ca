"""Custom resources against their CRD's structural schema: pruning of undeclared fields and
`default:` values (validation of the values themselves: see crd_validation)."""

from __future__ import annotations

from labsim.kube import schemas
from labsim.kube.resources import Resource


def admit(res: Resource, obj: dict) -> None:
    if res.schema:
        prune(res.schema, obj)
        _schema_defaults(res.schema, obj)


_ROOT_FIELDS = {"apiVersion", "kind", "metadata"}


def unknown_fields(schema: dict, value: object, path: str = "", root: bool = True) -> list[str]:
    """Fields of ``value`` a structural schema does not declare (what fieldValidation=Strict refuses)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if root and key in _ROOT_FIELDS:
                continue
            if props is not None and key in props:
                found += unknown_fields(props[key], item, where, False)
            elif isinstance(extra, dict):
                found += unknown_fields(extra, item, where, False)
            elif extra is not True and (props is not None or schema.get("type") == "object"):
                found.append(where)  # structural schemas prune what they do not declare
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_fields(schema["items"], item, f"{path}[{i}]", False)
    return found


def prune(schema: dict, obj: dict) -> None:
    """Drop undeclared fields, as the API server prunes custom resources with structural schemas."""
    schemas.prune(obj, unknown_fields(schema, obj))


def _schema_defaults(schema: dict, value: object) -> None:
    """Apply `default:` values of a structural schema (CRDs) to an object, recursively."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = _copy(sub["default"])
            if key in value:
                _schema_defaults(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in props:
                    _schema_defaults(extra, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _schema_defaults(schema["items"], item)


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
