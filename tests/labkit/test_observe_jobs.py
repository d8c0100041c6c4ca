"""labkit.observe.discovered_jobs against a real Prometheus (Debian's) that has just started: it
answers before its scrape manager lists any target (an empty list then means "not yet"), and the
jobs come through file SD. The whole set is returned: once every configured scrape pool has targets,
or, with a pool that discovers nothing, once the list stood still for ``settle`` seconds."""

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


@pytest.fixture(params=[False, True], ids=["every pool finds targets", "one pool finds none"])
def prometheus(request, tmp_path) -> Iterator[tuple[str, bool]]:
    """A fresh Prometheus with two file-SD jobs (nothing answers at their targets: listing is enough)
    and, in the second case, a third whose file lists no target; its URL and whether it has that one."""
    jobs, listed = [], [("edge", [1]), ("core", [2])] + ([("idle", [])] if request.param else [])
    for job, ports in listed:
        (tmp_path / f"{job}.json").write_text(json.dumps([{"targets": [f"127.0.0.1:{p}" for p in ports]}]))
        jobs.append({"job_name": job, "file_sd_configs": [{"files": [str(tmp_path / f"{job}.json")]}]})
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"global": {"scrape_interval": "1m"}, "scrape_configs": jobs}))
    port = free_port()
    process = subprocess.Popen([str(prom_program.bin_dir() / "prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), timeout=60)
        yield url, request.param
    finally:
        process.terminate()
        process.wait(20)


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/-/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_discovered_jobs_returns_the_whole_set(prometheus: tuple[str, bool], monkeypatch) -> None:
    looks: list[tuple[list[str], bool]] = []  # the jobs each look saw, and whether every pool had targets
    look = observe.targets

    def counted(stack: observe.Stack) -> observe.Targets:
        found = look(stack)
        pools = observe.scrape_pools(stack)
        looks.append((sorted(found.targets["job"].unique()), bool(pools) and pools <= set(found.targets["pool"])))
        return found

    monkeypatch.setattr(observe, "targets", counted)
    url, idle_pool = prometheus
    stack = observe.Stack({"prometheus": url}, contextlib.ExitStack())
    jobs = observe.discovered_jobs(stack, timeout=120, settle=1)
    assert jobs == ["core", "edge"]
    assert "idle" not in jobs and jobs == looks[-1][0], looks
    if idle_pool:  # one pool finds nothing: the list had to stand still
        assert not looks[-1][1] and len(looks) >= 2 and looks[-2][0] == jobs, looks
    else:  # every pool found: returned at the first look that saw them all
        assert looks[-1][1] and not any(complete for _, complete in looks[:-1]), looks
