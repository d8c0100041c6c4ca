"""HTTP answers of the API: JSON bodies and Status objects."""

from __future__ import annotations

import json

from aiohttp import web

from labsim.kube.store import StoreError

JSON = "application/json"
# What a request should warn its client about (Warning headers, e.g. dropped unknown fields).
WARNINGS = web.RequestKey("warnings", list)


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=dumps(obj), status=status, content_type=JSON)


def status_response(code: int, reason: str, message: str, details: dict | None = None) -> web.Response:
    return json_response(StoreError(code, reason, message, details=details).status(), code)


def success(code: int = 201) -> web.Response:
    """The Status a subresource action (eviction, binding) answers with."""
    return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code},
                         code)
