"""Events, as the controllers' event recorders write them (core/v1 Event).

A repeat of the same reason and message for the same object bumps ``count`` and
``lastTimestamp`` of the first Event instead of writing a new one, as the real recorder does.
Names end in the hex of the time in nanoseconds, as real ones, so listing by name is listing in order.
"""

from __future__ import annotations

from typing import Any

from labsim.kube.controllers.times import rfc3339
from labsim.kube.store import StoreError

NORMAL = "Normal"
WARNING = "Warning"


class EventRecorder:
    def __init__(self, store: Any, clock: Any, component: str) -> None:
        self.store = store
        self.clock = clock
        self.component = component
        self._seen: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._last_stamp = 0

    def record(self, obj: dict, reason: str, message: str, type_: str = NORMAL, host: str = "") -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        now = rfc3339(self.clock.now())
        seen = self._seen.get((meta.get("uid", ""), reason, message))
        if seen and self._bump(seen, now):
            return
        source = {"component": self.component, **({"host": host} if host else {})}
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{self._stamp():x}", "namespace": namespace},
            "involvedObject": {k: v for k, v in (
                ("apiVersion", obj.get("apiVersion")), ("kind", obj.get("kind")), ("name", meta["name"]),
                ("namespace", meta.get("namespace")), ("uid", meta.get("uid")),
                ("resourceVersion", meta.get("resourceVersion"))) if v},
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": type_,
            "eventTime": None,
            "reportingComponent": self.component,
            "reportingInstance": host,
        }
        try:
            created = self.store.create(event)
        except StoreError:
            return  # the namespace is going away: events are best effort, as in Kubernetes
        self._seen[(meta.get("uid", ""), reason, message)] = (namespace, created["metadata"]["name"])

    def _stamp(self) -> int:
        """Lab time in nanoseconds, strictly increasing: events named by it list in order."""
        self._last_stamp = max(int(self.clock.now() * 1e9), self._last_stamp + 1)
        return self._last_stamp

    def _bump(self, seen: tuple[str, str], now: str) -> bool:
        res = self.store.resource("v1", "Event")
        current = self.store.get(res, *seen)
        if current is None:
            return False
        current = {**current, "count": int(current.get("count") or 1) + 1, "lastTimestamp": now}
        try:
            self.store.update(current)
        except StoreError:
            return False
        return True
