"""Fixtures for the labsim tests: a lab of its own per test (fresh loopback subnet and ports,
time_scale 0), running in a background thread, and a proxmoxer client that verifies its CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI

from labsim.lab import LabHandle, running_lab
from tests.labfiles import sim_config, write_lab
from tests.labsim.kube_fixtures import RunningCluster, running_cluster
from tests.labsim.pveclient import token_client


@pytest.fixture
def lab_file(tmp_path: Path) -> Path:
    return write_lab(tmp_path)


@pytest.fixture
def lab(lab_file: Path) -> Iterator[LabHandle]:
    with running_lab(sim_config(lab_file)) as handle:
        yield handle


@pytest.fixture
def api(lab: LabHandle) -> ProxmoxAPI:
    return token_client(lab.status())


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[RunningCluster]:
    """A cluster of three Ready nodes with the controllers, for one test."""
    with running_cluster(tmp_path, nodes=3) as running:
        yield running


@pytest.fixture(scope="module")
def shared_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """One such cluster for a whole test module (tests keep to namespaces of their own)."""
    with running_cluster(tmp_path_factory.mktemp("kube"), nodes=3) as running:
        yield running
