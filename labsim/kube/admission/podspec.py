"""Validation of pod specs wherever they appear (pods, workload templates, job templates):
duplicate container names, ports out of range, requests above limits; worded as
pkg/apis/core/validation words them."""

from __future__ import annotations

Causes = list[tuple[str, str]]


def go_value(value: object) -> str:
    """A value as Go's %v/%q prints it in field errors."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        inner = ", ".join(f"{go_value(k)}:{go_value(v)}" for k, v in sorted(value.items()))
        return f"map[string]string{{{inner}}}"
    return str(value)


def pod_spec(spec: dict, path: str) -> Causes:
    causes: Causes = []
    if not spec.get("containers"):
        causes.append((f"{path}.containers", "Required value"))
    seen: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            where = f"{path}.{kind}[{i}]"
            name = c.get("name") or ""
            if not name:
                causes.append((f"{where}.name", "Required value"))
            elif name in seen:
                causes.append((f"{where}.name", f"Duplicate value: {go_value(name)}"))
            seen.add(name)
            if not c.get("image"):
                causes.append((f"{where}.image", "Required value"))
            causes += _ports(c.get("ports") or [], f"{where}.ports")
            causes += _resources(c.get("resources") or {}, f"{where}.resources")
    return causes


def _ports(ports: list, path: str) -> Causes:
    causes: Causes = []
    for i, port in enumerate(ports):
        number = port.get("containerPort")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            causes.append((f"{path}[{i}].containerPort",
                           f"Invalid value: {go_value(number)}: must be between 1 and 65535, inclusive"))
    return causes


def _resources(resources: dict, path: str) -> Causes:
    # imported here: the controllers package imports the store, which imports admission
    from labsim.kube.controllers.quantity import parse_quantity

    causes: Causes = []
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for name, value in requests.items():
        if name not in limits:
            continue
        try:
            above = parse_quantity(value) > parse_quantity(limits[name])
        except ValueError:
            continue
        if above:
            causes.append((f"{path}.requests[{name}]", f"Invalid value: {go_value(str(value))}: must be less "
                           f"than or equal to {name} limit of {limits[name]}"))
    return causes
