"""lab.clusters: a cluster is created once per server node, persisted in the lab's state folder,
and found again (objects, certificates and all) by the registry of a restarted lab."""

from __future__ import annotations

import base64
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

from labsim.clock import Clock
from labsim.kube.registry import ClusterRegistry
from tests.labfiles import unique_pod_networks, unique_subnet


@dataclass
class FakeLab:  # what the registry reads of labsim.lab.Lab
    state_dir: Path
    clock: Clock
    pebble: None = None  # no ACME server, no Cloudflare model
    cloudflare: None = None


async def _get(kubeconfig: str, path: str) -> tuple[int, dict]:
    doc = yaml.safe_load(kubeconfig)
    cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for key in ("client-certificate-data", "client-key-data"):
            files[key] = Path(tmp) / key
            files[key].write_bytes(base64.b64decode(user[key]))
        ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        ctx.load_cert_chain(files["client-certificate-data"], files["client-key-data"])
        async with aiohttp.ClientSession() as session, session.get(cluster["server"] + path, ssl=ctx) as resp:
            return resp.status, await resp.json()


async def test_clusters_persist_and_resume(tmp_path: Path) -> None:
    ip = f"{unique_subnet()}.20"
    pods, services = unique_pod_networks()
    lab = FakeLab(tmp_path, Clock(0))
    registry = ClusterRegistry(lab)
    cluster = await registry.create_server(node_name="k3s-master", ip=ip, version="v1.34.3+k3s1", token="secret",
                                           tls_san=["k3s-master.home.example.com"], disable=["servicelb"],
                                           cluster_init=True, cluster_cidr=pods, service_cidr=services)
    assert await registry.create_server(node_name="k3s-master", ip=ip, version="v1.34.3+k3s1", token="secret",
                                        tls_san=[], disable=[], cluster_init=True, cluster_cidr="127.42.0.0/16",
                                        service_cidr="127.43.0.0/16") is cluster
    await cluster.start_api()
    cluster.store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept", "namespace": "default"},
                          "data": {"v": "1"}})
    status = registry.status()
    assert status == {"server": f"https://{ip}:6443", "kubeconfig": str(tmp_path / "kube" / "k3s-master" / "kubeconfig")}
    kubeconfig = Path(status["kubeconfig"]).read_text()
    code, body = await _get(kubeconfig, "/api/v1/namespaces/default/configmaps/kept")
    assert code == 200 and body["data"] == {"v": "1"}
    await registry.close()

    again = ClusterRegistry(FakeLab(tmp_path, Clock(0)))
    await again.start()
    resumed = again.find(ip)
    assert resumed is not None and resumed.embedded_etcd and resumed.disable == ["servicelb"]
    assert (resumed.cluster_cidr, resumed.service_cidr) == (pods, services)  # as created, kept across restarts
    await resumed.start_api()
    code, body = await _get(kubeconfig, "/api/v1/namespaces/default/configmaps/kept")  # same CA, same client cert
    assert code == 200 and body["data"] == {"v": "1"}
    await again.close()
    await again.remove("k3s-master")
    assert again.find(ip) is None and not (tmp_path / "kube" / "k3s-master").exists()
