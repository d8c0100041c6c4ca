"""Kubernetes resource quantities as numbers ("250m" CPU, "512Mi" memory). Apart from labkit.kube so
that the lab file's checks (labkit.params) do not import the kubernetes client: every `labkit`
command and notebook 01 would pay for it."""

from __future__ import annotations


def cpu_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def memory_bytes(quantity: str) -> int:
    for suffix, factor in sorted(_UNITS.items(), key=lambda kv: -len(kv[0])):
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(float(quantity))
