"""The NAS's NFS service: the real NFS-Ganesha (Debian's ``nfs-ganesha`` + ``nfs-ganesha-vfs``,
unpacked into .tools/ganesha by ``scripts/install-programs.sh``), NFSv4 over TCP on the NAS's
address, port 2049, exporting the NAS's export folder under its own path as the pseudo path
(``server:/volume1/k8s-data``, as a Synology exports it). A userspace server: no kernel nfsd,
no rpcbind (so NFSv3 clients, which ask rpcbind for the port, are not served), no mount.

Ganesha's VFS backend opens files by handle (``open_by_handle_at``), which needs root
(CAP_DAC_READ_SEARCH): without it, or without the package, the NAS runs without NFS (its
export is still reached over SSH and by the lab's pods) and ``labsim.log`` says why."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from labsim.runtime.supervisor import RealProcess, Supervisor

log = logging.getLogger("labsim.nas")
NFS_PORT = 2049
PACKAGE = "Debian's nfs-ganesha and nfs-ganesha-vfs (make programs: scripts/install-programs.sh into .tools/ganesha)"


def install_dir() -> Path:
    tools = os.environ.get("LABSIM_TOOLS") or str(Path(__file__).resolve().parents[2] / ".tools")
    return Path(tools) / "ganesha"


def missing() -> str | None:
    """Why the real NFS server cannot run here, or None."""
    if not (install_dir() / "usr" / "bin" / "ganesha.nfsd").exists():
        return f"nfs-ganesha is not installed: install {PACKAGE}"
    if os.geteuid() != 0:
        return "nfs-ganesha's VFS backend needs root (open_by_handle_at needs CAP_DAC_READ_SEARCH)"
    return None


def config(root: Path, ip: str, exports: dict[str, Path], state: Path) -> str:
    """ganesha.conf: NFSv4 only, on ``ip`` only, no Kerberos, numeric owners (no idmapd)."""
    blocks = [f"""NFS_CORE_PARAM {{
  Bind_Addr = {ip};
  NFS_Port = {NFS_PORT};
  Protocols = 4;
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Enable_UDP = false;
  Plugins_Dir = "{root / 'usr' / 'lib' / 'x86_64-linux-gnu' / 'ganesha'}";
}}
NFSV4 {{
  Graceless = true;
  RecoveryBackend = fs;
  RecoveryRoot = "{state / 'recovery'}";
  UseGetpwnam = true;
  Allow_Numeric_Owners = true;
  Only_Numeric_Owners = true;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
"""]
    for number, (pseudo, folder) in enumerate(sorted(exports.items()), start=1):
        blocks.append(f"""EXPORT {{
  Export_Id = {number};
  Path = "{folder}";
  Pseudo = {pseudo};
  Access_Type = RW;
  Squash = No_Root_Squash;
  SecType = sys;
  Protocols = 4;
  Transports = TCP;
  FSAL {{ Name = VFS; }}
}}
""")
    return "".join(blocks)


class Ganesha:
    """One ganesha.nfsd for the NAS, started and stopped with it (and with its reachability)."""

    def __init__(self, state: Path, ip: str, exports: dict[str, Path], log_line) -> None:
        self.state, self.ip, self.exports, self.log_line = state, ip, exports, log_line
        self.supervisor = Supervisor(state / "run")
        self.process: RealProcess | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.exit_code is None

    def start(self) -> None:
        why = missing()
        if why is not None:
            log.warning("the NAS at %s serves no NFS: %s", self.ip, why)
            return
        if self.running:
            return
        root = install_dir()
        self.state.mkdir(parents=True, exist_ok=True)
        conf = self.state / "ganesha.conf"
        conf.write_text(config(root, self.ip, self.exports, self.state))
        libs = [root / "usr" / "lib" / "ganesha", root / "usr" / "lib" / "x86_64-linux-gnu",
                root / "lib" / "x86_64-linux-gnu"]
        env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": ":".join(map(str, libs))}
        argv = [str(root / "usr" / "bin" / "ganesha.nfsd"), "-F", "-f", str(conf), "-L", "/dev/stdout",
                "-p", str(self.state / "ganesha.pid"), "-N", "NIV_EVENT"]
        self.process = self.supervisor.launch("ganesha", [], argv, env=env, cwd=str(self.state),
                                              log_line=self.log_line, exited=self._exited)

    def _exited(self) -> None:
        if self.process is not None:
            log.warning("nfs-ganesha on %s ended with %s", self.ip, self.process.exit_code)

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            await process.killed()

    def reap(self) -> None:
        """Kill a ganesha a lab killed with -9 left running."""
        self.supervisor.reap()
