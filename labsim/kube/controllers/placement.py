"""Where a pod may run: taints and tolerations, nodeSelector and required node affinity, as the
scheduler's and the DaemonSet controller's predicates see them."""

from __future__ import annotations

import operator

from labsim.kube.controllers.pods import condition

NO_EXECUTE = "NoExecute"
SCHEDULING_EFFECTS = ("NoSchedule", NO_EXECUTE)


def tolerates(toleration: dict, taint: dict) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    key = toleration.get("key")
    if key and key != taint.get("key"):
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True  # an empty key with Exists tolerates every taint
    return bool(key) and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated_taints(pod: dict, node: dict, effects: tuple[str, ...] = SCHEDULING_EFFECTS) -> list[dict]:
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    return [taint for taint in (node.get("spec") or {}).get("taints") or []
            if taint.get("effect") in effects and not any(tolerates(t, taint) for t in tolerations)]


def node_ready(node: dict) -> bool:
    cond = condition(node, "Ready")
    return bool(cond and cond.get("status") == "True")


def matches_node(pod: dict, node: dict) -> bool:
    """nodeSelector and requiredDuringSchedulingIgnoredDuringExecution node affinity."""
    spec = pod.get("spec") or {}
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not required:
        return True
    fields = {"metadata.name": node["metadata"]["name"]}
    return any(_term_matches(term, labels, fields) for term in required.get("nodeSelectorTerms") or [])


def _term_matches(term: dict, labels: dict, fields: dict) -> bool:
    exprs, field_exprs = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not field_exprs:
        return False  # an empty term matches no node
    return all(_expr_matches(e, labels) for e in exprs) and all(_expr_matches(e, fields) for e in field_exprs)


_COMPARE = {"Gt": operator.gt, "Lt": operator.lt}


def _expr_matches(expr: dict, labels: dict) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in _COMPARE:
        try:
            return _COMPARE[op](int(labels[key]), int(values[0]))
        except (KeyError, ValueError, IndexError):
            return False
    return False
