"""The API server's own ``/metrics`` (what kube-prometheus-stack's ``apiserver`` job scrapes):
requests served by verb, resource and code since the API started, the objects stored per
resource, the build info and the process start time, in Prometheus' text format. RBAC applies
(non-resource URL ``/metrics``, as Prometheus' ClusterRole grants it)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from aiohttp import web


class ApiMetrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.started = time.time()

    def count(self, request: web.Request, path: str, status: int) -> None:
        parts = [p for p in path.split("/") if p]
        resource = ""
        if parts[:1] == ["api"] and len(parts) >= 3:
            resource = parts[4] if parts[2:3] == ["namespaces"] and len(parts) > 4 else parts[2]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            resource = parts[5] if parts[3:4] == ["namespaces"] and len(parts) > 5 else parts[3]
        verb = request.method
        if verb == "GET" and resource and parts[-1] == resource:  # a collection
            verb = "WATCH" if request.query.get("watch") in ("1", "true") else "LIST"
        self.requests[(verb, resource, str(status))] += 1

    def response(self, cluster: Any) -> web.Response:
        lines = ["# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, "
                 "dry run value, group, version, resource, scope, component, and HTTP response code.",
                 "# TYPE apiserver_request_total counter"]
        for (verb, resource, code), n in sorted(self.requests.items()):
            lines.append(f'apiserver_request_total{{code="{code}",component="apiserver",resource="{resource}",'
                         f'verb="{verb}"}} {n}')
        lines += ["# HELP apiserver_storage_objects Number of stored objects at the time of last check split by "
                  "kind.", "# TYPE apiserver_storage_objects gauge"]
        counts = Counter(f"{key[1]}.{key[0]}" if key[0] else key[1] for key, _ in cluster.store.all_objects())
        for resource, n in sorted(counts.items()):
            lines.append(f'apiserver_storage_objects{{resource="{resource}"}} {n}')
        lines += ["# HELP kubernetes_build_info A metric with a constant '1' value labeled by major, minor, "
                  "git version, git commit, git tree state, build date, Go version, and compiler from which "
                  "Kubernetes was built, and platform on which it is running.", "# TYPE kubernetes_build_info gauge",
                  f'kubernetes_build_info{{git_version="{cluster.version}"}} 1',
                  "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
                  "# TYPE process_start_time_seconds gauge", f"process_start_time_seconds {self.started}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")
