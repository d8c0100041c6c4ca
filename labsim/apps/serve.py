"""The entry point app models share (``python -m labsim.apps.<app> --host IP --port N -- ARGS``):
serve an aiohttp application on the pod IP until SIGTERM, logging one line per request to stdout
(the container's log), as the real apps' access logs do. An application holding an SSL context
under ``TLS`` is served over HTTPS. ``pace`` waits a modelled duration on the lab's clock (the
runtime gives app models the lab's time scale in ``LABSIM_TIME_SCALE``). A request with a body is
answered no sooner than ``ANSWER_FLOOR`` after it arrived (``not_instant``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable

from aiohttp import web

# The lab's time scale, in the process's environment only (`kubectl exec env` does not show it). Here,
# not in labsim.runtime, whose package loads the node and k3s models: an app model's process imports
# only this module, aiohttp and its own (0.5 s of CPU less at each of the ~15 app models' starts).
TIME_SCALE_ENV = "LABSIM_TIME_SCALE"
TLS = web.AppKey("tls", ssl.SSLContext)
# Real seconds before a request with a body is answered. Go's HTTP/1 reverse proxy (Traefik) drops
# its backend connection, cutting the answer mid-body, when the response starts before its
# transport has finished with the request body (golang/go#40747): an app model at time scale 0
# answered in microseconds and lost 1 to 3 streamed answers in 100 behind the real Traefik (a plain
# aiohttp stream behind it: 102 of 3000 cut with no floor, none with 5 ms). A real server takes
# milliseconds anyway.
ANSWER_FLOOR = 0.02


def time_scale() -> float:
    """Real seconds per modelled second (1 when run by hand)."""
    return float(os.environ.get(TIME_SCALE_ENV, "1"))


async def pace(modelled_seconds: float) -> None:
    """Spend a modelled duration as the rest of the lab does: scaled, and at time scale 0 only a yield."""
    await asyncio.sleep(max(0.0, modelled_seconds) * time_scale())


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """--host, --port and the container's own arguments (after ``--``) as ``args``."""
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    ours, theirs = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    found = parser.parse_args(ours)
    found.args = theirs
    return found


def main(make_app: Callable[[argparse.Namespace], web.Application], argv: list[str] | None = None) -> None:
    """Serve ``make_app(options)`` on host:port until SIGTERM (exit 0) or SIGINT."""
    found = options(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    asyncio.run(_serve(make_app(found), found.host, found.port))
    # Served, connections closed, the app's cleanup run: exit now. The interpreter's own teardown
    # (finalizing aiohttp's, ssl's... modules) cost ~50 ms of CPU per model: when every pod stops at
    # once (k3s stopped, 07's etcd drill) the last of ~15 models ended 0.4-0.9 s after SIGTERM.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@web.middleware
async def not_instant(request: web.Request, handler):
    """Read a request's body, then wait ``ANSWER_FLOOR`` before the handler answers it."""
    if request.can_read_body:
        await request.read()  # kept by aiohttp: the handler reads it again
        await asyncio.sleep(ANSWER_FLOOR)
    return await handler(request)


async def _serve(app: web.Application, host: str, port: int) -> None:
    app.middlewares.append(not_instant)
    runner = web.AppRunner(app, access_log_format='%a "%r" %s %b')
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=app.get(TLS)).start()
    print(f"listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
