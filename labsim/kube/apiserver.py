"""The HTTPS front of one cluster: TLS with the cluster CA, authentication (client certificates as
in k3s.yaml, ServiceAccount tokens, impersonation) and RBAC authorization of every request, then
routing to discovery, OpenAPI, version/health and the REST handlers."""

from __future__ import annotations

import json
import logging
import ssl
from typing import TYPE_CHECKING

from aiohttp import web

from labsim.kube import authn, authz, discovery, openapi, openapi_v2
from labsim.kube.apimetrics import ApiMetrics
from labsim.kube.responses import WARNINGS, json_response, status_response
from labsim.kube.rest import RestHandler, parse_target
from labsim.kube.store import StoreError

if TYPE_CHECKING:
    from labsim.kube.cluster import Cluster

log = logging.getLogger("labsim.kube.apiserver")
_ANONYMOUS = {"/version", "/healthz", "/livez", "/readyz"}


def tls_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # health and version answer anonymously; the rest checks the cert
    return ctx


class ApiServer:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.rest = RestHandler(cluster)
        self.metrics = ApiMetrics()
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def start(self, host: str, port: int, tls: ssl.SSLContext) -> None:
        # Open watches end when the server stops, so shutdown need not wait for them.
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=tls, reuse_address=True).start()

    async def stop(self) -> None:
        self.rest.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        log.debug("%s %s accept=%s content-type=%s", request.method, request.path_qs,
                  request.headers.get("Accept"), request.headers.get("Content-Type"))
        try:
            if path not in _ANONYMOUS:
                request[authn.USER] = self.admit_user(request, path)
            response = await self.route(request, path)
            self.metrics.count(request, path, response.status)
            if not response.prepared:
                for warning in request.get(WARNINGS, ()):
                    response.headers.add("Warning", f"299 - {json.dumps(warning)}")
            return response
        except StoreError as exc:
            return json_response(exc.status(), exc.code)
        except (ConnectionResetError, ConnectionError):
            raise
        except Exception as exc:  # a bug of the twin: answer as the API server would, and log it
            log.exception("internal error serving %s %s", request.method, request.path)
            return status_response(500, "InternalError", f"Internal error occurred: {exc}")

    def admit_user(self, request: web.Request, path: str) -> authn.User:
        """The one place requests are authenticated and authorized: 401 without valid credentials,
        403 for what RBAC does not allow (impersonation included)."""
        user = authn.authenticate(self.cluster, request.transport.get_extra_info("peercert"),
                                  request.headers.get("Authorization", ""))
        if user is None:
            raise StoreError(401, "Unauthorized", "Unauthorized")
        authorizer = self.rest.authorizer
        user = authn.impersonate(user, request.headers, authorizer.may_impersonate)
        authorizer.check(authz.request_attributes(user, request.method, path, request.query))
        return user

    async def route(self, request: web.Request, path: str) -> web.StreamResponse:
        cluster, catalog = self.cluster, self.cluster.store.catalog
        accept = request.headers.get("Accept", "")
        if path == "/version":
            return json_response(cluster.version_info())
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/metrics":
            return self.metrics.response(cluster)
        if path in ("/api", "/apis"):
            if discovery.wants_aggregated(accept):
                body = discovery.aggregated(catalog, core=path == "/api")
                return web.Response(body=json.dumps(body).encode(), headers={
                    "Content-Type": discovery.AGGREGATED, "Vary": "Accept"})
            return json_response(discovery.api_versions(f"{cluster.server_ip}:{cluster.port}")
                                 if path == "/api" else discovery.group_list(catalog))
        if path == "/openapi/v2":
            doc = openapi_v2.document(catalog, cluster.version)
            if "protobuf" in accept:
                return web.Response(body=openapi_v2.encode(doc), content_type=openapi_v2.PROTOBUF)
            return json_response(doc)
        if path.startswith("/openapi/"):
            return self.openapi(path)
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) == 2:
            found = discovery.group(catalog, parts[1])
            if found is None:
                raise StoreError(404, "NotFound", "the server could not find the requested resource")
            return json_response(found)
        group, version, rest = parse_target(parts)
        if not rest:
            found = discovery.resource_list(catalog, group, version)
            if found is None:
                raise StoreError(404, "NotFound", "the server could not find the requested resource")
            return json_response(found)
        return await self.rest.handle(request, group, version, rest)

    def openapi(self, path: str) -> web.Response:
        catalog, version = self.cluster.store.catalog, self.cluster.version
        if path == "/openapi/v3":
            return json_response(openapi.index(catalog, version))
        gv = path.removeprefix("/openapi/v3/").split("/")
        group, ver = ("", gv[1]) if gv[0] == "api" and len(gv) == 2 else (gv[1], gv[2]) if len(gv) == 3 else ("", "")
        doc = openapi.group_version_doc(catalog, group, ver, version) if ver else None
        if doc is None:
            raise StoreError(404, "NotFound", "the server could not find the requested resource")
        return json_response(doc)
