"""Fixtures for the labsim tests: a lab of its own per test (fresh loopback subnet and ports,
time_scale 0), running in a background thread, and a proxmoxer client that verifies its CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI

from labsim.lab import LabHandle, running_lab
from tests.labfiles import write_lab
from tests.labsim.pveclient import token_client


@pytest.fixture
def lab_file(tmp_path: Path) -> Path:
    return write_lab(tmp_path)


@pytest.fixture
def lab(lab_file: Path) -> Iterator[LabHandle]:
    with running_lab(lab_file) as handle:
        yield handle


@pytest.fixture
def api(lab: LabHandle) -> ProxmoxAPI:
    return token_client(lab.status())
