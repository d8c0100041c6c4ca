"""Container logs of a cluster's pods (what pods/log serves).

Models (the kubelet, app models) write lines with ``write``; a container nobody wrote for logs
the lines its start would, so `kubectl logs` always has something true to show.
"""

from __future__ import annotations

from collections import defaultdict, deque

MAX_LINES = 5_000


class PodLogs:
    def __init__(self, clock_text) -> None:
        self._now = clock_text  # () -> RFC 3339 time of the lab clock
        self._lines: dict[tuple[str, str, str], deque[tuple[str, str]]] = defaultdict(
            lambda: deque(maxlen=MAX_LINES))

    def write(self, namespace: str, pod: str, container: str, line: str, *, when: str | None = None) -> None:
        self._lines[(namespace, pod, container)].append((when or self._now(), line))

    def forget(self, namespace: str, pod: str) -> None:
        for key in [k for k in self._lines if k[:2] == (namespace, pod)]:
            del self._lines[key]

    def read(self, pod: dict, container: str, *, previous: bool = False) -> list[tuple[str, str]]:
        meta = pod["metadata"]
        lines = self._lines.get((meta.get("namespace", ""), meta["name"], container))
        if lines:
            return list(lines)
        spec = next((c for c in (pod["spec"].get("containers") or []) + (pod["spec"].get("initContainers") or [])
                     if c["name"] == container), {})
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        status = next((s for s in statuses if s.get("name") == container), {})
        started = ((status.get("state") or {}).get("running") or {}).get("startedAt") or self._now()
        command = " ".join((spec.get("command") or []) + (spec.get("args") or [])) or "the image's entrypoint"
        return [(started, f"starting {spec.get('image', '?')}: {command}"),
                (started, f"{container} is running on {pod['spec'].get('nodeName', '?')}")]
