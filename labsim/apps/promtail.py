"""Promtail (image ``grafana/promtail``) as an app model, one per node (the chart's DaemonSet):
it ships the logs of the pods on its node (``HOSTNAME``, the chart's ``spec.nodeName``) to the
push URL of the first client in ``/etc/promtail/promtail.yaml`` (the chart's config Secret),
with the labels the chart's ``kubernetes-pods`` scrape config gives: namespace, pod, container,
app, component, instance, node_name and job ``<namespace>/<app>``.

The real promtail tails /var/log/pods on the node from the positions it keeps; the twin's kubelet
keeps containers' logs in the API server (what ``kubectl logs`` reads, real programs' output
included), so the model reads them through ``pods/log`` with ``timestamps=true`` from the last
timestamp it read (``sinceTime``, as its position), every ``INTERVAL`` seconds of the lab's clock
(at least ``FLOOR`` real seconds), over one kept-alive connection, and sends the lines not sent
yet. As promtail's positions, they move only once Loki has taken the lines: a push that fails
(Loki not up yet) is read and sent again. It serves ``/ready`` and ``/metrics`` on port 3101 as promtail does.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import urllib.parse
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from labsim.apps import incluster, serve

CONFIG = Path("etc/promtail/promtail.yaml")
INTERVAL = 2.0  # modelled seconds between two reads of the node's logs
FLOOR = 1.0  # real seconds at least: below it the reads cost the lab more than the lines are worth


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


@dataclass
class Position:
    """How far a container's log (one run of it) has been read: the last line's timestamp and how
    many lines carry it. The API's ``sinceTime`` has whole seconds, so the next read starts with
    those lines again, and they are skipped."""

    restarts: int = 0
    stamp: str = ""
    at_stamp: int = 0

    def since(self) -> str:
        return f"&sinceTime={urllib.parse.quote(self.stamp)}" if self.stamp else ""

    def read(self, text: str) -> list[list[str]]:
        """``[ns, line]`` of each ``<RFC 3339> line`` of ``text`` not read before (the lines of one
        second numbered in order, across reads); moves the position to the end of ``text``."""
        seen_stamp, seen, found = self.stamp, self.at_stamp, []
        current, count = "", 0
        for row in text.splitlines():
            stamp, _, line = row.partition(" ")
            try:
                seconds = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
            current, count = stamp, (count + 1 if stamp == current else 1)
            if stamp == seen_stamp and count <= seen:
                continue  # read before: the second the last read ended in
            found.append([str(int(seconds * 1e9) + count - 1), line])
        if current:
            self.stamp, self.at_stamp = current, count
        return found


class Shipper:
    def __init__(self) -> None:
        self.node = os.environ.get("HOSTNAME", "")
        self.positions: dict[tuple[str, str], Position] = {}  # (pod uid, container) -> how far read
        self.lines_sent = 0
        self.api = f"https://{os.environ.get('KUBERNETES_SERVICE_HOST', '')}:" \
                   f"{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"

    async def round(self, session: aiohttp.ClientSession) -> None:
        selector = urllib.parse.quote(f"spec.nodeName={self.node}")
        pods = (await self._get_json(session, f"/api/v1/pods?fieldSelector={selector}")).get("items") or []
        streams, moved = [], {}
        for pod in pods:
            meta = pod["metadata"]
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                key = (meta["uid"], status["name"])
                run, known = status.get("restartCount", 0), self.positions.get(key)
                # A copy: the position moves only once the push succeeds. A new run's log starts over.
                position = replace(known) if known and known.restarts == run else Position(restarts=run)
                moved[key] = position
                try:
                    text = await self._get(session, f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/log"
                                                    f"?container={status['name']}&timestamps=true{position.since()}")
                except aiohttp.ClientResponseError:  # waiting to start: nothing to read yet
                    continue
                entries = position.read(text)
                if entries:
                    streams.append({"stream": _labels(pod, status["name"], self.node), "values": entries})
        if streams:
            url = incluster.resolve_url(push_url())
            async with session.post(url, data=json.dumps({"streams": streams}),
                                    headers={"Content-Type": "application/json"}) as reply:
                reply.raise_for_status()
            self.lines_sent += sum(len(s["values"]) for s in streams)
        self.positions = moved  # only once Loki has the lines: a failed push sends them again next round

    async def _get(self, session: aiohttp.ClientSession, path: str) -> str:
        token = (incluster.SA_DIR / "token").read_text().strip()
        async with session.get(self.api + path, headers={"Authorization": f"Bearer {token}"}) as reply:
            reply.raise_for_status()
            return await reply.text(errors="replace")

    async def _get_json(self, session: aiohttp.ClientSession, path: str) -> dict:
        return json.loads(await self._get(session, path))


def make_app(options) -> web.Application:
    shipper = Shipper()

    async def ship(app: web.Application) -> None:
        async def loop() -> None:
            context = ssl.create_default_context(cafile=str(incluster.SA_DIR / "ca.crt"))  # names the ClusterIP
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), timeout=timeout) as session:
                while True:
                    try:
                        await shipper.round(session)
                    except (OSError, ValueError, aiohttp.ClientError, TimeoutError) as error:  # Loki or the API not up
                        print(f"level=warn msg=\"error sending batch, will retry\" error=\"{error}\"", flush=True)
                    await asyncio.sleep(max(INTERVAL * serve.time_scale(), FLOOR))
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
