"""Server-side apply and field ownership (metadata.managedFields, FieldsV1).

Each manager owns a set of fields. Applying a configuration: fields another manager owns with a
different value are conflicts (unless ``force``); fields the applier owned before and dropped
now are removed (if nobody else owns them); the rest merges by the type's list rules. Plain
updates (PUT, non-apply PATCH) take ownership of the fields they change.
"""

from __future__ import annotations

import copy
import json

from labsim.kube.structure import ListRule, field_rule, item_key, root_type, type_fields

Path = tuple[str, ...]
_SKIP_META = {"name", "namespace", "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
              "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"}


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        self.conflicts = conflicts  # (manager, field path)
        text = "; ".join(f'conflict with "{m}": {p}' for m, p in conflicts)
        super().__init__(f"Apply failed with {len(conflicts)} conflict{'s' * (len(conflicts) > 1)}: {text}")


# -- field sets -------------------------------------------------------------------------------
def field_set(obj: dict, group: str, kind: str) -> dict:
    """The FieldsV1 set of every field present in ``obj``."""
    out = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if key == "metadata":
            meta = {k: v for k, v in (value or {}).items() if k not in _SKIP_META}
            if meta:
                out["f:metadata"] = _fields(meta, root_type(group, kind)["metadata"])
            continue
        out[f"f:{key}"] = _fields(value, field_rule(root_type(group, kind), key))
    return out


def _fields(value, rule) -> dict:
    if isinstance(value, dict):
        sub = type_fields(rule) if isinstance(rule, str) else None
        return {f"f:{k}": _fields(v, field_rule(sub, k)) for k, v in value.items()}
    if isinstance(value, list) and isinstance(rule, ListRule):
        if rule.scalar_set:
            return {f"v:{json.dumps(v)}": {} for v in value}
        out = {}
        for item in value:
            key = item_key(rule, item)
            if key is None:
                return {}
            inner = _fields(item, rule.item)
            inner["."] = {}
            out[_key_token(rule, item)] = inner
        return out
    return {}


def _key_token(rule: ListRule, item: dict) -> str:
    parts = {k: item[k] for k in rule.keys if k in item}
    return "k:" + json.dumps(parts, separators=(",", ":"), sort_keys=True)


def leaves(fields: dict, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, sub in fields.items():
        if key == ".":
            continue
        path = prefix + (key,)
        children = {k: v for k, v in sub.items() if k != "."}
        if children:
            out |= leaves(children, path)
        else:
            out.add(path)
    return out


def from_leaves(paths: set[Path]) -> dict:
    out: dict = {}
    for path in sorted(paths):
        node = out
        for token in path:
            node = node.setdefault(token, {})
            if token.startswith("k:"):
                node.setdefault(".", {})
    return out


def path_text(path: Path) -> str:
    """A field path as the API server prints it in conflicts: .spec.containers[name="web"].image"""
    out = []
    for token in path:
        if token.startswith("f:"):
            out.append(f".{token[2:]}")
        elif token.startswith("k:"):
            keys = json.loads(token[2:])
            out.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]")
        else:
            out.append(f"[={token[2:]}]")
    return "".join(out)


_MISSING = object()


def value_at(obj, path: Path):
    node = obj
    for token in path:
        kind, text = token[:2], token[2:]
        if kind == "f:":
            if not isinstance(node, dict) or text not in node:
                return _MISSING
            node = node[text]
        elif kind == "k:":
            want = json.loads(text)
            node = next((i for i in node or [] if isinstance(i, dict)
                         and all(i.get(k, "TCP" if k == "protocol" else None) == v for k, v in want.items())),
                        _MISSING) if isinstance(node, list) else _MISSING
            if node is _MISSING:
                return node
        elif kind == "v:":
            value = json.loads(text)
            return value if isinstance(node, list) and value in node else _MISSING
    return node


def remove_at(obj, path: Path) -> None:
    parent = value_at(obj, path[:-1])
    if parent is _MISSING:
        return
    kind, text = path[-1][:2], path[-1][2:]
    if kind == "f:" and isinstance(parent, dict):
        parent.pop(text, None)
    elif kind == "k:" and isinstance(parent, list):
        item = value_at(obj, path)
        if item is not _MISSING:
            parent.remove(item)
    elif kind == "v:" and isinstance(parent, list):
        value = json.loads(text)
        if value in parent:
            parent.remove(value)


# -- apply -------------------------------------------------------------------------------------
def server_side_apply(current: dict, applied: dict, *, manager: str, group: str, kind: str, force: bool,
                      now: str) -> dict:
    """The object after ``manager`` applies ``applied`` onto ``current`` ({} when creating)."""
    managed = [dict(e) for e in (current.get("metadata") or {}).get("managedFields") or []]
    applied_set = field_set(applied, group, kind)
    applied_leaves = leaves(applied_set)
    mine = next((e for e in managed if e.get("manager") == manager and e.get("operation") == "Apply"), None)
    others = [e for e in managed if e is not mine]
    conflicts = []
    for entry in others:
        for path in leaves(entry.get("fieldsV1") or {}) & applied_leaves:
            if value_at(current, path) not in (_MISSING, value_at(applied, path)):
                conflicts.append((entry.get("manager", ""), path))
    if conflicts and not force:
        raise ApplyConflict([(m, path_text(p)) for m, p in conflicts])
    result = _merge(copy.deepcopy(current), applied, root_type(group, kind))
    owned_by_others = set().union(*(leaves(e.get("fieldsV1") or {}) for e in others)) if others else set()
    if mine:
        for path in sorted(leaves(mine.get("fieldsV1") or {}) - applied_leaves - owned_by_others,
                           key=len, reverse=True):
            remove_at(result, path)
    if force:
        for entry in others:
            entry["fieldsV1"] = from_leaves(leaves(entry.get("fieldsV1") or {}) - applied_leaves)
    entry = {"manager": manager, "operation": "Apply", "apiVersion": applied.get("apiVersion", ""),
             "time": now, "fieldsType": "FieldsV1", "fieldsV1": applied_set}
    result.setdefault("metadata", {})["managedFields"] = [e for e in others if e.get("fieldsV1")] + [entry]
    return result


def _merge(cur, app, fields):
    if not isinstance(cur, dict):
        cur = {}
    for key, value in app.items():
        rule = field_rule(fields, key)
        if isinstance(value, dict) and isinstance(cur.get(key), dict):
            cur[key] = _merge(cur[key], value, type_fields(rule) if isinstance(rule, str) else None)
        elif isinstance(value, list) and isinstance(rule, ListRule) and isinstance(cur.get(key), list):
            cur[key] = _merge_list(cur[key], value, rule)
        else:
            cur[key] = copy.deepcopy(value)
    return cur


def _merge_list(cur: list, app: list, rule: ListRule) -> list:
    if rule.scalar_set:
        return list(cur) + [v for v in app if v not in cur]
    if not rule.keys or any(item_key(rule, i) is None for i in app):
        return copy.deepcopy(app)
    out = list(cur)
    for item in app:
        index = next((i for i, c in enumerate(out) if item_key(rule, c) == item_key(rule, item)), None)
        if index is None:
            out.append(copy.deepcopy(item))
        else:
            out[index] = _merge(out[index], item, type_fields(rule.item))
    return out


# -- updates -----------------------------------------------------------------------------------
def record_update(old: dict | None, new: dict, *, manager: str, group: str, kind: str, now: str,
                  subresource: str | None = None) -> None:
    """Give ``manager`` ownership of the fields this write changed (in ``new``'s managedFields)."""
    managed = [dict(e) for e in ((old or {}).get("metadata") or {}).get("managedFields") or []]
    new_leaves = leaves(field_set(new, group, kind))
    old_leaves = leaves(field_set(old, group, kind)) if old else set()
    changed = {p for p in new_leaves if not old or value_at(old, p) != value_at(new, p)}
    gone = old_leaves - new_leaves
    if not changed and not gone and managed:
        new.setdefault("metadata", {})["managedFields"] = managed
        return
    mine = next((e for e in managed if e.get("manager") == manager and e.get("operation") == "Update"
                 and e.get("subresource") == subresource), None)
    for entry in managed:
        if entry is not mine:
            entry["fieldsV1"] = from_leaves(leaves(entry.get("fieldsV1") or {}) - changed - gone)
    if mine is None:
        mine = {"manager": manager, "operation": "Update", "apiVersion": new.get("apiVersion", ""),
                "fieldsType": "FieldsV1"}
        if subresource:
            mine["subresource"] = subresource
        managed.append(mine)
    mine["time"] = now
    mine["fieldsV1"] = from_leaves((leaves(mine.get("fieldsV1") or {}) | changed) - gone)
    new.setdefault("metadata", {})["managedFields"] = [e for e in managed if e.get("fieldsV1")]
