"""How fast the embedded lab's hypervisor is, at time_scale 0 (no modelled waiting):

- start-up of ``labsim up --detach`` (first start, which generates the CA and keys, and a restart),
- the proxmoxer flow (clone, configure, resize, start, wait for task and agent IP, shutdown, delete)
  for 3 and for 24 VMs run concurrently, one client thread per VM, against the detached lab.

Run: .venv/bin/python benchmarks/bench_labsim_pve.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.labfiles and the flow helpers

from tests.labfiles import sim_config, sim_lab, write_lab
from tests.labsim.pveclient import provision, teardown, token_client


def labsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labsim", *args], capture_output=True, text=True, check=True)


def timed_up(state: Path) -> float:
    start = time.perf_counter()
    labsim("up", "--state", str(state), "--detach")
    return time.perf_counter() - start


def run_flow(status: dict, count: int) -> float:
    net = status["vms_subnet"]
    public_key = Path(status["ssh"]["private_key"] + ".pub").read_text().strip()

    def one(i: int) -> None:
        api = token_client(status, timeout=60)
        vmid = 200 + i
        provision(api, vmid, f"bench-{i:02d}", f"{net}.{20 + i}", public_key, gateway=f"{net}.1")
        teardown(api, vmid)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(one, range(count)))
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        doc = sim_lab(Path(tmp), time_scale=0.0)
        state = sim_config(write_lab(Path(tmp), doc)).state_dir  # labsim's config.json, as labkit writes it
        first = timed_up(state)
        labsim("down", "--state", str(state))
        restart = timed_up(state)
        try:
            status = json.loads(labsim("status", "--state", str(state), "--json").stdout)
            status["vms_subnet"] = doc["network"]["subnet"].rsplit(".", 1)[0]
            flows = {n: run_flow(status, n) for n in (3, 24)}
        finally:
            labsim("down", "--state", str(state))
    print(f"labsim up --detach, first start (generates CA, keys):  {first:6.2f} s")
    print(f"labsim up --detach, restart (resumes state):           {restart:6.2f} s")
    for n, seconds in flows.items():
        print(f"proxmoxer flow, {n:2d} VMs concurrently (time_scale 0):   {seconds:6.2f} s  ({seconds / n:.2f} s per VM)")
    print(f"ratio 24 VMs / 3 VMs: {flows[24] / flows[3]:.1f}x for 8x the VMs")


if __name__ == "__main__":
    main()
