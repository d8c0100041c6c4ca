"""``labkit jupyter``: the notebooks in JupyterLab, on the embedded lab (``make jupyter``).

The embedded lab comes up first (as ``labkit run`` brings it up), then JupyterLab on loopback only,
rooted in the notebooks' folder, with the ``homelab-notebooks`` kernel of this very interpreter
(``kernels.own_kernel``) and jupytext's contents manager (each ``.ipynb`` is paired with its
``NN-name.py`` source). Ctrl-C or SIGTERM stops JupyterLab (which stops its kernels), then the lab.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from labkit.embedded import EmbeddedLab
from labkit.kernels import own_kernel
from labkit.params import Lab

STOP_TIMEOUT_S = 30
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def jupyterlab_argv(notebooks_dir: Path, port: int) -> list[str]:
    # Root (a container, CI) may run it too: it listens on loopback only, behind a token.
    root = ["--allow-root"] if os.geteuid() == 0 else []
    return [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={notebooks_dir}",
            "--ServerApp.contents_manager_class=jupytext.TextFileContentsManager", *root]


def serve(lab: Lab, notebooks_dir: Path, port: int, report: Callable[[str], None] = print) -> int:
    """Run JupyterLab until it ends or the command is stopped; the lab is stopped after it (exit
    code: JupyterLab's, 0 when stopped by a signal)."""
    with EmbeddedLab(lab, report=report), tempfile.TemporaryDirectory(prefix="labkit-jupyter-") as scratch, \
            own_kernel(Path(scratch)):
        report(f"JupyterLab on http://127.0.0.1:{port}/lab (the URL with its token follows); Ctrl-C stops it and the lab")
        # A session of its own: Ctrl-C reaches labkit only, which stops JupyterLab without its
        # interactive "Shutdown this Jupyter server (y/[n])?" question.
        server = subprocess.Popen(jupyterlab_argv(notebooks_dir.resolve(), port), start_new_session=True,
                                  preexec_fn=_die_with_parent,
                                  env={**os.environ, "JUPYTER_RUNTIME_DIR": str(Path(scratch) / "runtime")})
        try:
            return server.wait()
        except KeyboardInterrupt:  # SIGINT, or SIGTERM through runner.interruptible
            report("stopping JupyterLab and its kernels")
            return _stop(server)


def _die_with_parent() -> None:
    """In JupyterLab's process before it starts: SIGTERM when labkit ends, even by SIGKILL (Linux)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(server: subprocess.Popen) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave the lab running
    server.terminate()  # JupyterLab shuts its kernels down on SIGTERM
    try:
        server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    return 0
