"""labkit.apps.pull when the pull is cut off: the twin's Ollama model, run as its own process at
time scale 1 (a 1.3 GB pull takes ~1.4 s), is killed mid-pull and started again; labkit pulls
again and Ollama resumes. Cuts in a row back off, then stop with a message that counts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import ollama
import pytest

from labkit import apps
from tests.labfiles import free_port


class OllamaProcess:
    """The app model on a loopback port, its models in a folder that outlives the process."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.process = root, free_port(), None

    def start(self) -> None:
        env = {**os.environ, "LABSIM_TIME_SCALE": "1", "OLLAMA_MODELS": "/models"}  # a path in its root (cwd)
        log = self.root / "log"
        log.write_text("")
        with log.open("w") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "labsim.apps.ollama", "--host", "127.0.0.1",
                                             "--port", str(self.port)], cwd=self.root, env=env, stdout=out)
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def client(self) -> ollama.Client:
        return ollama.Client(host=f"http://127.0.0.1:{self.port}", timeout=30)


@pytest.fixture
def model(tmp_path: Path):
    server = OllamaProcess(tmp_path)
    server.start()
    yield server
    server.kill()


def _blob_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "models" / "blobs").glob("sha256-*"))


def test_a_pull_cut_off_mid_layer_is_pulled_again_and_resumes(model: OllamaProcess,
                                                             capsys: pytest.CaptureFixture) -> None:
    def cut_then_restart() -> None:
        deadline = time.monotonic() + 10
        while _blob_bytes(model.root) < 300_000_000 and time.monotonic() < deadline:  # mid-way through the weights
            time.sleep(0.02)
        model.kill()
        model.start()

    cutter = threading.Thread(target=cut_then_restart)
    cutter.start()
    assert apps.pull(model.client(), "llama3.2:1b", pause=0.5) == "llama3.2:1b"
    cutter.join()
    lines = capsys.readouterr().out.splitlines()
    cuts = [i for i, line in enumerate(lines) if "cut off (" in line]
    assert cuts and "pulling again in 0.5 s, Ollama resumes" in lines[cuts[0]]
    resumed = next(line for line in lines[cuts[-1]:] if "% " in line + " ")
    assert not resumed.endswith(" 0%"), resumed  # the layer went on from where the cut left it
    assert [m.model for m in model.client().list().models] == ["llama3.2:1b"]
    assert _blob_bytes(model.root) >= 1_321_082_688  # the weights, whole, after the resumed pull


def test_cuts_in_a_row_stop_with_a_message_that_counts_them(model: OllamaProcess,
                                                            capsys: pytest.CaptureFixture) -> None:
    model.kill()  # nothing listens: each attempt is refused
    with pytest.raises(apps.AppError, match=r"pull of qwen2.5:0.5b was cut off 3 times \(last: .+\); see the ollama"):
        apps.pull(model.client(), "qwen2.5:0.5b", attempts=3, pause=0.1)
    waits = [line.split("pulling again in ")[1] for line in capsys.readouterr().out.splitlines() if "again in" in line]
    assert waits == ["0.1 s, Ollama resumes", "0.2 s, Ollama resumes"]  # backing off
    model.start()  # for the fixture's kill


def test_an_unknown_model_is_not_pulled_again(model: OllamaProcess) -> None:
    with pytest.raises(apps.AppError, match="could not pull nosuchmodel:1b: pull model manifest: file does not exist"):
        apps.pull(model.client(), "nosuchmodel:1b", pause=30)  # a retry would take 30 s and then say "cut off"
