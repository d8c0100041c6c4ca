"""Grafana (image ``grafana/grafana``) as an app model: Grafana does not install here. It serves,
on port 3000 of the pod IP, the HTTP API a lab's checks use:

- ``GET /api/health`` (no login): ``{"database": "ok", "version", "commit"}``;
- login: Basic auth (``GF_SECURITY_ADMIN_USER``/``GF_SECURITY_ADMIN_PASSWORD``, which the chart
  fills from its admin Secret) or ``POST /login`` then the ``grafana_session`` cookie; without
  them an API call is 401 ``{"message": "Unauthorized"}`` and a page (``GET /``) a 302 to the
  login page, as Grafana answers;
- ``GET /api/datasources`` and ``/api/datasources/uid/<uid>/health``: the datasources of the
  provisioning files in ``$GF_PATHS_PROVISIONING/datasources`` (the chart's ConfigMap and the
  datasource sidecar write them there); the health check really queries the datasource
  (Prometheus ``1+1``, Loki's labels) through the cluster DNS, as Grafana's backend does;
- ``GET /api/search`` (``query``, ``type``, ``tag``) and ``/api/dashboards/uid/<uid>``: the
  dashboards of the file providers in ``$GF_PATHS_PROVISIONING/dashboards`` (the chart's
  provider points at the folder the dashboard sidecar fills from ConfigMaps labelled
  ``grafana_dashboard``);
- ``POST /api/admin/provisioning/{dashboards,datasources}/reload``: the sidecars' reload call.

Provisioning files are read on each request, so what the sidecars write shows at once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import urllib.request
from pathlib import Path

import yaml
from aiohttp import web

from labsim.apps import incluster, serve

VERSION = "12.0.2"
UNAUTHORIZED = {"message": "Unauthorized"}
# The pages a browser gets: Grafana's are a single-page app; these carry its title and nothing more.
LOGIN_PAGE = "<!DOCTYPE html>\n<html lang=\"en\"><head><title>Grafana</title></head><body>Log in</body></html>\n"
HOME_PAGE = "<!DOCTYPE html>\n<html lang=\"en\"><head><title>Home - Dashboards - Grafana</title></head><body></body></html>\n"


def _provisioning() -> Path:
    return Path(os.environ.get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning").lstrip("/"))


def _yaml_files(folder: Path) -> list[dict]:
    docs = []
    for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
        try:
            docs.append(yaml.safe_load(path.read_text()) or {})
        except yaml.YAMLError as error:
            print(f"provisioning: {path.name}: {error}", flush=True)  # Grafana logs and skips it
    return docs


def datasources() -> list[dict]:
    found = []
    for doc in _yaml_files(_provisioning() / "datasources"):
        for source in doc.get("datasources") or []:
            uid = source.get("uid") or hashlib.sha1(source["name"].encode()).hexdigest()[:14]
            found.append({"id": len(found) + 1, "uid": uid, "orgId": source.get("orgId", 1), "name": source["name"],
                          "type": source.get("type", ""), "typeName": source.get("type", "").title(),
                          "access": source.get("access", "proxy"), "url": source.get("url", ""),
                          "isDefault": bool(source.get("isDefault", False)), "jsonData": source.get("jsonData") or {},
                          "readOnly": True})
    return found


def dashboards() -> list[dict]:
    """Every dashboard of the file providers, with the folder its provider names."""
    found = []
    for doc in _yaml_files(_provisioning() / "dashboards"):
        for provider in doc.get("providers") or []:
            folder = Path(str((provider.get("options") or {}).get("path", "")).lstrip("/"))
            for path in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
                try:
                    board = json.loads(path.read_text())
                except ValueError:
                    print(f"provisioning: {path.name}: not a dashboard JSON", flush=True)
                    continue
                uid = board.get("uid") or hashlib.sha1(str(path).encode()).hexdigest()[:14]
                found.append({**board, "uid": uid, "_folder": provider.get("folder", "")})
    return found


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


class GrafanaAPI:
    def __init__(self) -> None:
        self.user = os.environ.get("GF_SECURITY_ADMIN_USER", "admin")
        self.password = os.environ.get("GF_SECURITY_ADMIN_PASSWORD", "admin")
        self.sessions: set[str] = set()

    def signed_in(self, request: web.Request) -> bool:
        if request.cookies.get("grafana_session") in self.sessions:
            return True
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given_user, _, given = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False
        return given_user == self.user and hmac.compare_digest(given.encode(), self.password.encode())

    @web.middleware
    async def login_required(self, request: web.Request, handler):
        if request.path in ("/api/health", "/login") or self.signed_in(request):
            return await handler(request)
        if request.method == "GET" and not request.path.startswith("/api/"):
            raise web.HTTPFound("/login")  # a browser is sent to log in; an API client is told why
        return web.json_response(UNAUTHORIZED, status=401)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"commit": "labsim", "database": "ok", "version": VERSION})

    async def login_page(self, request: web.Request) -> web.Response:
        return web.Response(text=LOGIN_PAGE, content_type="text/html")

    async def home(self, request: web.Request) -> web.Response:
        return web.Response(text=HOME_PAGE, content_type="text/html")

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        given = str(body.get("password", "")).encode()
        if body.get("user") != self.user or not hmac.compare_digest(given, self.password.encode()):
            return web.json_response({"message": "Invalid username or password"}, status=401)
        session = secrets.token_hex(16)
        self.sessions.add(session)
        reply = web.json_response({"message": "Logged in", "redirectUrl": "/"})
        reply.set_cookie("grafana_session", session, httponly=True, samesite="Lax")
        return reply

    async def list_datasources(self, request: web.Request) -> web.Response:
        return web.json_response(datasources())

    async def datasource_health(self, request: web.Request) -> web.Response:
        source = next((d for d in datasources() if d["uid"] == request.match_info["uid"]), None)
        if source is None:
            return web.json_response({"message": "Data source not found"}, status=404)
        body, status = await asyncio.to_thread(_check, source)  # DNS and HTTP off the loop
        return web.json_response(body, status=status)

    async def search(self, request: web.Request) -> web.Response:
        query, tag = request.query.get("query", "").lower(), request.query.getall("tag", [])
        if request.query.get("type", "dash-db") != "dash-db":
            return web.json_response([])
        hits = []
        for i, board in enumerate(dashboards(), start=1):
            title, tags = board.get("title", ""), board.get("tags") or []
            if query in title.lower() and all(t in tags for t in tag):
                hits.append({"id": i, "uid": board["uid"], "title": title, "uri": f"db/{_slug(title)}",
                             "url": f"/d/{board['uid']}/{_slug(title)}", "slug": "", "type": "dash-db", "tags": tags,
                             "isStarred": False, "folderTitle": board["_folder"] or "General", "sortMeta": 0})
        return web.json_response(sorted(hits, key=lambda h: h["title"].lower()))

    async def dashboard(self, request: web.Request) -> web.Response:
        board = next((b for b in dashboards() if b["uid"] == request.match_info["uid"]), None)
        if board is None:
            return web.json_response({"message": "Dashboard not found"}, status=404)
        meta = {"slug": _slug(board.get("title", "")), "provisioned": True, "folderTitle": board["_folder"] or "General"}
        return web.json_response({"dashboard": {k: v for k, v in board.items() if k != "_folder"}, "meta": meta})

    async def reload(self, request: web.Request) -> web.Response:
        return web.json_response({"message": f"{request.match_info['what'].title()} config reloaded"})


def make_app(options) -> web.Application:
    api = GrafanaAPI()
    app = web.Application(middlewares=[api.login_required])
    app.router.add_get("/api/health", api.health)
    app.router.add_get("/", api.home)
    app.router.add_get("/login", api.login_page)
    app.router.add_post("/login", api.login)
    app.router.add_get("/api/datasources", api.list_datasources)
    app.router.add_get("/api/datasources/uid/{uid}/health", api.datasource_health)
    app.router.add_get("/api/search", api.search)
    app.router.add_get("/api/dashboards/uid/{uid}", api.dashboard)
    app.router.add_post("/api/admin/provisioning/{what}/reload", api.reload)
    return app


# The query Grafana's backend runs to check a datasource, and what it says when it works.
_CHECKS = {"prometheus": ("/api/v1/query?query=1%2B1", "Successfully queried the Prometheus API."),
           "loki": ("/loki/api/v1/labels", "Data source successfully connected."),
           "alertmanager": ("/api/v2/status", "Health check passed.")}


def _check(source: dict) -> tuple[dict, int]:
    path, ok = _CHECKS.get(source["type"], ("/", "Data source is working"))
    url = incluster.resolve_url(source["url"].rstrip("/")) + path
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            reply.read()
        return {"status": "OK", "message": ok}, 200
    except OSError as error:
        return {"status": "ERROR", "message": f"{source['type']}: {source['url']}: {error}"}, 400


if __name__ == "__main__":
    serve.main(make_app)
