"""PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch.

Strategic merge follows the type's list rules (``structure``) and honours the directives
kubectl sends: ``$patch`` (delete/replace/merge), ``$retainKeys``, ``$deleteFromPrimitiveList/``
and ``$setElementOrder/``.
"""

from __future__ import annotations

import copy

from labsim.kube.structure import ListRule, field_rule, root_type, type_fields

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"


class PatchError(ValueError):
    pass


# -- JSON patch --------------------------------------------------------------------------------
def json_patch(doc: dict, ops: list[dict]) -> dict:
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        if kind == "test":
            if _resolve(doc, path) != op.get("value"):
                raise PatchError(f"test operation failed at {path}")
        elif kind == "remove":
            parent, key = _parent(doc, path)
            _remove(parent, key, path)
        elif kind in ("add", "replace"):
            parent, key = _parent(doc, path)
            value = copy.deepcopy(op.get("value"))
            if kind == "replace":
                _remove(parent, key, path)
            _add(parent, key, value, path)
        elif kind in ("move", "copy"):
            value = _resolve(doc, op.get("from", ""))
            if kind == "move":
                src_parent, src_key = _parent(doc, op["from"])
                _remove(src_parent, src_key, op["from"])
            parent, key = _parent(doc, path)
            _add(parent, key, copy.deepcopy(value), path)
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}")
    return doc


def _tokens(path: str) -> list[str]:
    if not path:
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _resolve(doc, path: str):
    node = doc
    for token in _tokens(path):
        try:
            node = node[int(token)] if isinstance(node, list) else node[token]
        except (KeyError, IndexError, ValueError) as exc:
            raise PatchError(f"path {path!r} does not exist") from exc
    return node


def _parent(doc, path: str):
    tokens = _tokens(path)
    if not tokens:
        raise PatchError("cannot patch the document root")
    parent = doc
    for token in tokens[:-1]:
        try:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        except (KeyError, IndexError, ValueError) as exc:
            raise PatchError(f"path {path!r} does not exist") from exc
    return parent, tokens[-1]


def _remove(parent, key: str, path: str) -> None:
    try:
        if isinstance(parent, list):
            del parent[int(key)]
        else:
            del parent[key]
    except (KeyError, IndexError, ValueError) as exc:
        raise PatchError(f"unable to remove nonexistent key {path!r}") from exc


def _add(parent, key: str, value, path: str) -> None:
    if isinstance(parent, list):
        if key == "-":
            parent.append(value)
        else:
            parent.insert(int(key), value)
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        raise PatchError(f"path {path!r} does not exist")


# -- JSON merge patch ----------------------------------------------------------------------------
def merge_patch(doc, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# -- strategic merge patch -----------------------------------------------------------------------
def strategic_merge(doc: dict, patch: dict, group: str, kind: str) -> dict:
    return _smp_map(copy.deepcopy(doc), patch, root_type(group, kind))


def _smp_map(doc: dict, patch: dict, fields) -> dict:
    if not isinstance(doc, dict):
        doc = {}
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return {}
    retain = patch.get("$retainKeys")
    if retain is not None:
        doc = {k: v for k, v in doc.items() if k in retain}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            doc[name] = [v for v in doc.get(name) or [] if v not in value]
            continue
        rule = field_rule(fields, key)
        if value is None:
            doc.pop(key, None)
        elif isinstance(value, dict):
            sub = type_fields(rule) if isinstance(rule, str) else None
            doc[key] = _smp_map(doc.get(key) or {}, value, sub)
        elif isinstance(value, list) and isinstance(rule, ListRule):
            doc[key] = _smp_list(doc.get(key) or [], value, rule)
        else:
            doc[key] = copy.deepcopy(value)
    return doc


def _smp_list(doc: list, patch: list, rule: ListRule) -> list:
    if rule.scalar_set:
        out = list(doc)
        out += [v for v in patch if v not in out]
        return out
    if not rule.keys:
        return copy.deepcopy(patch)
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    out = list(doc)
    merge_key = rule.keys[0]
    for item in patch:
        if not isinstance(item, dict):
            out.append(copy.deepcopy(item))
            continue
        index = next((i for i, cur in enumerate(out)
                      if isinstance(cur, dict) and cur.get(merge_key) == item.get(merge_key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del out[index]
        elif index is None:
            out.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            out[index] = _smp_map(out[index], item, type_fields(rule.item))
    return out

