"""Benchmark (not a test): the twin's kube-proxy against a direct loopback TCP connection, side by
side in one run: bulk throughput (MB/s) and connections per second, and their ratios.

    .venv/bin/python benchmarks/bench_kube_proxy.py [--mib 64] [--runs 3] [--connections 300]

A lab with a k3s server (time_scale 0) runs in this process, as in the tests; a Deployment's pod
gets a loopback pod IP and a ClusterIP Service. A second process (so that the client does not
compete with the proxy for this process's interpreter) binds a sink on the pod IP, where the
container would listen, and measures, alternating the two paths each run: sending --mib MiB and
waiting for the sink's byte count (direct to pod IP:port vs through ClusterIP:port), then
--connections short connections (connect, 1-byte request, 1-byte reply, close).
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import socketserver
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHUNK = 256 * 1024
POD_PORT, SERVICE_PORT = 7000, 8081


class _Sink(socketserver.BaseRequestHandler):
    """Reads until the client half-closes, then answers with the byte count (or echoes 1 byte)."""

    def handle(self) -> None:
        total = 0
        while data := self.request.recv(CHUNK):
            total += len(data)
            if data == b"?":  # a short connection's request
                self.request.sendall(b"!")
                return
        self.request.sendall(str(total).encode())


def _upload(ip: str, port: int, size: int) -> float:
    payload = b"x" * CHUNK
    start = time.perf_counter()
    with socket.create_connection((ip, port), timeout=30) as sock:
        sent = 0
        while sent < size:
            sock.sendall(payload)
            sent += len(payload)
        sock.shutdown(socket.SHUT_WR)
        if int(sock.recv(64)) != sent:
            raise RuntimeError(f"sink got a different byte count through {ip}:{port}")
    return size / (time.perf_counter() - start) / 1e6


def _connections(ip: str, port: int, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        with socket.create_connection((ip, port), timeout=10) as sock:
            sock.sendall(b"?")
            if sock.recv(1) != b"!":
                raise RuntimeError(f"no reply through {ip}:{port}")
    return count / (time.perf_counter() - start)


def measure(pod_ip: str, cluster_ip: str, size: int, runs: int, count: int) -> dict[str, list[float]]:
    """In the client process: the sink on the pod IP, then both paths, alternating per run."""
    server = socketserver.ThreadingTCPServer((pod_ip, POD_PORT), _Sink)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    paths = {"direct": (pod_ip, POD_PORT), "proxy": (cluster_ip, SERVICE_PORT)}
    _wait_serving(*paths["proxy"])
    results: dict[str, list[float]] = {f"{p} {m}": [] for p in paths for m in ("MB/s", "conn/s")}
    try:
        for _ in range(runs):
            for path, (ip, port) in paths.items():
                results[f"{path} MB/s"].append(_upload(ip, port, size))
                results[f"{path} conn/s"].append(_connections(ip, port, count))
    finally:
        server.shutdown()
        server.server_close()
    return results


def _wait_serving(ip: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _connections(ip, port, 1)
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{ip}:{port} does not forward")


def main() -> int:
    from kubernetes import client

    from labsim.lab import running_lab
    from tests.labfiles import write_lab
    from tests.labsim.k3s_lab import K3sLab
    from tests.labsim.test_net import echo_app, ready_pod_ips

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_lab(lab_file := write_lab(Path(tmp), workers=0)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        if lab.install_server().exit_status != 0:
            raise RuntimeError("k3s server install failed")
        core = client.CoreV1Api(lab.kube(Path(tmp)))
        echo_app(core, "sink", 1)  # containerPort 7000, Service port 8081
        (pod_ip,) = ready_pod_ips(core, "sink", 1)
        cluster_ip = core.read_namespaced_service("sink", "default").spec.cluster_ip
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            results = pool.apply(measure, (pod_ip, cluster_ip, args.mib << 20, args.runs, args.connections))
    print(f"kube-proxy vs direct loopback TCP, {args.runs} runs, {args.mib} MiB uploads, "
          f"{args.connections} short connections per run")
    for name, values in results.items():
        print(f"  {name:<14} median {statistics.median(values):9.1f}   runs {', '.join(f'{v:.1f}' for v in values)}")
    for metric in ("MB/s", "conn/s"):
        ratio = statistics.median(results[f"proxy {metric}"]) / statistics.median(results[f"direct {metric}"])
        print(f"  proxy/direct {metric}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
