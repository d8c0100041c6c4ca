"""labkit.observe's Stack against a real Prometheus (Debian's) behind a counting TCP relay (what
the API server's port-forward is: each new connection a new tunnel): the stack's requests share one
kept connection; wait_rules leaves out the rule groups it is told to skip (the disk drill's copy,
loaded while the probes run)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest
import requests
import yaml

from labkit import observe
from labsim.runtime.programs import prometheus as prom_program
from tests.labfiles import free_port
from tests.polling import wait_until

pytestmark = pytest.mark.skipif(prom_program.bin_dir() is None, reason="Debian's prometheus is not unpacked (make programs)")

RULE = {"alert": "LabDown", "expr": "vector(1) == 0", "for": "5m", "labels": {"severity": "critical"}}


class Relay:
    """127.0.0.1:<port> relayed to ``target``, counting the connections it accepted."""

    def __init__(self, target: int) -> None:
        self.target, self.accepted = target, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                local, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            remote = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((local, remote), (remote, local)):
                threading.Thread(target=self._copy, args=(a, b), daemon=True).start()

    @staticmethod
    def _copy(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Iterator[int]:
    """A Prometheus evaluating the lab's group and its drill copy each second; its port."""
    folder = tmp_path_factory.mktemp("prometheus")
    groups = [{"name": name, "interval": "1s", "rules": [RULE]} for name in ("lab", "lab-drill")]
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    (folder / "prometheus.yml").write_text(yaml.safe_dump({"global": {"evaluation_interval": "1s"},
                                                           "rule_files": [str(folder / "rules.yaml")]}))
    port = free_port()
    process = subprocess.Popen([str(prom_program.bin_dir() / "prometheus"), f"--config.file={folder / 'prometheus.yml'}",
                                f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _ready(port), timeout=60)
        yield port
    finally:
        process.terminate()
        process.wait(20)


def _ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def stack(prometheus: int) -> Iterator[tuple[observe.Stack, Relay]]:
    relay = Relay(prometheus)
    stack = observe.Stack({"prometheus": f"http://127.0.0.1:{relay.port}"}, contextlib.ExitStack())
    try:
        yield stack, relay
    finally:
        stack.close()
        relay.close()


def test_the_stacks_requests_share_one_kept_connection(stack) -> None:
    stack, relay = stack
    for _ in range(3):
        assert observe.alertmanagers(stack) == []  # no alerting section: none
        assert observe.prometheus_alerts(stack) == []
        assert set(observe.loaded_rules(stack).rules["group"]) == {"lab", "lab-drill"}
        assert observe.targets(stack).targets.empty
    assert relay.accepted == 1  # twelve requests, one tunnel


def test_wait_rules_leaves_out_the_groups_it_skips(stack) -> None:
    stack, _ = stack
    everything = observe.wait_rules(stack, ["LabDown"], timeout=60)
    assert sorted(everything.rules["group"]) == ["lab", "lab-drill"]
    lab = observe.wait_rules(stack, ["LabDown"], timeout=60, skip=("lab-drill",))
    assert lab.rules.to_dict("records") == [{"group": "lab", "rule": "LabDown", "type": "alerting", "health": "ok",
                                             "state": "inactive", "lastError": ""}]
    assert [c.passed for c in lab.checks(["LabDown"])] == [True, True]


def test_a_component_answering_with_an_error_is_an_observe_error_naming_it(stack) -> None:
    """/metrics read as text (Alertmanager's notification counters) is checked like the JSON API:
    an error page is not parsed as 'nothing sent'."""
    stack, _ = stack
    assert "prometheus_build_info" in stack.text("prometheus", "/metrics")
    with pytest.raises(observe.ObserveError, match=r"GET http://127\.0\.0\.1:\d+/no-such-page: HTTP 404"):
        stack.text("prometheus", "/no-such-page")
