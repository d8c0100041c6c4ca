"""Container logs of a cluster's pods (what pods/log serves).

Models (the kubelet, app models) write lines with ``write``; a container nobody wrote for logs
the lines its start would, so `kubectl logs` always has something true to show. A container
whose process writes its own log starts each run with ``begin``: the run before becomes its
previous log (``kubectl logs --previous``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque

MAX_LINES = 5_000


class PodLogs:
    def __init__(self, clock_text) -> None:
        self._now = clock_text  # () -> RFC 3339 time of the lab clock
        self._lines: dict[tuple[str, str, str], deque[tuple[str, str]]] = defaultdict(
            lambda: deque(maxlen=MAX_LINES))
        self._previous: dict[tuple[str, str, str], deque[tuple[str, str]]] = {}
        self._followers: dict[tuple[str, str, str], set[asyncio.Queue]] = defaultdict(set)

    def write(self, namespace: str, pod: str, container: str, line: str, *, when: str | None = None) -> None:
        entry = (when or self._now(), line)
        self._lines[(namespace, pod, container)].append(entry)
        for queue in self._followers.get((namespace, pod, container), ()):
            queue.put_nowait(entry)

    def begin(self, namespace: str, pod: str, container: str) -> None:
        """A run of a container whose process writes its own log: empty until it writes, never
        modelled; the run before, if any, becomes the previous one."""
        key = (namespace, pod, container)
        if key in self._lines:
            self._previous[key] = self._lines[key]
        self._lines[key] = deque(maxlen=MAX_LINES)

    def follow(self, namespace: str, pod: str, container: str) -> asyncio.Queue:
        """A queue of the lines written from now on (``kubectl logs -f``); ``unfollow`` it when done."""
        queue: asyncio.Queue = asyncio.Queue()
        self._followers[(namespace, pod, container)].add(queue)
        return queue

    def unfollow(self, namespace: str, pod: str, container: str, queue: asyncio.Queue) -> None:
        self._followers[(namespace, pod, container)].discard(queue)

    def forget(self, namespace: str, pod: str) -> None:
        for key in [k for k in self._lines if k[:2] == (namespace, pod)]:
            del self._lines[key]
            self._previous.pop(key, None)

    def read(self, pod: dict, container: str, *, previous: bool = False) -> list[tuple[str, str]] | None:
        """The container's log lines; with ``previous``, the last ended run's (None: there is none).
        A container waiting to run again (CrashLoopBackOff) has its last run as both."""
        meta = pod["metadata"]
        key = (meta.get("namespace", ""), meta["name"], container)
        lines = self._lines.get(key)
        if previous and lines is not None and not _waiting(pod, container):
            lines = self._previous.get(key)
            return None if lines is None else list(lines)
        if lines is not None:
            return list(lines)
        if previous:
            return None
        spec = next((c for c in (pod["spec"].get("containers") or []) + (pod["spec"].get("initContainers") or [])
                     if c["name"] == container), {})
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        status = next((s for s in statuses if s.get("name") == container), {})
        started = ((status.get("state") or {}).get("running") or {}).get("startedAt") or self._now()
        command = " ".join((spec.get("command") or []) + (spec.get("args") or [])) or "the image's entrypoint"
        return [(started, f"starting {spec.get('image', '?')}: {command}"),
                (started, f"{container} is running on {pod['spec'].get('nodeName', '?')}")]


def _waiting(pod: dict, container: str) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return any(s.get("name") == container and "waiting" in (s.get("state") or {}) for s in statuses)
