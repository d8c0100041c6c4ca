"""cert-manager's acmesolver, what its HTTP-01 solver pod runs (an app model: its Go binary does
not install here): on the pod IP, ``GET /.well-known/acme-challenge/<token>`` for its domain
answers with the key authorization, anything else 404, each request logged as the real one
logs it (pkg/issuer/acme/http/solver). The container's arguments are acmesolver's:
``--listen-port=8089 --domain=D --token=T --key=K``."""

from __future__ import annotations

import argparse
import posixpath
from datetime import UTC, datetime

from aiohttp import web

from labsim.apps import serve

CHALLENGE_PATH = "/.well-known/acme-challenge"
HEADERS = {"Cache-Control": "no-cache, no-store, must-revalidate"}


def log(message: str, **fields: object) -> None:
    """One klog line, as the real solver's structured logger writes them."""
    values = " ".join(f'{k}="{v}"' for k, v in fields.items())
    print(f'I{datetime.now(UTC):%m%d %H:%M:%S.%f} 1 solver.go:0] "{message}" {values}'.rstrip(), flush=True)


def make_app(options: argparse.Namespace) -> web.Application:
    parser = argparse.ArgumentParser(prog="acmesolver")
    for flag in ("--domain", "--token", "--key"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--listen-port", type=int, default=8089)
    solver = parser.parse_args(options.args)
    log("starting listener", expected_domain=solver.domain, expected_token=solver.token, expected_key=solver.key,
        listen_port=solver.listen_port)

    async def answer(request: web.Request) -> web.Response:
        path, host = request.path, request.host.rsplit(":", 1)[0].strip("[]")
        if path in ("/", "/healthz"):
            log("responding OK to health check", host=host, path=path)
            return web.Response(headers=HEADERS)
        base, token = posixpath.dirname(path), posixpath.basename(path)
        log("validating request", host=host, path=path, base_path=base, token=token)
        for wrong, field, expected in (("base_path", base, CHALLENGE_PATH), ("host", host, solver.domain),
                                       ("token", token, solver.token)):
            if field != expected:
                log(f"invalid {wrong}", host=host, path=path, **{f"expected_{wrong}": expected})
                return web.Response(status=404, text="404 page not found\n")
        log("got successful challenge request, writing key", host=host, path=path, token=token)
        return web.Response(text=solver.key, headers=HEADERS)

    app = web.Application()
    app.router.add_get("/{path:.*}", answer)
    return app


if __name__ == "__main__":
    serve.main(make_app)
