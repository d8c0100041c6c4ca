"""A running Cluster for tests, without SSH or k3s: the API server on a unique loopback IP (its
event loop in a background thread), nodes registered as k3s would, and a kubeconfig file.

Use the ``kube`` / ``shared_kube`` fixtures (tests/labsim/conftest.py), or
``running_cluster(tmp_path, nodes=3)`` as a context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from labsim.clock import Clock
from labsim.kube.cluster import Cluster
from tests.labfiles import REPO, unique_pod_networks, unique_subnet

VERSION = "v1.34.3+k3s1"
TOOLS = REPO / ".tools" / "bin"


@dataclass
class RunningCluster:
    cluster: Cluster
    loop: asyncio.AbstractEventLoop
    kubeconfig: Path
    server: str
    home: Path

    def call(self, fn: Callable, *args, timeout: float = 30, **kwargs):
        """Run ``fn`` (plain or async) on the cluster's event loop thread and return its result."""

        async def run():
            result = fn(*args, **kwargs)
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def api_client(self):
        from kubernetes import config

        configuration = client.Configuration()
        config.load_kube_config(str(self.kubeconfig), client_configuration=configuration)
        return client.ApiClient(configuration)

    def tool(self, binary: str, *args: str, check: bool = True, input: str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a real kubectl/helm (from .tools/bin) against this cluster."""
        path = TOOLS / binary
        if not path.exists():
            pytest.skip(f"{path} is not installed (make tools)")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HOME": str(self.home),
               "HELM_CACHE_HOME": str(self.home / "helm-cache"), "HELM_CONFIG_HOME": str(self.home / "helm-config"),
               "HELM_DATA_HOME": str(self.home / "helm-data")}
        done = subprocess.run([str(path), *args], env=env, input=input, capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{binary} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def kubectl(self, *args: str, version: str = "1.34", **kw) -> subprocess.CompletedProcess:
        return self.tool(f"kubectl-{version}", *args, **kw)


async def _join(cluster: Cluster, nodes: int, net: str) -> None:
    for i in range(nodes):
        await cluster.join_node(name="k3s-master" if i == 0 else f"k3s-worker-{i:02d}", ip=f"{net}.{20 + i}",
                                role="server" if i == 0 else "agent", version=VERSION, labels={}, taints=[],
                                cores=2, memory_mib=4096, disk_bytes=32 << 30)


@contextlib.contextmanager
def running_cluster(tmp_path: Path, *, nodes: int = 1, controllers: bool = True,
                    time_scale: float = 0.0) -> Iterator[RunningCluster]:
    state = tmp_path / "kube" / "k3s-master"
    resumed = (state / "cluster.json").exists()
    # A cluster this folder held before is resumed, as a lab restart does: same addresses, same kubeconfig.
    ip = json.loads((state / "cluster.json").read_text())["server_ip"] if resumed else f"{unique_subnet()}.20"
    net = ip.rsplit(".", 1)[0]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kube-test-loop", daemon=True)
    thread.start()
    if resumed:
        cluster = Cluster.load(state, Clock(time_scale), run_controllers=controllers)
    else:
        cluster = Cluster(state, Clock(time_scale), name="k3s-master", version=VERSION,
                          token="K10test::server:secret", server_ip=ip, embedded_etcd=True, tls_san=[ip],
                          run_controllers=controllers,
                          **dict(zip(("cluster_cidr", "service_cidr"), unique_pod_networks(), strict=True)))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    running = RunningCluster(cluster, loop, state / "kubeconfig", f"https://{ip}:6443", home)
    try:
        running.call(cluster.start_api)
        running.call(_join, cluster, nodes, net)
        yield running
    finally:
        try:
            with contextlib.suppress(Exception):  # a stop that failed or timed out: the reap below still runs
                running.call(cluster.close)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()  # raises if the loop did not stop (a stuck callback)
        finally:
            asyncio.run(cluster.runtime.reap())  # what a stop cut short left running: never orphans



_namespaces = itertools.count()


def new_namespace(api: client.ApiClient, prefix: str) -> str:
    """A namespace no other test of this process uses, created through ``api``."""
    name = f"{prefix}{next(_namespaces)}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


def nginx_web(*, replicas: int = 1, team: str = "", readiness: bool = False) -> str:
    """Manifests of the nginx Deployment ``web`` (the real nginx, port 80) and its Service ``web``, as
    tests apply them with kubectl. Text, not objects: some tests edit it (a label, a typo)."""
    labels = f"{{app: web, team: {team}}}" if team else "{app: web}"
    probe = "\n        readinessProbe: {httpGet: {path: /, port: 80}}" if readiness else ""
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {labels}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports: [{{containerPort: 80}}]{probe}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
"""
