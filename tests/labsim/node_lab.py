"""A lab of simulated nodes for the node tests: a NodeHost on a fresh loopback subnet and port,
with the lab's real Clock at time_scale 0, an operator key, and clients to reach the nodes."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import asyncssh

from labsim.clock import Clock
from labsim.node.host import NodeHost, NodeSpec
from tests.labfiles import free_port, unique_subnet

GIB = 1024 ** 3


@dataclass
class NodeLab:
    tmp: Path
    lab: SimpleNamespace
    host: NodeHost
    spec: NodeSpec
    key: asyncssh.SSHKey
    key_file: Path
    known_hosts: Path
    extra: list[NodeSpec] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.lab.config.ssh_port

    @property
    def node(self):
        return self.host.get(self.spec.vmid)

    def connect(self, key: asyncssh.SSHKey | None = None, username: str | None = None,
                ip: str | None = None):
        return asyncssh.connect(ip or self.spec.ip, self.port, username=username or self.spec.user,
                                client_keys=[key or self.key], known_hosts=None)

    async def run(self, command: str, input: str | bytes | None = None) -> asyncssh.SSHCompletedProcess:
        async with self.connect() as conn:
            return await conn.run(command, input=input)

    async def sh(self, command: str, input: str | None = None) -> tuple[str, str, int]:
        """(stdout, stderr, exit status) of one command line over SSH."""
        result = await self.run(command, input=input)
        return result.stdout, result.stderr, result.exit_status

    async def openssh(self, command: str, user: str | None = None, key_file: Path | None = None,
                      stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        """OpenSSH's ssh client, run beside the lab's event loop; (exit status, stdout, stderr)."""
        proc = await asyncio.create_subprocess_exec(
            "ssh", "-i", str(key_file or self.key_file), "-p", str(self.port),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=accept-new",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
            "-F", "/dev/null", f"{user or self.spec.user}@{self.spec.ip}", command,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate(stdin)
        return proc.returncode or 0, out, err

    async def restart(self) -> None:
        """The lab process ends and starts again on the same state folder."""
        await self.host.close()
        self.host = NodeHost(self.lab)
        await self.host.start()
        for spec in [self.spec, *self.extra]:
            await self.host.start_node(spec)

    async def resize(self, **changes) -> None:
        self.spec = replace(self.spec, **changes)
        await self.host.update_node(self.spec)


def write_key(path: Path) -> asyncssh.SSHKey:
    key = asyncssh.generate_private_key("ssh-ed25519", comment="operator@test")
    key.write_private_key(path)
    os.chmod(path, 0o600)
    return key


@asynccontextmanager
async def node_lab(tmp: Path, vmid: int = 120, name: str = "k3s-master", time_scale: float = 0.0,
                   **spec_changes):
    """One running node (more with ``lab.host.start_node``), torn down at the end."""
    net = unique_subnet()
    config = SimpleNamespace(ssh_port=free_port(), networks=(ipaddress.IPv4Network(f"{net}.0/24"),))
    lab = SimpleNamespace(state_dir=tmp / "labsim", config=config, clock=Clock(time_scale), clusters=None)
    key = write_key(tmp / "id_ed25519")
    spec = NodeSpec(vmid=vmid, name=name, ip=f"{net}.20", user="ubuntu",
                    authorized_keys=[key.export_public_key().decode().strip()], cores=2, memory_mib=4096,
                    disk_bytes=32 * GIB, searchdomain="home.example.com", nameservers=[f"{net}.1"])
    spec = replace(spec, **spec_changes)
    host = NodeHost(lab)
    await host.start()
    await host.start_node(spec)
    handle = NodeLab(tmp, lab, host, spec, key, tmp / "id_ed25519", tmp / "known_hosts")
    try:
        yield handle
    finally:
        await handle.host.close()
