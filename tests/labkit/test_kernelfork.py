"""The kernel fork server's failure modes, at its own interface (labkit run's tests cover the kernels)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from labkit.errors import LabError
from labkit.kernelfork import ForkServer


def test_a_request_to_a_dead_fork_server_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "kernelfork.log"
    server = ForkServer(tmp_path, log)
    try:
        log.write_text("Fatal Python error: Segmentation fault\n")  # what a crashing import leaves
        os.kill(server._process.pid, signal.SIGKILL)
        server._process.wait(timeout=30)
        with pytest.raises(LabError, match="the kernel fork server has stopped:\nFatal Python error: Segmentation fault"):
            server.fork({"argv": [], "env": {}, "cwd": str(tmp_path), "files": [], "modules": []}, [])
    finally:
        server.close()
