"""labkit.observe.discovered_jobs against a real Prometheus (Debian's) that has just started: it
answers before its scrape manager lists any target (an empty list then means "not yet"), and the
jobs come through file SD. The whole set is returned, and only once two looks agreed."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator

import pytest
import requests
import yaml

from labkit import observe
from labsim.runtime.programs import prometheus as prom_program
from tests.labfiles import free_port
from tests.polling import wait_until

pytestmark = pytest.mark.skipif(prom_program.bin_dir() is None, reason="Debian's prometheus is not unpacked (make programs)")


@pytest.fixture
def prometheus(tmp_path) -> Iterator[str]:
    """A fresh Prometheus with two file-SD jobs (nothing answers at their targets: listing is enough)."""
    jobs = []
    for job, port in (("edge", 1), ("core", 2)):
        (tmp_path / f"{job}.json").write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"]}]))
        jobs.append({"job_name": job, "file_sd_configs": [{"files": [str(tmp_path / f"{job}.json")]}]})
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"global": {"scrape_interval": "1m"}, "scrape_configs": jobs}))
    port = free_port()
    process = subprocess.Popen([str(prom_program.bin_dir() / "prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), timeout=60)
        yield url
    finally:
        process.terminate()
        process.wait(20)


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/-/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_discovered_jobs_returns_the_whole_set_once_two_looks_agree(prometheus: str, monkeypatch) -> None:
    looks: list[list[str]] = []
    look = observe.targets

    def counted(stack: observe.Stack) -> observe.Targets:
        found = look(stack)
        looks.append(sorted(found.targets["job"].unique()))
        return found

    monkeypatch.setattr(observe, "targets", counted)
    jobs = observe.discovered_jobs(observe.Stack({"prometheus": prometheus}, contextlib.ExitStack()), timeout=120)
    assert jobs == ["core", "edge"]
    assert len(looks) >= 2 and looks[-2] == looks[-1] == jobs, looks  # one look is never taken as the answer
