"""Label and field selectors, as in `?labelSelector=` / `?fieldSelector=` and LabelSelector objects."""

from __future__ import annotations

import re
from collections.abc import Callable

Matcher = Callable[[dict], bool]

_SET_OP = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_EQ_OP = re.compile(r"^\s*([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)\s*$")
_EXPR_OP = re.compile(r"^\s*([\w./-]+)\s*(>|<)\s*(\d+)\s*$")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside a set's parentheses."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t for t in terms if t.strip()]


class SelectorError(ValueError):
    pass


def parse_labels(selector: dict[str, str] | str | None) -> Matcher:
    """A matcher over an object's labels for a selector string or an equality dict."""
    if not selector:
        return lambda obj: True
    if isinstance(selector, dict):
        wanted = dict(selector)
        return lambda obj: all(_labels(obj).get(k) == v for k, v in wanted.items())
    tests = [_label_term(term) for term in _split_terms(selector)]
    return lambda obj: all(test(_labels(obj)) for test in tests)


def _labels(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("labels") or {}


def _label_term(term: str) -> Callable[[dict], bool]:
    if m := _EQ_OP.match(term):
        key, op, value = m.groups()
        return (lambda lab: lab.get(key) != value) if op == "!=" else (lambda lab: lab.get(key) == value)
    if m := _EXPR_OP.match(term):
        key, op, num = m.group(1), m.group(2), int(m.group(3))
        return lambda lab: key in lab and lab[key].isdigit() and (
            int(lab[key]) > num if op == ">" else int(lab[key]) < num)
    if m := _SET_OP.match(term):
        neg, key, op, values = m.groups()
        if op is None:
            return (lambda lab: key not in lab) if neg else (lambda lab: key in lab)
        members = {v.strip() for v in values.split(",") if v.strip()}
        if op == "in":
            return lambda lab: lab.get(key) in members
        return lambda lab: lab.get(key) not in members
    raise SelectorError(f"unable to parse requirement: {term!r}")


def match_label_selector(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector object (matchLabels + matchExpressions) against labels. None matches nothing,
    {} matches everything, as the API says for workload selectors."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        ok = {"In": present and labels[key] in values, "NotIn": not present or labels[key] not in values,
              "Exists": present, "DoesNotExist": not present}
        if not ok.get(op, False):
            return False
    return True


def selector_string(selector: dict | None) -> str:
    """A LabelSelector object as the query-string form (for Scale.status.selector and kubectl)."""
    if not selector:
        return ""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], ",".join(sorted(expr.get("values") or []))
        terms.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(terms)


def parse_fields(selector: dict[str, str] | str | None) -> Matcher:
    """A matcher for field selectors (metadata.name, spec.nodeName, status.phase, involvedObject.uid...)."""
    if not selector:
        return lambda obj: True
    if isinstance(selector, dict):
        pairs = [(k, "=", v) for k, v in selector.items()]
    else:
        pairs = []
        for term in _split_terms(selector):
            m = _EQ_OP.match(term) or re.match(r"^\s*([\w./-]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
            if not m:
                raise SelectorError(f"invalid field selector: {term!r}")
            pairs.append(m.groups())
    return lambda obj: all((field_value(obj, path) != value) if op == "!=" else (field_value(obj, path) == value)
                           for path, op, value in pairs)


def field_value(obj: dict, path: str) -> str:
    node: object = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)
