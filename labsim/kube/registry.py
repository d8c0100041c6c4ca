"""lab.clusters: the k3s clusters of one embedded lab, one per server node, persisted under
<state_dir>/kube/<node>/ and resumed when the lab restarts."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from labsim.kube.cluster import Cluster

log = logging.getLogger("labsim.kube.registry")


class ClusterRegistry:
    def __init__(self, lab) -> None:
        self.lab = lab
        self.root = Path(lab.state_dir) / "kube"
        self.clusters: dict[str, Cluster] = {}

    async def start(self) -> None:
        """Load the clusters a previous run of the lab left in the state folder. Their API servers
        start when the k3s service of their server node starts again (``start_api``)."""
        if not self.root.is_dir():
            return
        for meta in sorted(self.root.glob("*/cluster.json")):
            name = meta.parent.name
            if name in self.clusters:
                continue
            try:
                cluster = Cluster.load(meta.parent, self.lab.clock)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("cannot resume the cluster in %s: %s", meta.parent, exc)
                continue
            self.clusters[name] = cluster
            self._connect(cluster)

    def _connect(self, cluster: Cluster) -> None:
        """What the cluster's pods reach outside it: the lab's ACME server and Cloudflare model;
        which of its nodes' machines run (kube-proxy serves NodePorts on those)."""
        cluster.pebble, cluster.cloudflare = self.lab.pebble, self.lab.cloudflare
        cluster.machine_runs = lambda ip: self.lab.nodes.at(ip) is not None

    async def close(self) -> None:
        for cluster in self.clusters.values():
            await cluster.close()

    async def create_server(self, *, node_name: str, ip: str, version: str, token: str, tls_san: list[str],
                            disable: list[str], cluster_init: bool, cluster_cidr: str, service_cidr: str) -> Cluster:
        """The cluster whose server runs on ``node_name`` (created and persisted once; the caller
        starts its API with ``start_api``). Its CIDRs are the ones it was created with, as a k3s
        cluster's cannot change once it is initialised."""
        cluster = self.clusters.get(node_name)
        if cluster is None:
            cluster = Cluster(self.root / node_name, self.lab.clock, name=node_name, version=version, token=token,
                              server_ip=ip, embedded_etcd=cluster_init, disable=disable, tls_san=tls_san,
                              cluster_cidr=cluster_cidr, service_cidr=service_cidr)
            self.clusters[node_name] = cluster
            self._connect(cluster)
            cluster.save()
        return cluster

    async def remove(self, node_name: str) -> None:
        """Forget a cluster and its state (k3s-uninstall.sh): its API and every container of it stop."""
        cluster = self.clusters.pop(node_name, None)
        if cluster is not None:
            await cluster.close()
        shutil.rmtree(self.root / node_name, ignore_errors=True)

    def find(self, ip: str) -> Cluster | None:
        return next((c for c in self.clusters.values() if c.server_ip == ip), None)

    def status(self) -> dict | None:
        for name, cluster in self.clusters.items():
            return {"server": f"https://{cluster.server_ip}:{cluster.port}",
                    "kubeconfig": str(self.root / name / "kubeconfig")}
        return None
