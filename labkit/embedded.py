"""Start and stop the embedded lab (labsim) around a run, when the lab file says ``kind: embedded``.

labkit never imports labsim: it drives the ``labsim`` command, as a user would. labsim does not
read the lab file either: labkit, which validated it, writes the few settings labsim needs into
``config.json`` in the lab's state folder (``sim_config``), so the lab file has one parser and
one set of defaults (labkit.params).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit.errors import LabError
from labkit.params import Lab

CONFIG_FILE = "config.json"  # labsim reads it from its state folder (labsim/config.py)


def sim_config(lab: Lab) -> dict[str, Any]:
    """What labsim needs of an embedded lab: its name, speed, PVE endpoint, the VMs' network and the NAS."""
    assert lab.embedded is not None  # params gives every embedded lab this section
    pve = lab.proxmox
    return {
        "name": lab.name, "time_scale": lab.embedded.time_scale,
        "pve_host": pve.host, "pve_port": pve.port, "pve_node": pve.node, "token_id": pve.token_id,
        "template_vmid": pve.template_vmid, "storage": pve.storage, "bridge": pve.bridge,
        "ssh_user": lab.ssh.user, "ssh_port": lab.ssh.port, "subnet": str(lab.network.subnet),
        "cluster_cidr": str(lab.k3s.cluster_cidr), "service_cidr": str(lab.k3s.service_cidr),
        "metallb_pool": "-".join(map(str, lab.metallb.pool)),
        "nfs_server": str(lab.nfs.server), "nfs_path": lab.nfs.path, "operator_key_file": str(lab.ssh.public_key),
        "acme_servers": sorted({issuer.server for issuer in lab.tls.issuers}) if lab.tls else [],
        "ntfy_server": lab.observability.ntfy.server if lab.observability else "",
    }


def write_sim_config(lab: Lab) -> Path:
    """Write labsim's config.json into the lab's state folder (before every ``labsim up``)."""
    assert lab.embedded is not None
    path = lab.embedded.state_dir / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sim_config(lab), indent=2) + "\n")
    return path


def labsim_command() -> str | None:
    beside = Path(sys.executable).parent / "labsim"  # the venv's console script
    return str(beside) if beside.exists() else shutil.which("labsim")


class EmbeddedLab:
    """Context manager: the embedded lab is up inside, and stopped after unless ``keep`` or it
    was already running before (then it is left as it was found)."""

    def __init__(self, lab: Lab, *, keep: bool = False, report: Callable[[str], None] = print,
                 background_stop: bool = False):
        self.lab, self.keep, self.report, self.background_stop = lab, keep, report, background_stop
        self.started = False
        self._stopping: subprocess.Popen | None = None

    def __enter__(self) -> EmbeddedLab:
        if self.lab.kind != "embedded":
            return self
        self.report(f"starting the embedded lab (state in {self.state_dir})")
        write_sim_config(self.lab)
        try:
            # One command, not `status` first: a Python start-up less before the first notebook.
            said = self._labsim("up", "--detach", timeout=300)
        except BaseException:  # interrupted or failed mid-start: the lab, detached, may come up anyway
            self._labsim("down", timeout=120, check=False)
            raise
        if "already running" in said:
            self.report("embedded lab already running: using it as it is")
        else:
            self.started = True
        return self

    def __exit__(self, exc_type, *exc) -> None:
        """Stop the lab if this started it; with ``background_stop`` and no error, in the background
        (``labkit run``'s summary need not wait for it; ``wait_stopped`` does)."""
        if self.started and not self.keep:
            self.report("stopping the embedded lab (--keep-lab leaves it running)")
            self.started = False
            if exc_type is not None or not self.background_stop:
                self._labsim("down", timeout=120)
                return
            self._stopping = subprocess.Popen(self._argv("down"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait_stopped(self) -> None:
        """Wait for the background ``labsim down`` (if any) to end; a failed stop is an error."""
        stopping, self._stopping = self._stopping, None
        if stopping is None:
            return
        try:
            out, _ = stopping.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            stopping.kill()
            stopping.communicate()
            raise LabError("`labsim down` did not finish within 120 s") from None
        if stopping.returncode != 0:
            tail = "\n".join(out.strip().splitlines()[-5:])
            raise LabError(f"`labsim down` failed (exit {stopping.returncode}): {tail}")

    @property
    def state_dir(self) -> Path:
        assert self.lab.embedded is not None
        return self.lab.embedded.state_dir

    def _argv(self, *args: str) -> list[str]:
        command = labsim_command()
        if command is None:
            raise LabError("kind: embedded needs the embedded lab, but the `labsim` command is not installed; "
                           "install the project (`make lab`, or `pip install -e .`)")
        return [command, args[0], "--state", str(self.state_dir), *args[1:]]

    def _labsim(self, *args: str, timeout: int, check: bool = True) -> str:
        argv = self._argv(*args)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"`labsim {args[0]}` did not finish within {timeout} s") from None
        if check and done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise LabError(f"`labsim {' '.join(args[:1])}` failed (exit {done.returncode}): {tail}")
        return done.stdout
