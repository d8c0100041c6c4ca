"""Custom resources against their CRD's structural schema, as apiextensions-apiserver validates
them: ``type``, ``nullable``, ``enum``, ``minimum``/``maximum`` (and exclusive), ``minLength``/
``maxLength``, ``pattern``, ``minItems``/``maxItems``, ``required``, ``x-kubernetes-int-or-string``,
``x-kubernetes-list-type`` (set/map uniqueness) and CEL ``x-kubernetes-validations`` (``self``,
and ``oldSelf`` in transition rules, evaluated on updates only), worded as the real field errors.
On updates, values left unchanged are not judged again (validation ratcheting, on by default
since 1.30).

CEL runs on cel-python (``celpy``), the maintained pure-Python CEL implementation."""

from __future__ import annotations

import functools
import re

import celpy

from labsim.kube.admission.podspec import go_value

Causes = list[tuple[str, str]]
_ROOT_FIELDS = {"apiVersion", "kind", "metadata"}
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}
_REASONS = {"FieldValueForbidden": "Forbidden", "FieldValueRequired": "Required value",
            "FieldValueDuplicate": "Duplicate value"}


def validate(schema: dict, obj: dict, old: dict | None) -> Causes:
    causes: Causes = []
    _walk(schema, obj, old, "", causes, root=True)
    return causes


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {dict: "object", list: "array", str: "string"}.get(type(value), "string")


def _type_ok(schema: dict, value: object) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    kind = schema.get("type")
    if not kind:
        return True
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES.get(kind, object))


def _walk(schema: dict, value: object, old: object, path: str, causes: Causes, root: bool = False) -> None:
    if old is not None and value == old and not root:
        return  # ratcheting: an update may keep a value that is no longer valid
    where = path or "<root>"
    if value is None:
        if not schema.get("nullable") and schema.get("type"):
            causes.append((where, f'Invalid value: "null": {where} in body must be of type {schema["type"]}: "null"'))
        return
    if not _type_ok(schema, value):
        kind = "integer,string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        actual = _type_name(value)
        causes.append((where, f'Invalid value: "{actual}": {where} in body must be of type {kind}: "{actual}"'))
        return
    causes += _scalar(schema, value, where)
    if isinstance(value, dict):
        for name in schema.get("required") or []:
            if name not in value:
                causes.append((f"{path}.{name}" if path else name, "Required value"))
        props, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        for key, item in value.items():
            if root and key in _ROOT_FIELDS:
                continue
            sub = props.get(key) if key in props else extra if isinstance(extra, dict) else None
            if sub is not None:
                before = old.get(key) if isinstance(old, dict) else None
                _walk(sub, item, before, f"{path}.{key}" if path else key, causes)
    elif isinstance(value, list):
        causes += _list(schema, value, where)
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _walk(items, item, _correlated(schema, item, old), f"{path}[{i}]", causes)
    causes += _rules(schema, value, old, where, root)


def _correlated(schema: dict, item: object, old: object) -> object:
    """The old element a list-type=map element corresponds to (by its keys), else None."""
    keys = schema.get("x-kubernetes-list-map-keys") or []
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(old, list) or not isinstance(item, dict):
        return None
    return next((o for o in old if isinstance(o, dict) and all(o.get(k) == item.get(k) for k in keys)), None)


def _scalar(schema: dict, value: object, where: str) -> Causes:
    causes: Causes = []
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(go_value(v) for v in schema["enum"])
        causes.append((where, f"Unsupported value: {go_value(value)}: supported values: {allowed}"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, word, bad in (("maximum", "less than or equal to", lambda v, m: v > m),
                               ("minimum", "greater than or equal to", lambda v, m: v < m)):
            if key in schema:
                bound = schema[key]
                exclusive = schema.get(f"exclusive{key.capitalize()}")
                if exclusive and value == bound:
                    causes.append((where, f"Invalid value: {value}: {where} in body should be "
                                   f"{word.split(' or ')[0]} {bound}"))
                elif bad(value, bound):
                    causes.append((where, f"Invalid value: {value}: {where} in body should be {word} {bound}"))
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append((where, f"Too long: may not be more than {schema['maxLength']} bytes"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append((where, f"Invalid value: {go_value(value)}: {where} in body should be at least "
                           f"{schema['minLength']} chars long"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            causes.append((where, f"Invalid value: {go_value(value)}: {where} in body should match "
                           f"'{schema['pattern']}'"))
    return causes


def _list(schema: dict, value: list, where: str) -> Causes:
    causes: Causes = []
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        causes.append((where, f"Too many: {len(value)}: must have at most {schema['maxItems']} items"))
    if "minItems" in schema and len(value) < schema["minItems"]:
        causes.append((where, f"Invalid value: {len(value)}: {where} in body should have at least "
                       f"{schema['minItems']} items"))
    kind = schema.get("x-kubernetes-list-type")
    if kind in ("set", "map"):
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: list = []
        for i, item in enumerate(value):
            ident = tuple(item.get(k) for k in keys) if kind == "map" and isinstance(item, dict) else item
            if ident in seen:
                shown = go_value(item) if kind == "set" else "map[string]interface {}{" + ", ".join(
                    f'"{k}":{go_value(item.get(k))}' for k in keys) + "}"
                causes.append((f"{where}[{i}]", f"Duplicate value: {shown}"))
            seen.append(ident)
    return causes


@functools.lru_cache(maxsize=512)
def _program(rule: str):
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _rules(schema: dict, value: object, old: object, where: str, root: bool) -> Causes:
    causes: Causes = []
    for rule in schema.get("x-kubernetes-validations") or []:
        text = rule.get("rule", "")
        transition = "oldSelf" in text
        if transition and old is None:
            continue  # transition rules judge updates of an existing value only
        this = value
        if root and isinstance(value, dict):
            this = {k: v for k, v in value.items() if k != "metadata"} | {
                "metadata": {k: v for k, v in (value.get("metadata") or {}).items() if k in ("name", "generateName")}}
        bindings = {"self": celpy.json_to_cel(this)}
        if transition:
            bindings["oldSelf"] = celpy.json_to_cel(old)
        try:
            result = _program(text).evaluate(bindings)
        except celpy.CELEvalError as exc:
            causes.append((where, f'Invalid value: "{_type_name(value)}": {text}: {exc.args[0] if exc.args else exc}'))
            continue
        except celpy.CELParseError as exc:
            causes.append((where, f"Invalid value: {go_value(text)}: compilation failed: {exc}"))
            continue
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            message = rule.get("message") or f"failed rule: {text}"
            field = where
            if rule.get("fieldPath"):
                field = f"{where if where != '<root>' else ''}{rule['fieldPath']}".lstrip(".")
            prefix = _REASONS.get(rule.get("reason", ""), "")
            causes.append((field, f"{prefix}: {message}" if prefix else
                           f'Invalid value: "{_type_name(value)}": {message}'))
    return causes
