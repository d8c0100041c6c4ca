"""An in-process cluster for the controller tests: the real Store and Clock with the
controllers running on the test's event loop, and nodes as k3s registers them."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labsim.clock import Clock
from labsim.kube.controllers import CONTROLLERS
from labsim.kube.logs import PodLogs
from labsim.kube.store import Store
from labsim.pki import make_ca
from labsim.runtime.runtime import ContainerRuntime
from tests.labfiles import unique_pod_networks


@dataclass
class InProcessCluster:
    clock: Clock = field(default_factory=lambda: Clock(0))
    store: Store = field(init=False)
    server_ip: str = "127.9.0.20"
    token: str = "K10test::server:secret"
    # Pod IPs and ClusterIPs the twin binds: networks of this cluster's own, never the embedded
    # lab's default 127.42/16 and 127.43/16 (a lab kept running beside the tests) nor another test's.
    cluster_cidr: str = ""
    service_cidr: str = ""

    def __post_init__(self) -> None:
        if not self.cluster_cidr:
            self.cluster_cidr, self.service_cidr = unique_pod_networks()
        self.store = Store(self.clock)
        self.logs = PodLogs(self.store.now)
        self.state_dir = Path(tempfile.mkdtemp(prefix="labsim-controllers-"))  # containers' files
        self.runtime = ContainerRuntime(self)
        self._ca = make_ca("k3s-server-ca")
        for ns in ("default", "kube-system"):
            self.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    def node_pod_cidr(self, index: int) -> str:
        """The /24 of the cluster CIDR a node of this ``index`` gets (as k3s hands them out)."""
        return str(list(ipaddress.ip_network(self.cluster_cidr).subnets(new_prefix=24))[index])

    def ca_pem(self) -> bytes:
        return self._ca.cert_pem

    def now(self) -> float:
        return self.clock.now()

    def add_node(self, name: str, index: int, *, cpu: str = "2", memory: str = "4Gi", ready: bool = True,
                 labels: dict | None = None, taints: list | None = None, pod_cidr: str = "") -> dict:
        pod_cidr = pod_cidr or self.node_pod_cidr(index)
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                  **(labels or {})}},
            "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr],
                     **({"taints": taints} if taints else {})},
            "status": {
                "addresses": [{"type": "InternalIP", "address": f"127.9.0.{20 + index}"},
                              {"type": "Hostname", "address": name}],
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                "nodeInfo": {"bootID": f"boot-{name}", "kubeletVersion": "v1.34.3+k3s1"},
            },
        }
        return self.store.create(node)

    def set_node(self, name: str, change: Callable[[dict], None]) -> None:
        node = self.store.get(self.store.resource("v1", "Node"), None, name)
        change(node)
        node["metadata"]["resourceVersion"] = self.store.update(node)["metadata"]["resourceVersion"]
        self.store.update(node, subresource="status")


@contextlib.asynccontextmanager
async def running(cluster: InProcessCluster, keep_state: bool = False):
    """The controllers run inside; on exit they stop, and the containers' files go unless
    ``keep_state`` (a lab that comes back keeps them)."""
    tasks = [asyncio.create_task(run(cluster)) for run in CONTROLLERS]
    try:
        yield cluster
    finally:
        try:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await cluster.runtime.close()
        finally:
            await cluster.runtime.reap()  # what a stop cut short (the test's timeout) left running: never orphans
            if not keep_state:
                shutil.rmtree(cluster.state_dir, ignore_errors=True)


async def wait_for(predicate: Callable[[], object], timeout: float = 30.0):
    """Poll ``predicate`` until truthy (the controllers run in between); its value is returned. The
    timeout leaves room for real programs starting on a loaded 2-core machine."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)
