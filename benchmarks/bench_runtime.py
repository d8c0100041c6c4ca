"""Benchmark of the container runtime (not a test): run ``.venv/bin/python benchmarks/bench_runtime.py``.

Prints, from one embedded cluster (API server in this process, real kubectl):
- pods Running with a listening program per second: N nginx pods (real nginx) applied at once,
  timed until every pod IP answers HTTP;
- port-forward throughput: MB/s of a file fetched from an nginx pod through `kubectl
  port-forward` (SPDY in WebSocket, through the API server), beside the same fetch straight
  from the pod IP (loopback TCP), in the same run, and their ratio;
- memory per real-program pod: the summed RSS of the processes (and their children) the
  supervisor started, divided by the pods.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from labsim.runtime.programs import nginx  # noqa: E402
from tests.labsim.kube_fixtures import TOOLS, running_cluster  # noqa: E402

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: web-{i}, labels: {{app: bench}}}}
spec:
  containers: [{{name: nginx, image: nginx}}]
"""


def _answers(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}/", timeout=2):
            return True
    except OSError:
        return False


def _fetch_seconds(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as answer:
        size = len(answer.read())
    return time.perf_counter() - start, size


def _rss_kib(pids: list[int]) -> int:
    """RSS of the processes and their children (nginx workers)."""
    total, seen = 0, set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--megabytes", type=int, default=64)
    args = parser.parse_args()
    if nginx.bin_dir() is None:
        sys.exit("nginx is not installed: run make programs")
    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp), nodes=3) as kube:
        start = time.perf_counter()
        kube.kubectl("apply", "-f", "-", input="---\n".join(POD.format(i=i) for i in range(args.pods)))
        ips: dict[str, str] = {}
        while len(ips) < args.pods or not all(_answers(ip) for ip in ips.values()):
            pods = json.loads(kube.kubectl("get", "pods", "-o", "json").stdout)["items"]
            ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods if p["status"].get("podIP")}
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        print(f"{args.pods} nginx pods Running and answering HTTP in {elapsed:.2f} s: {args.pods / elapsed:.1f} pods/s")

        pids = [json.loads(f.read_text())["pid"] for f in (kube.cluster.state_dir / "run").glob("*.pid")]
        print(f"memory per nginx pod (master + workers RSS): {_rss_kib(pids) / len(pids) / 1024:.1f} MiB")

        store = kube.cluster.store
        pod = store.get(store.resource("v1", "Pod"), "default", "web-0")
        fs = kube.cluster.runtime.filesystem(pod, pod["spec"]["containers"][0])
        fs.host_path("/usr/share/nginx/html/blob.bin").write_bytes(os.urandom(args.megabytes << 20))
        direct, size = _fetch_seconds(f"http://{ips['web-0']}/blob.bin")
        env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "HOME": str(kube.home)}
        forward = subprocess.Popen([str(TOOLS / "kubectl-1.34"), "port-forward", "pod/web-0", ":80"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert forward.stdout is not None
            local = forward.stdout.readline().split(":")[1].split()[0]
            forwarded, _ = _fetch_seconds(f"http://127.0.0.1:{local}/blob.bin")
        finally:
            forward.terminate()
            forward.wait(10)
        mb = size / (1 << 20)
        print(f"{mb:.0f} MiB direct from the pod IP: {mb / direct:.0f} MB/s; through kubectl port-forward: "
              f"{mb / forwarded:.0f} MB/s; port-forward takes {forwarded / direct:.1f}x the time")


if __name__ == "__main__":
    main()
