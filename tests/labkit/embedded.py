"""An embedded lab for labkit's tests of notebooks 01-02: started from a fresh lab file (own
subnet and ports), with the ``Lab`` labkit loads from the same file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from labkit import proxmox
from labkit.params import Lab, load_lab
from labsim.lab import LabHandle, running_lab
from tests.labfiles import sim_config, write_lab


@dataclass
class EmbeddedLab:
    handle: LabHandle
    lab: Lab
    path: Path

    @property
    def pve(self):
        return self.handle.lab.pve


@contextmanager
def embedded_lab(tmp_path: Path, **kw) -> Iterator[EmbeddedLab]:
    path = write_lab(tmp_path, **kw)
    with running_lab(sim_config(path)) as handle:
        yield EmbeddedLab(handle, load_lab(path), path)


@contextmanager
def provisioned_lab(tmp_path: Path, **kw) -> Iterator[EmbeddedLab]:
    """An embedded lab whose VMs labkit has created and booted (notebook 01's work)."""
    with embedded_lab(tmp_path, **kw) as sim:
        api = proxmox.connect(sim.lab)
        proxmox.apply(api, sim.lab, proxmox.plan(api, sim.lab), agent_timeout=10)
        yield sim
