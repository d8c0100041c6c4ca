"""Benchmark (not a test): time from the k3s server install command to all 3 nodes Ready, at
time_scale 0, on a fresh embedded lab each run.

    .venv/bin/python benchmarks/bench_k3s_install.py [--runs 3] [--timeout 120]

Each run provisions three VMs through the PVE API (not timed), then does what a user does over
SSH, timed from the first command: `curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION=... sh -s -
server`, read the node token and the kubeconfig, install both agents at once, and poll the API
until every Node is Ready. The lab binds a loopback subnet and ports of its own (tests/labfiles).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from labsim.lab import running_lab  # noqa: E402
from tests.labfiles import sim_config, write_lab  # noqa: E402
from tests.labsim.k3s_lab import INSTALL, VERSION, K3sLab, nodes  # noqa: E402

POLL_SECONDS = 0.02


def install_to_ready(lab: K3sLab, folder: Path, timeout: float) -> dict[str, float]:
    """Seconds from the server install command to: it returning, both agents' installs returning,
    all three Nodes Ready."""
    start = time.perf_counter()
    server = lab.ssh(0, f"{INSTALL}INSTALL_K3S_VERSION={VERSION} sh -s - server")
    if server.exit_status != 0:
        raise RuntimeError(f"server install failed: {server.stderr}")
    server_done = time.perf_counter() - start
    token = lab.ok(0, "sudo cat /var/lib/rancher/k3s/server/node-token").strip()
    kube = lab.kube(folder)
    agent = f"{INSTALL}K3S_URL=https://{lab.ip(0)}:6443 K3S_TOKEN={token} INSTALL_K3S_VERSION={VERSION} sh -s - agent"

    async def agents():
        return await asyncio.gather(*(lab.ssh_async(i, agent) for i in (1, 2)))

    failed = [r.stderr for r in asyncio.run(agents()) if r.exit_status != 0]
    if failed:
        raise RuntimeError(f"agent install failed: {failed}")
    agents_done = time.perf_counter() - start
    deadline = start + timeout
    while True:
        found = nodes(kube)
        if len(found) == 3 and all(n["ready"] for n in found.values()):
            return {"server": server_done, "agents": agents_done, "ready": time.perf_counter() - start}
        if time.perf_counter() > deadline:
            raise TimeoutError(f"nodes not all Ready after {timeout} s: {found}")
        time.sleep(POLL_SECONDS)


def one_run(timeout: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        lab_file = write_lab(Path(tmp), workers=2, time_scale=0.0)
        with running_lab(sim_config(lab_file)) as handle:
            lab = K3sLab.boot(handle, lab_file)
            return install_to_ready(lab, Path(tmp), timeout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a run may take to all Ready")
    args = parser.parse_args()
    runs = []
    for n in range(1, args.runs + 1):
        run = one_run(args.timeout)
        runs.append(run)
        print(f"run {n}: server install returned {run['server']:6.2f} s, agents joined {run['agents']:6.2f} s, "
              f"3 nodes Ready {run['ready']:6.2f} s")
    ready = [r["ready"] for r in runs]
    print(f"install command -> 3 nodes Ready (time_scale 0, {len(runs)} runs): median {statistics.median(ready):.2f} s, "
          f"min {min(ready):.2f} s, max {max(ready):.2f} s")


if __name__ == "__main__":
    main()
