"""Resource quantities ("250m", "128Mi", "1G", "2") as numbers: CPU in cores, the rest in units."""

from __future__ import annotations

import re

_SUFFIX = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: str | int | float | None) -> float:
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    m = _QUANTITY.match(value.strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"quantities must match the regular expression: {value!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def pod_requests(pod: dict) -> dict[str, float]:
    """What a pod asks of its node: the sum of its containers' requests, or its largest init
    container's if greater, as the scheduler computes it."""
    spec = pod.get("spec") or {}
    total: dict[str, float] = {}
    for container in spec.get("containers") or []:
        for name, value in _requests(container).items():
            total[name] = total.get(name, 0.0) + value
    for container in spec.get("initContainers") or []:
        for name, value in _requests(container).items():
            total[name] = max(total.get(name, 0.0), value)
    return total


def _requests(container: dict) -> dict[str, float]:
    resources = container.get("resources") or {}
    # Limits without requests mean requests = limits (the API server's defaulting).
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: parse_quantity(value) for name, value in merged.items()}
