"""The nodes' SSH service: one asyncssh server per running VM, on the VM's IP and the lab's SSH
port, with a host key generated once per node. It accepts exactly the cloud-init keys for the
cloud-init user, runs exec requests through the node's shell, serves SFTP and a plain
interactive shell, and stops with the VM.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import asyncssh

# The shell's builtins and the base system's programs register themselves in the command registry on import.
from labsim.node import builtins, coreutils, kernel, netcat, packages, power, registry, system, textutils  # noqa: F401
from labsim.node.faults import NodeFaults
from labsim.node.model import NodeModel
from labsim.node.registry import CommandResult
from labsim.node.sftp import NodeSFTPServer
from labsim.node.shell import Shell, reads_stdin
from labsim.node.spec import NodeSpec

__all__ = ["NodeFaults", "NodeHost", "NodeSpec"]

log = logging.getLogger(__name__)
HOST_KEY = "ssh_host_ed25519_key"
KEY_TYPES = ("ssh-", "ecdsa-", "sk-")
DISK_PARTS = ("root", "owners.json", "services.json", "journal")
VMSTATE = "vmstate.json"  # a snapshot's RAM: the units running and the kernel's runtime settings


class NodeHost:
    """Every running node of a lab, and its SSH server."""

    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self.faults = NodeFaults()
        self.faults.on_refuse = self._on_refuse
        self._nodes: dict[int, NodeModel] = {}
        self._servers: dict[int, asyncssh.SSHAcceptor] = {}
        self._connections: dict[int, set[asyncssh.SSHServerConnection]] = {}
        self._relisten: set[asyncio.Task[None]] = set()

    @property
    def folder(self) -> Path:
        return Path(self.lab.state_dir) / "nodes"

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        """The lab process ends: SSH servers close, but the VMs are not powered off (their
        services stay as they are, to resume when the lab starts again)."""
        for vmid in list(self._nodes):
            self._unlisten(vmid)
            for conn in self._connections.pop(vmid, set()):
                conn.abort()
            self._nodes.pop(vmid).halt()

    # --- VM power ---------------------------------------------------------------------------------

    async def start_node(self, spec: NodeSpec) -> None:
        """Boot: the image and cloud-init on the node's files, SSH listening on spec.ip, then the
        enabled services (after the boot hooks of other modules have registered theirs)."""
        await self._power_on(spec, None)

    async def resume_node(self, spec: NodeSpec, snapshot: str) -> None:
        """A VM started from a snapshot's saved RAM (PVE's rollback to a snapshot with vmstate):
        the units that ran and the kernel settings of that moment come back, not the boot's."""
        await self._power_on(spec, self._vmstate(spec.vmid, snapshot))

    async def _power_on(self, spec: NodeSpec, ram: dict[str, Any] | None) -> None:
        if not ipaddress.ip_address(spec.ip).is_loopback:
            raise ValueError(f"node {spec.name}: {spec.ip} is not a loopback address; labsim binds 127.0.0.0/8 only")
        if spec.vmid in self._nodes:
            await self.update_node(spec)
            return
        node = NodeModel(spec, self.lab, self.folder / str(spec.vmid))
        node.boot()
        self._nodes[spec.vmid] = node
        for hook in registry.BOOT_HOOKS:
            await hook(node)
        if ram is not None:
            node.sysctl, node.kernel_modules = dict(ram["sysctl"]), set(ram["kernel_modules"])
        if not self.faults.refused(spec.vmid):
            try:
                await self._listen(spec.vmid)
            except OSError:  # the address is taken: the VM does not come up with a half-booted node
                self._nodes.pop(spec.vmid).halt()
                raise
        for name in ram["active_services"] if ram is not None else node.enabled_services():
            await node.start_service(name)

    async def stop_node(self, vmid: int) -> None:
        """Power-off: the SSH port closes, open sessions drop, services stop."""
        node = self._nodes.pop(vmid, None)
        self._unlisten(vmid)
        for conn in self._connections.pop(vmid, set()):
            conn.abort()
        if node is not None:
            node.halt()
            await node.stop_all_services()

    async def update_node(self, spec: NodeSpec) -> None:
        """A running VM reconfigured (resized, new keys, new address): sizes and keys follow at
        once; a new address or user moves the SSH server."""
        node = self._nodes.get(spec.vmid)
        if node is None:
            return
        moved = (node.spec.ip, node.spec.user) != (spec.ip, spec.user)
        node.spec = spec
        if moved and spec.vmid in self._servers:
            self._unlisten(spec.vmid)
            await self._listen(spec.vmid)

    async def delete_node(self, vmid: int) -> None:
        """The VM is destroyed: its files and host key go with it."""
        await self.stop_node(vmid)
        shutil.rmtree(self.folder / str(vmid), ignore_errors=True)

    # --- the VM's disk, for PVE's snapshots and clones -------------------------------------------
    # A node's disk is its folder: the file tree, file owners, units and journal (not the host
    # key, which PVE's cloud-init regenerates per VM). PVE stops a VM before rolling it back.

    def snapshot_disk(self, vmid: int, name: str, with_ram: bool = False) -> None:
        """The disk as it is now (crash-consistent if the node runs); ``with_ram`` also keeps what
        the running node has in memory, for ``resume_node``."""
        folder = self.folder / str(vmid)
        target = folder / "snapshots" / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for part in DISK_PARTS:
            _copy(folder / part, target / part)
        node = self._nodes.get(vmid)
        if with_ram and node is not None:
            ram = {"active_services": node.active_services(), "sysctl": node.sysctl,
                   "kernel_modules": sorted(node.kernel_modules)}
            (target / VMSTATE).write_text(json.dumps(ram))

    def rollback_disk(self, vmid: int, name: str) -> None:
        if vmid in self._nodes:
            raise RuntimeError(f"VM {vmid} is running: stop it before rolling its disk back")
        folder = self.folder / str(vmid)
        snapshot = folder / "snapshots" / name
        if not snapshot.is_dir():  # taken before disks were snapshotted: the disk stays as it is
            log.warning("VM %s: no disk snapshot %r to roll back to", vmid, name)
            return
        for part in DISK_PARTS:
            _remove(folder / part)
            _copy(snapshot / part, folder / part)

    def delete_disk_snapshot(self, vmid: int, name: str) -> None:
        shutil.rmtree(self.folder / str(vmid) / "snapshots" / name, ignore_errors=True)

    def clone_disk(self, source_vmid: int, new_vmid: int, snapshot: str | None = None) -> None:
        """A clone starts from its source's disk, or from one of its snapshots (a source that
        never booted, such as the cloud image template: a fresh image)."""
        source = self.folder / str(source_vmid)
        if snapshot is not None:
            source = source / "snapshots" / snapshot
        target = self.folder / str(new_vmid)
        for part in DISK_PARTS:
            _remove(target / part)
            _copy(source / part, target / part)

    def _vmstate(self, vmid: int, snapshot: str) -> dict[str, Any] | None:
        path = self.folder / str(vmid) / "snapshots" / snapshot / VMSTATE
        return json.loads(path.read_text()) if path.exists() else None

    def get(self, vmid: int) -> NodeModel | None:
        return self._nodes.get(vmid)

    def find(self, name: str) -> NodeModel | None:
        return next((n for n in self._nodes.values() if n.hostname == name), None)

    def at(self, ip: str) -> NodeModel | None:
        """The running node whose address is ``ip``."""
        return next((n for n in self._nodes.values() if n.spec.ip == ip), None)

    def host_public_key(self, vmid: int) -> str:
        """The node's host key as a known_hosts entry's key part (``ssh-ed25519 AAAA...``)."""
        return self._host_key(vmid).export_public_key().decode().strip()

    # --- SSH server -------------------------------------------------------------------------------------

    def _host_key(self, vmid: int) -> asyncssh.SSHKey:
        path = self.folder / str(vmid) / HOST_KEY
        if path.exists():
            return asyncssh.read_private_key(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"root@vm{vmid}")
        key.write_private_key(path)
        os.chmod(path, 0o600)
        key.write_public_key(path.with_suffix(".pub"))
        return key

    async def _listen(self, vmid: int) -> None:
        node = self._nodes[vmid]
        self._servers[vmid] = await asyncssh.create_server(
            functools.partial(NodeSSHServer, self, vmid), node.spec.ip, self.lab.config.ssh_port,
            server_host_keys=[self._host_key(vmid)], process_factory=functools.partial(self._session, vmid),
            sftp_factory=functools.partial(_sftp, node), allow_scp=True, encoding=None,
            reuse_address=True, server_version="OpenSSH_8.9p1 Ubuntu-3ubuntu0.10",
        )

    def _unlisten(self, vmid: int) -> None:
        server = self._servers.pop(vmid, None)
        if server is not None:
            server.close()

    def _on_refuse(self, vmid: int, refuse: bool) -> None:
        if refuse:
            self._unlisten(vmid)
        elif vmid in self._nodes and vmid not in self._servers:
            task = asyncio.get_running_loop().create_task(self._listen(vmid))
            self._relisten.add(task)
            task.add_done_callback(self._relisten.discard)

    def _connected(self, vmid: int, conn: asyncssh.SSHServerConnection, up: bool) -> None:
        conns = self._connections.setdefault(vmid, set())
        if up:
            conns.add(conn)
        else:
            conns.discard(conn)

    def _allows(self, vmid: int, username: str, key: asyncssh.SSHKey) -> bool:
        node = self._nodes.get(vmid)
        if node is None or username != node.spec.user:
            return False
        return key.public_data in _public_keys(tuple(node.spec.authorized_keys))

    async def _session(self, vmid: int, process: asyncssh.SSHServerProcess) -> None:
        node = self._nodes.get(vmid)
        if node is None:
            process.exit(255)
            return
        user = process.get_extra_info("username")
        if process.command is None:
            await self._interactive(node, user, process)
            return
        line = process.command.decode(errors="replace") if isinstance(process.command, bytes) else process.command
        if self.faults.delay(vmid):
            await asyncio.sleep(self.faults.delay(vmid))
        stdin = await process.stdin.read() if reads_stdin(line) else b""
        result = self.faults.take_failure(vmid, line) or await _run(Shell(node, user), line, stdin)
        try:
            if self.faults.take_drop(vmid, line):
                process.stdout.write(result.stdout[: len(result.stdout) // 2])
                process.channel.get_connection().abort()
                return
            process.stdout.write(result.stdout)
            process.stderr.write(result.stderr)
            process.exit(result.exit_status)
        except (BrokenPipeError, ConnectionError, asyncssh.Error):
            log.debug("session on %s closed before %r finished", node.hostname, line)

    async def _interactive(self, node: NodeModel, user: str, process: asyncssh.SSHServerProcess) -> None:
        """A login shell without job control: one command line at a time, with a prompt on a PTY."""
        shell = Shell(node, user)
        sign = "#" if user == "root" else "$"
        while True:
            if process.get_terminal_type():
                home = shell.vars.get("HOME", "/")
                where = "~" + shell.cwd[len(home):] if shell.cwd.startswith(home) else shell.cwd
                process.stdout.write(f"{user}@{node.hostname}:{where}{sign} ".encode())
            try:
                line = await process.stdin.readline()
            except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged):
                continue
            if not line:
                break
            result = await _run(shell, line.decode(errors="replace") if isinstance(line, bytes) else line, b"")
            process.stdout.write(result.stdout)
            process.stderr.write(result.stderr)
            if shell.exited:
                break
        process.exit(shell.status)


class NodeSSHServer(asyncssh.SSHServer):
    """Public-key authentication only, for the cloud-init user only."""

    def __init__(self, host: NodeHost, vmid: int) -> None:
        self.host, self.vmid = host, vmid
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.host._connected(self.vmid, conn, True)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.host._connected(self.vmid, self.conn, False)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return self.host._allows(self.vmid, username, key)


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    elif source.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _sftp(node: NodeModel, chan: asyncssh.SSHServerChannel) -> NodeSFTPServer:
    return NodeSFTPServer(chan, node)


@functools.lru_cache(maxsize=256)
def _public_keys(lines: tuple[str, ...]) -> frozenset[bytes]:
    """The keys of authorized_keys lines (options and comments aside; bad lines ignored, as sshd)."""
    keys = set()
    for line in lines:
        words = line.split()
        start = next((i for i, w in enumerate(words) if w.startswith(KEY_TYPES)), None)
        if start is None:
            continue
        try:
            keys.add(asyncssh.import_public_key(" ".join(words[start:start + 2])).public_data)
        except (asyncssh.KeyImportError, ValueError):
            continue
    return frozenset(keys)


async def _run(shell: Shell, line: str, stdin: bytes) -> CommandResult:
    try:
        return await shell.run(line, stdin)
    except Exception:  # a bug in a command must not hang the client: fail the command, log it
        log.exception("command failed on %s: %r", shell.node.hostname, line)
        return CommandResult.fail(f"{line.split()[0] if line.split() else 'bash'}: internal error in the simulated node\n")
