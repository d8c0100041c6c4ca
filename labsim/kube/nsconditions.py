"""The status conditions of a Terminating namespace, as the namespace controller's deleter
writes them: what content and which finalizers are still holding the namespace."""

from __future__ import annotations

from collections import Counter

# (type, reason, message) when all is well; the two "remaining" types turn True with details
_SETTLED = (("NamespaceDeletionDiscoveryFailure", "ResourcesDiscovered", "All resources successfully discovered"),
            ("NamespaceDeletionGroupVersionParsingFailure", "ParsedGroupVersions",
             "All legacy kube types successfully parsed"),
            ("NamespaceDeletionContentFailure", "ContentDeleted",
             "All content successfully deleted, may be waiting on finalization"))


def conditions(remaining: list[tuple[str, dict]], previous: list[dict], now: str) -> list[dict]:
    """``remaining``: (``resource.group``, object) still in the namespace."""
    kinds = Counter(qualified for qualified, _ in remaining)
    finalizers = Counter(f for _, obj in remaining for f in obj["metadata"].get("finalizers") or ())
    rows = [(t, "False", r, m) for t, r, m in _SETTLED]
    if kinds:
        detail = ", ".join(f"{k} has {n} resource instances" for k, n in sorted(kinds.items()))
        rows.append(("NamespaceContentRemaining", "True", "SomeResourcesRemain",
                     f"Some resources are remaining: {detail}"))
    else:
        rows.append(("NamespaceContentRemaining", "False", "ContentRemoved", "All content successfully removed"))
    if finalizers:
        detail = ", ".join(f"{f} in {n} resource instances" for f, n in sorted(finalizers.items()))
        rows.append(("NamespaceFinalizersRemaining", "True", "SomeFinalizersRemain",
                     f"Some content in the namespace has finalizers remaining: {detail}"))
    else:
        rows.append(("NamespaceFinalizersRemaining", "False", "ContentHasNoFinalizers",
                     "All content-preserving finalizers finished"))
    before = {c.get("type"): c for c in previous}
    out = []
    for kind, status, reason, message in rows:
        old = before.get(kind) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else now
        out.append({"type": kind, "status": status, "lastTransitionTime": since, "reason": reason,
                    "message": message})
    return out
