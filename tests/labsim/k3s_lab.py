"""A running lab with booted VMs for the k3s tests, driven as an operator drives one: VMs
provisioned through the PVE API, commands over SSH (asyncssh with the lab's operator key), the
cluster through the kubeconfig fetched from the server, TLS verified."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import yaml
from kubernetes import client, config

import labsim.k3s  # noqa: F401  -- registers k3s with the nodes' shell
from labsim.lab import LabHandle
from tests.labsim.pveclient import provision, token_client

VERSION = "v1.34.3+k3s1"
INSTALL = "curl -sfL https://get.k3s.io | "


@dataclass
class Result:
    exit_status: int
    stdout: str
    stderr: str


@dataclass
class K3sLab:
    handle: LabHandle
    doc: dict[str, Any]
    status: dict[str, Any]

    @classmethod
    def boot(cls, handle: LabHandle, lab_file: Path) -> K3sLab:
        doc = yaml.safe_load(lab_file.read_text())
        status = handle.status()
        api = token_client(status)
        key = Path(status["ssh"]["private_key"] + ".pub").read_text().strip()
        for node in doc["nodes"]:
            provision(api, node["vmid"], node["name"], node["ip"], key, gateway=doc["network"]["gateway"])
        return cls(handle, doc, handle.status())

    def ip(self, index: int) -> str:
        return self.doc["nodes"][index]["ip"]

    def name(self, index: int) -> str:
        return self.doc["nodes"][index]["name"]

    def ssh(self, index: int, command: str, input: str | None = None) -> Result:
        return asyncio.run(self.ssh_async(index, command, input))

    async def ssh_async(self, index: int, command: str, input: str | None = None) -> Result:
        vm = next(v for v in self.status["vms"] if v["ip"] == self.ip(index))
        async with asyncssh.connect(vm["ip"], port=vm["ssh_port"], username=self.status["ssh"]["user"],
                                    client_keys=[self.status["ssh"]["private_key"]], known_hosts=None) as conn:
            done = await conn.run(command, check=False, input=input)
        return Result(done.exit_status, str(done.stdout), str(done.stderr))

    def ok(self, index: int, command: str, input: str | None = None) -> str:
        result = self.ssh(index, command, input)
        assert result.exit_status == 0, f"{command!r} failed: {result}"
        return result.stdout

    def kubeconfig(self, folder: Path, index: int = 0) -> Path:
        """A server's k3s.yaml, fetched over SSH, its server rewritten to the node's IP (mode 0600)."""
        doc = yaml.safe_load(self.ok(index, "sudo cat /etc/rancher/k3s/k3s.yaml"))
        doc["clusters"][0]["cluster"]["server"] = f"https://{self.ip(index)}:6443"
        path = folder / f"kubeconfig-{index}"
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path

    def kube(self, tmp_path: Path, index: int = 0) -> client.ApiClient:
        """The kubernetes client on a server's kubeconfig."""
        return config.new_client_from_config(str(self.kubeconfig(tmp_path, index)))

    def install_server(self, index: int = 0, flags: str = "", env: str = "") -> Result:
        return self.ssh(index, f"{INSTALL}INSTALL_K3S_VERSION={VERSION} {env} sh -s - server {flags}")

    def install_agent(self, index: int, token: str, *, version: str = VERSION, url: str | None = None,
                      flags: str = "") -> Result:
        url = url or f"https://{self.ip(0)}:6443"
        return self.ssh(index, f"{INSTALL}K3S_URL={url} K3S_TOKEN={token} INSTALL_K3S_VERSION={version} "
                               f"sh -s - agent {flags}")


def nodes(api: client.ApiClient) -> dict[str, dict[str, Any]]:
    """Name -> (ready, kubeletVersion, labels) of the cluster's Nodes."""
    found = {}
    for node in client.CoreV1Api(api).list_node().items:
        ready = next(c.status for c in node.status.conditions if c.type == "Ready")
        found[node.metadata.name] = {"ready": ready == "True", "version": node.status.node_info.kubelet_version,
                                     "labels": node.metadata.labels or {}}
    return found
