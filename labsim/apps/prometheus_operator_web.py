"""The prometheus-operator pod's own web endpoint (``/metrics``, ``/healthz``), as an app model.

The operator's work is labsim.apps.prometheus_operator, which runs beside the cluster's
controllers while this pod is Ready; the pod's process is this small server, so the chart's
``operator`` ServiceMonitor scrapes a process that really answers. It listens where
``--web.listen-address`` says (the chart: ``:10250`` with TLS, ``:8080`` without) and, with
``--web.enable-tls=true``, serves HTTPS with ``--web.cert-file``/``--web.key-file`` when they
exist, else with a self-signed certificate made at start (the chart's admission-certificate Job,
which fills that Secret, is not modelled).
"""

from __future__ import annotations

import ssl
import tempfile
import time
from pathlib import Path

from aiohttp import web

from labsim import pki
from labsim.apps import serve

VERSION = "0.83.0"


def flags(args: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)


def tls_context(found: dict[str, str]) -> ssl.SSLContext | None:
    if found.get("web.enable-tls") != "true":
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert, key = Path("." + found.get("web.cert-file", "/cert/cert")), Path("." + found.get("web.key-file", "/cert/key"))
    if cert.is_file() and key.is_file():
        context.load_cert_chain(cert, key)
        return context
    ca = pki.make_ca("prometheus-operator")
    leaf = pki.issue(ca, "prometheus-operator", sans=["localhost"])
    with tempfile.TemporaryDirectory() as folder:
        leaf.save(Path(folder) / "cert", Path(folder) / "key")
        context.load_cert_chain(Path(folder) / "cert", Path(folder) / "key")
    return context


def make_app(options) -> web.Application:
    started = time.time()

    async def metrics(request: web.Request) -> web.Response:
        lines = ["# HELP prometheus_operator_build_info A metric with a constant '1' value labeled by version, "
                 "revision, branch, goversion from which prometheus_operator was built, and the goos and goarch "
                 "for the build.", "# TYPE prometheus_operator_build_info gauge",
                 f'prometheus_operator_build_info{{branch="HEAD",goarch="amd64",goos="linux",goversion="go1.24.6",'
                 f'revision="labsim",version="{VERSION}"}} 1',
                 "# HELP prometheus_operator_ready 1 when the controller is ready to reconcile resources, "
                 "0 otherwise", "# TYPE prometheus_operator_ready gauge",
                 *[f'prometheus_operator_ready{{controller="{c}"}} 1' for c in ("alertmanager", "prometheus")],
                 "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
                 "# TYPE process_start_time_seconds gauge", f"process_start_time_seconds {started}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    app = web.Application()
    context = tls_context(flags(options.args))
    if context is not None:
        app[serve.TLS] = context
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


if __name__ == "__main__":
    serve.main(make_app)
