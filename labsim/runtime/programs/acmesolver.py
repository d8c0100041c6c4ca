"""cert-manager's HTTP-01 solver (image ``cert-manager-acmesolver``): its Go binary is not
packaged for Debian or PyPI, so the pod runs ``labsim.apps.acmesolver``, which serves the same
answers and logs the same lines, with this venv's Python, listening on the pod IP at its
``--listen-port``."""

from __future__ import annotations

import sys
from pathlib import Path

from labsim.runtime.filesystem import ContainerFS

IMAGES = ("cert-manager-acmesolver",)
PACKAGE = "labsim itself (the acmesolver model runs with this venv's Python)"
TOOLS: tuple[str, ...] = ()


def bin_dir() -> Path | None:
    return Path(sys.executable).parent


def prepare(fs: ContainerFS, image: str, env: dict[str, str]) -> list[tuple[list[str], bytes]]:
    return []


def server(fs: ContainerFS, image: str, env: dict[str, str], pod_ip: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "labsim.apps.acmesolver", f"--listen-address={pod_ip}", *args]
