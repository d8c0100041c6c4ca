"""App models run as processes of their own: the adapter's command line serves the model on the
pod IP, passes the container's arguments, logs each request and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request

from labsim.runtime.programs.appmodel import AppModel
from tests.labfiles import REPO, free_port
from tests.polling import wait_until


def test_an_app_model_serves_on_the_pod_ip_logs_requests_and_stops_on_sigterm(tmp_path) -> None:
    port = free_port("127.0.0.1")
    model = AppModel("tests.labsim.appmodel_hello", port)
    argv = model.server(None, "hello:1", {}, "127.0.0.1", ["--flag", "x"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the test model lives in tests/, not in the package
    process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        answer = wait_until(lambda: _get(f"http://127.0.0.1:{port}/"), timeout=30)
        assert answer == {"args": ["--flag", "x"]}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        log = process.stdout.read()
        assert f"listening on 127.0.0.1:{port}" in log
        assert '"GET / HTTP/1.1" 200' in log
    finally:
        process.kill()


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return json.loads(reply.read())
    except OSError:
        return None
