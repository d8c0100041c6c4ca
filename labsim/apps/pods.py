"""The pods an app model acts for: Ready pods matching its labels, and their environment."""

from __future__ import annotations

from typing import Any

from labsim.kube.controllers.pods import is_ready


def ready_pods(store: Any, labels: dict[str, str]) -> list[dict]:
    pods = store.list(store.resource("v1", "Pod"), labels=labels)
    return sorted((p for p in pods if is_ready(p)), key=lambda p: p["metadata"]["name"])


def env(pod: dict) -> dict[str, str]:
    """The literal environment variables of the pod's first container."""
    container = (pod["spec"].get("containers") or [{}])[0]
    return {var["name"]: str(var.get("value", "")) for var in container.get("env") or [] if "value" in var}


def labelled(labels: dict[str, str]):
    """A mapper: events of objects carrying ``labels`` queue the one key ``"pods"``."""
    def mapper(event_type: str, obj: dict) -> list:
        found = obj["metadata"].get("labels") or {}
        return ["pods"] if all(found.get(k) == v for k, v in labels.items()) else []
    return mapper
