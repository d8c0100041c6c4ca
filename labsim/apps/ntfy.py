"""ntfy (ntfy.sh, v2.x), the push service the lab's Alertmanager pages the phone through. No ntfy
server installs here, so this model speaks its HTTP API as far as a publisher and a phone use it:

- publish: ``PUT``/``POST /<topic>`` with the message as body, and ``Title``/``Priority``/``Tags``
  (also ``X-…`` and the short forms ``t``/``p``/``ta``) as headers or query parameters; priorities
  1-5 or min/low/default/high/max/urgent, as ntfy maps them;
- ``?template=alertmanager`` (or ``X-Template``): the body is an Alertmanager webhook payload,
  rendered with ntfy's predefined alertmanager template (title "🚨 Alert: …" / "✅ Resolved: …",
  message with status, receiver and each alert's labels and annotations);
- subscribe: ``GET /<topic>/json?poll=1&since=all|<unix time>|<duration>|<message id>`` (cached
  messages as JSON lines) and, without ``poll``, the stream (an ``open`` event, then messages);
- access tokens: ``Authorization: Bearer tk_…`` or Basic with an empty user and the token as
  password; the lab's server denies anonymous access (``auth-default-access: deny-all``).

``NtfyServer`` serves it over HTTPS on the loopback address of the lab file's
``observability.ntfy.server``, with a certificate from the lab's stand-in of the public web PKI
(the CA Pebble's own HTTPS uses), as ntfy.sh is trusted through the public web PKI.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import re
import secrets
import ssl
import string
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from labsim import pki

log = logging.getLogger("labsim.ntfy")
CACHE_SECONDS = 12 * 3600  # ntfy's default cache-duration
KEEPALIVE_SECONDS = 45  # ntfy's default keepalive-interval
PRIORITIES = {"1": 1, "min": 1, "2": 2, "low": 2, "3": 3, "default": 3, "4": 4, "high": 4,
              "5": 5, "max": 5, "urgent": 5}
_AUTH_LINK = "https://ntfy.sh/docs/publish/#authentication"
UNAUTHORIZED = {"code": 40101, "http": 401, "error": "unauthorized", "link": _AUTH_LINK}
FORBIDDEN = {"code": 40301, "http": 403, "error": "forbidden", "link": _AUTH_LINK}
INVALID_PRIORITY = {"code": 40007, "http": 400, "error": "invalid priority",
                    "link": "https://ntfy.sh/docs/publish/#message-priority"}
INVALID_TOPIC = {"code": 40009, "http": 400, "error": "invalid request: topic invalid"}
TOPIC = re.compile(r"[-_A-Za-z0-9]{1,64}")


def _error(body: dict) -> web.Response:
    return web.json_response(body, status=body["http"])


def _message_id() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))


@dataclass
class Ntfy:
    """The server's state: one access token (the lab's) and the message cache per topic."""

    token: str
    topics: dict[str, list[dict]] = field(default_factory=dict)
    _arrived: asyncio.Condition | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/health", self.health)
        app.router.add_get("/{topic}/json", self.subscribe)
        app.router.add_route("PUT", "/{topic}", self.publish)
        app.router.add_route("POST", "/{topic}", self.publish)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"healthy": True})

    # -- access ------------------------------------------------------------------------------------
    def _denied(self, request: web.Request) -> web.Response | None:
        """None when the request carries the lab's token; else ntfy's 401 (wrong) or 403 (none)."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":  # ntfy takes a token as the password of an empty user
            try:
                value = base64.b64decode(value).decode().partition(":")[2]
            except ValueError:
                return _error(UNAUTHORIZED)
        elif scheme.lower() != "bearer":
            return _error(FORBIDDEN if not header else UNAUTHORIZED)
        return None if hmac.compare_digest(value.encode(), self.token.encode()) else _error(UNAUTHORIZED)

    # -- publish -----------------------------------------------------------------------------------
    async def publish(self, request: web.Request) -> web.Response:
        topic = request.match_info["topic"]
        if not TOPIC.fullmatch(topic):
            return _error(INVALID_TOPIC)
        denied = self._denied(request)
        if denied is not None:
            return denied
        body = (await request.read()).decode(errors="replace")
        option = _options(request)
        priority = option("priority", "prio", "p")
        if priority and priority.lower() not in PRIORITIES:
            return _error(INVALID_PRIORITY)
        message = {"id": _message_id(), "time": int(time.time()), "event": "message", "topic": topic}
        message["expires"] = message["time"] + CACHE_SECONDS
        title, text = option("title", "t"), body
        template = option("template", "tpl")
        if template:
            try:
                title, text = render(template, json.loads(body or "{}"))
            except (ValueError, KeyError, IndexError, TypeError) as error:
                return _error({"code": 40044, "http": 400, "error": f"invalid request: template: {error}"})
        message["message"] = text or "triggered"  # ntfy's text for an empty body
        if title:
            message["title"] = title
        if priority:
            message["priority"] = PRIORITIES[priority.lower()]
        tags = [t.strip() for t in (option("tags", "tag", "ta") or "").split(",") if t.strip()]
        if tags:
            message["tags"] = tags
        await self._store(message)
        log.info("ntfy: %s published to %s (priority %s)", message["id"], topic, message.get("priority", 3))
        return web.json_response(message)

    async def _store(self, message: dict) -> None:
        now = time.time()
        cache = self.topics.setdefault(message["topic"], [])
        cache[:] = [m for m in cache if m["expires"] > now] + [message]
        async with self._condition():
            self._arrived.notify_all()

    def _condition(self) -> asyncio.Condition:
        if self._arrived is None:
            self._arrived = asyncio.Condition()
        return self._arrived

    # -- subscribe ---------------------------------------------------------------------------------
    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        topic = request.match_info["topic"]
        denied = self._denied(request)
        if denied is not None:
            return denied
        since = request.query.get("since")
        cached = _since(self.topics.get(topic, []), since) if since else []
        if request.query.get("poll") in ("1", "yes", "true"):
            text = "".join(json.dumps(m) + "\n" for m in cached)
            return web.Response(text=text, content_type="application/x-ndjson")
        return await self._stream(request, topic, cached)

    async def _stream(self, request: web.Request, topic: str, cached: list[dict]) -> web.StreamResponse:
        reply = web.StreamResponse(headers={"Content-Type": "application/x-ndjson; charset=utf-8"})
        await reply.prepare(request)
        now = int(time.time())
        await reply.write((json.dumps({"id": _message_id(), "time": now, "event": "open", "topic": topic}) + "\n").encode())
        sent = {m["id"] for m in cached}
        for message in cached:
            await reply.write((json.dumps(message) + "\n").encode())
        while True:
            async with self._condition():
                try:
                    await asyncio.wait_for(self._arrived.wait(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    keepalive = {"id": _message_id(), "time": int(time.time()), "event": "keepalive", "topic": topic}
                    await reply.write((json.dumps(keepalive) + "\n").encode())
                    continue
            for message in self.topics.get(topic, []):
                if message["id"] not in sent:
                    sent.add(message["id"])
                    await reply.write((json.dumps(message) + "\n").encode())


def _options(request: web.Request):
    """A publish option by its names: header (X-Name or Name) first, then the query parameter."""
    def option(*names: str) -> str | None:
        for name in names:
            for key in (f"X-{name}", name):
                if request.headers.get(key):
                    return request.headers[key]
            if request.query.get(name):
                return request.query[name]
        return None
    return option


def _since(cache: list[dict], since: str) -> list[dict]:
    """ntfy's ``since``: all, latest, a unix time, a duration (10m, 2h) or a message id."""
    if since == "all":
        return list(cache)
    if since == "latest":
        return cache[-1:]
    if since.isdigit():
        return [m for m in cache if m["time"] >= int(since)]
    duration = re.fullmatch(r"(\d+)([smhd])", since)
    if duration:
        seconds = int(duration[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[duration[2]]
        return [m for m in cache if m["time"] >= time.time() - seconds]
    ids = [m["id"] for m in cache]
    return cache[ids.index(since) + 1:] if since in ids else []


# -- ntfy's predefined templates ------------------------------------------------------------------

def render(template: str, payload: dict) -> tuple[str, str]:
    """Title and message of ntfy's predefined ``alertmanager`` template for a webhook payload."""
    if template != "alertmanager":
        raise ValueError(f"template {template!r} not found (this server has: alertmanager)")
    first = payload["alerts"][0]["labels"]["alertname"]
    status = payload["status"]
    if status not in ("firing", "resolved"):
        raise ValueError("Unsupported Alertmanager status.")
    title = f"🚨 Alert: {first}" if status == "firing" else f"✅ Resolved: {first}"
    lines = [f"Status: {status.title()}", f"Receiver: {payload.get('receiver', '')}"]
    for alert in payload["alerts"]:
        labels, notes = alert.get("labels", {}), alert.get("annotations", {})
        lines += [f"Alert: {labels.get('alertname', '')}", f"Instance: {labels.get('instance', '')}",
                  f"Severity: {labels.get('severity', '')}", f"Starts at: {alert.get('startsAt', '')}"]
        if alert.get("endsAt") and alert["endsAt"] != "0001-01-01T00:00:00Z":
            lines.append(f"Ends at: {alert['endsAt']}")
        lines += [f"{key.title()}: {notes[key]}" for key in ("summary", "description") if notes.get(key)]
        lines += [f"Source: {alert.get('generatorURL', '')}", ""]
    return title, "\n".join(lines).rstrip("\n")


# -- the lab's server ------------------------------------------------------------------------------

class NtfyServer:
    """The lab's ntfy on the loopback address (and port, default 443) of ``url``."""

    def __init__(self, state_dir: Path, url: str, token: str, ca: pki.KeyPair) -> None:
        where = urllib.parse.urlsplit(url)
        self.url, self.host, self.port = url, where.hostname or "", where.port or 443
        self.root = Path(state_dir) / "ntfy"
        self.model = Ntfy(token)
        self.ca = ca
        self._runner: web.AppRunner | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        if self._runner is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        cert, key = self.root / "server.pem", self.root / "server-key.pem"
        pki.issue(self.ca, self.host, sans=[self.host, "localhost"]).save(cert, key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self._runner = web.AppRunner(self.model.app(), access_log=log, access_log_format='%a "%r" %s %b',
                                     shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=context).start()
        log.info("ntfy serving %s", self.url)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def status(self) -> dict:
        return {"url": self.url, "topics": {t: len(m) for t, m in self.model.topics.items()}}
