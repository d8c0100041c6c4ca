"""The NAS of the lab (the lab file's ``nfs.server``, a Synology in the real lab): a machine on
the node subnet with its files in ``<state>/nodes/99/`` (the node model; 99 is below the VMIDs
PVE hands out, so it never collides with a VM), reachable over SSH like a Synology with SSH on
(the lab's SSH port and user, the operator's public key, a host key of its own that clients
pin), exporting ``nfs.path`` over real NFSv4 (``ganesha``) and to the lab's NFS clients
(``exports``: pods' volumes, the NFS provisioner). ``set_reachable(False)`` is the fault of a
NAS that does not answer: SSH refuses, NFS stops, clients time out; ``full = True`` the fault of
its volume out of space: what pods write into its export fails with ENOSPC (the writes labsim's
container shell makes, such as a backup Job's ``pg_dump > /backups/...``; a real program writing
its own files there, PostgreSQL's data directory, is not held back)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from labsim.nas import exports, showmount  # noqa: F401  -- showmount registers with the nodes' shell
from labsim.nas.ganesha import NFS_PORT, Ganesha
from labsim.node.spec import NodeSpec

log = logging.getLogger("labsim.nas")
NAS_ID = 99
HOSTNAME = "nas"
DSM_VERSION = 'majorversion="7"\nminorversion="2"\nproductversion="7.2.2"\nbuildnumber="72806"\n'


class Nas:
    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self.ip = lab.config.nfs_server
        self.path = lab.config.nfs_path
        self.reachable = True
        self.full = False
        self.nfs = Ganesha(Path(lab.state_dir) / "nas" / "ganesha", self.ip, {}, self._log)

    @property
    def node(self):
        node = self.lab.nodes.get(NAS_ID)
        assert node is not None, "the NAS is not running"
        return node

    def exports(self) -> dict[str, Path]:
        """Export path -> the real folder behind it."""
        return {self.path: self.node.host_path(self.path)}

    async def start(self) -> None:
        """Power on: the machine and its SSH server, the export folder, the NFS service."""
        key_file = Path(self.lab.config.operator_key_file)
        keys = [key_file.read_text().strip()] if key_file.exists() else []
        if not keys:
            log.warning("the NAS accepts no SSH key: %s does not exist", key_file)
        spec = NodeSpec(vmid=NAS_ID, name=HOSTNAME, ip=self.ip, user=self.lab.config.ssh_user,
                        authorized_keys=keys, cores=4, memory_mib=4096, disk_bytes=4 << 40)
        await self.lab.nodes.start_node(spec)
        node = self.node
        node.mkdir("/etc.defaults", mode=0o755)
        node.write("/etc.defaults/VERSION", DSM_VERSION.encode(), mode=0o644)
        if not node.is_dir(self.path):
            node.mkdir(self.path, mode=0o777)  # the shared folder, NFS permission "no mapping"
        exports.register(self.ip, self)
        self.nfs.exports = self.exports()
        await self.nfs.reap()
        self.nfs.start()

    async def close(self) -> None:
        exports.unregister(self.ip, self)
        await self.nfs.stop()

    async def set_reachable(self, reachable: bool) -> None:
        """The NAS answers (True) or not (False: SSH refused, NFS down), as a test's fault."""
        self.reachable = reachable
        self.lab.nodes.faults.refuse_connections(NAS_ID, not reachable)
        if reachable:
            self.nfs.start()
        else:
            await self.nfs.stop()

    def status(self) -> dict[str, Any]:
        return {"ip": self.ip, "ssh_port": self.lab.config.ssh_port, "user": self.lab.config.ssh_user,
                "export": self.path, "reachable": self.reachable, "full": self.full,
                "nfs": f"{self.ip}:{NFS_PORT}" if self.nfs.running else None}

    def _log(self, line: str) -> None:
        node = self.lab.nodes.get(NAS_ID)
        if node is not None:
            node.log("nfs-ganesha", line)
