"""The Proxmox VE API over HTTPS: ``/api2/json/...`` answering as PVE does, plus the lab's
admin endpoint under ``/labsim/`` (outside PVE's namespace).

Middlewares, outermost first: injected connection faults, then PVE's error shapes (501 for
unknown paths). Each endpoint authenticates, checks and types its parameters, and wraps what
its handler returns as ``{"data": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from labsim.pve import admin, nodes_api, qemu_api  # noqa: F401 - they register their routes
from labsim.pve.auth import Auth
from labsim.pve.errors import PVEError
from labsim.pve.model import ProxmoxVE
from labsim.pve.routes import ROUTES, Call, Route, check
from labsim.secrets import LabSecrets

API = "/api2/json"
Middleware = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PVEServer:
    def __init__(self, pve: ProxmoxVE, secrets: LabSecrets, status: Callable[[], dict[str, Any]]) -> None:
        self.pve = pve
        self.auth = Auth(pve.config.token_id, secrets.pve_token_secret, secrets.pve_root_password, pve.clock)
        self.secrets = secrets
        self.status = status  # the lab's status, for the admin endpoint
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(middlewares=[self._faults, self._errors])
        for r in ROUTES:
            app.router.add_route(r.method, API + r.path, self._endpoint(r))
        app.router.add_post(API + "/access/ticket", self._ticket)
        admin.add_routes(app, self)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.secrets.server_cert, self.secrets.server_key)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.pve.config.pve_host, self.pve.config.pve_port, ssl_context=context,
                           reuse_address=True)
        await site.start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ---------------------------------------------------------------- middlewares

    @web.middleware
    async def _faults(self, request: web.Request, handler: Middleware) -> web.StreamResponse:
        faults = self.pve.faults
        if faults.drop_requests > 0 and not request.path.startswith("/labsim/"):
            faults.drop_requests -= 1
            if request.transport is not None:
                request.transport.abort()  # the client sees its connection reset, no answer
            raise asyncio.CancelledError
        if faults.request_delay > 0 and not request.path.startswith("/labsim/"):
            await asyncio.sleep(faults.request_delay)
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Middleware) -> web.StreamResponse:
        try:
            return await handler(request)
        except PVEError as error:
            return error_response(error)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            path = request.path.removeprefix(API)
            return error_response(PVEError(501, f"Method '{request.method} {path}' not implemented"))

    # ---------------------------------------------------------------- handlers

    def _endpoint(self, r: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            identity = self.auth.authenticate(request)
            args = check(r, dict(request.match_info), await request_values(request))
            if "node" in args:
                self.pve.check_node(args["node"])
            data = await r.handler(self.pve, Call(args, identity.user))
            return web.json_response({"data": data})
        return endpoint

    async def _ticket(self, request: web.Request) -> web.Response:
        values = await request_values(request)
        data = self.auth.login(str(values.get("username", "")), str(values.get("password", "")))
        return web.json_response({"data": data})


async def request_values(request: web.Request) -> dict[str, Any]:
    """Parameters from the query string and, for writes, the form or JSON body."""
    values: dict[str, Any] = dict(request.query)
    if request.method in ("POST", "PUT") and request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            values.update({k: val for k, val in body.items() if val is not None})
        else:
            values.update({k: val for k, val in (await request.post()).items() if isinstance(val, str)})
    return values


def error_response(error: PVEError) -> web.Response:
    body: dict[str, Any] = {"data": None, "message": error.message + "\n"}
    if error.errors:
        body["errors"] = error.errors
    reason = error.message.splitlines()[0][:200]
    return web.Response(status=error.status, reason=reason, text=json.dumps(body), content_type="application/json")
