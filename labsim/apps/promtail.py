"""Promtail (image ``grafana/promtail``) as an app model, one per node (the chart's DaemonSet):
it ships the logs of the pods on its node (``HOSTNAME``, the chart's ``spec.nodeName``) to the
push URL of the first client in ``/etc/promtail/promtail.yaml`` (the chart's config Secret),
with the labels the chart's ``kubernetes-pods`` scrape config gives: namespace, pod, container,
app, component, instance, node_name and job ``<namespace>/<app>``.

The real promtail tails /var/log/pods on the node; the twin's kubelet keeps containers' logs in
the API server (what ``kubectl logs`` reads, real programs' output included), so the model reads
them through ``pods/log`` with ``timestamps=true``, every ``INTERVAL`` seconds, sending the lines
not sent yet. It serves ``/ready`` and ``/metrics`` on port 3101 as promtail does.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import yaml
from aiohttp import web

from labsim.apps import incluster, serve

CONFIG = Path("etc/promtail/promtail.yaml")
INTERVAL = 2.0


def push_url() -> str:
    config = yaml.safe_load(CONFIG.read_text()) or {}
    return (config.get("clients") or [{}])[0].get("url", "")


def _labels(pod: dict, container: str, node: str) -> dict[str, str]:
    meta, given = pod["metadata"], pod["metadata"].get("labels") or {}
    app = given.get("app.kubernetes.io/name") or given.get("app") or given.get("k8s-app") or meta["name"]
    labels = {"namespace": meta["namespace"], "pod": meta["name"], "container": container, "app": app,
              "node_name": node, "job": f"{meta['namespace']}/{app}"}
    for key, source in (("instance", "app.kubernetes.io/instance"), ("component", "app.kubernetes.io/component")):
        if given.get(source):
            labels[key] = given[source]
    return labels


def _entries(text: str) -> list[list[str]]:
    """``[ns, line]`` of each ``<RFC 3339> line`` the API sent (lines of one second kept in order)."""
    found = []
    for i, row in enumerate(text.splitlines()):
        stamp, _, line = row.partition(" ")
        try:
            seconds = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        found.append([str(int(seconds * 1e9) + i), line])
    return found


class Shipper:
    def __init__(self) -> None:
        self.node = os.environ.get("HOSTNAME", "")
        self.sent: dict[tuple[str, str], int] = {}  # (pod uid, container) -> lines sent
        self.lines_sent = 0

    def round(self) -> None:
        selector = urllib.parse.quote(f"spec.nodeName={self.node}")
        pods = incluster.api_get(f"/api/v1/pods?fieldSelector={selector}").get("items") or []
        streams = []
        for pod in pods:
            meta = pod["metadata"]
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                container = status["name"]
                try:
                    text = _log(meta["namespace"], meta["name"], container)
                except OSError:  # waiting to start: nothing to read yet
                    continue
                entries = _entries(text)
                key = (meta["uid"], container)
                done = self.sent.get(key, 0)
                if len(entries) < done:  # a new run of the container: its log starts over
                    done = 0
                if entries[done:]:
                    streams.append({"stream": _labels(pod, container, self.node), "values": entries[done:]})
                self.sent[key] = len(entries)
        if streams:
            body = json.dumps({"streams": streams}).encode()
            request = urllib.request.Request(incluster.resolve_url(push_url()), data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=10).close()
            self.lines_sent += sum(len(s["values"]) for s in streams)


def _log(namespace: str, pod: str, container: str) -> str:
    return incluster.api_text(f"/api/v1/namespaces/{namespace}/pods/{pod}/log?container={container}&timestamps=true")


def make_app(options) -> web.Application:
    shipper = Shipper()

    async def ship(app: web.Application) -> None:
        async def loop() -> None:
            while True:
                try:
                    await asyncio.to_thread(shipper.round)
                except (OSError, ValueError) as error:  # Loki or the API not answering yet
                    print(f"level=warn msg=\"error sending batch, will retry\" error=\"{error}\"", flush=True)
                await asyncio.sleep(INTERVAL)
        task = asyncio.create_task(loop())
        yield
        task.cancel()

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="Ready")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=f"promtail_sent_entries_total{{host=\"{shipper.node}\"}} {shipper.lines_sent}\n")

    app = web.Application()
    app.cleanup_ctx.append(ship)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app


if __name__ == "__main__":
    serve.main(make_app)
