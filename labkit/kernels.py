"""The kernels of a run, each started ahead of its notebook.

Starting a kernel and importing what a notebook imports costs seconds that papermill would spend
before the notebook's first cell. ``Kernels`` forks each kernel from one process that imports what
each notebook imports (``warm_modules``), once for the whole run (``labkit.kernelfork``), and forks
the next notebook's kernel while the current notebook runs. Each notebook still gets a fresh process (no
state passes between notebooks): only ``sys.modules`` is warm, the namespace is empty. Kernels are
shut down in the background once their notebook ends; ``close`` waits for them and stops any that
never ran, and the fork server. ``own_kernel`` makes the kernel spec they start this interpreter's.

A kernel's own stderr (not its cells': those reach the notebook) goes to a file of the run's
scratch folder, not the terminal: a kernel torn down mid-message prints ipykernel's and zmq's
tracebacks there. When a kernel dies, ``last_words`` gives the end of that file for the error.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jupyter_client import KernelManager

from labkit import secrets
from labkit.kernelfork import ForkedProvisioner, ForkServer
from labkit.nbimport import nbformat

KERNEL = "homelab-notebooks"
SECRETS_SINK = "kernel-secrets.jsonl"  # in the run's private scratch folder (labkit.secrets.SINK_ENV)
# The kernel's own log is not the run's story: its start-up chatter (e.g. the TCP transport warning),
# and the 'KeyboardInterrupt caught in kernel' ERROR it logs when a shutdown lands inside a message
# handler. Cell errors reach the run through the notebook, a dead kernel through papermill.
# No IPython history either: it would keep every cell, -p values included, in ~/.ipython.
LAST_WORDS = 8  # lines of a dead kernel's stderr an error quotes
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL", "--HistoryManager.enabled=False"]


def warm_modules(notebook: Path) -> list[str]:
    """The modules a notebook's code cells import at their top level (``from labkit import kube``
    counts ``labkit.kube``), in order; names that are not importable modules are left out."""
    names: list[str] = []
    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:  # IPython syntax (magics): not ours to guess
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in dict.fromkeys(names) if _is_module(name)]


def _is_module(name: str) -> bool:
    """Whether ``name`` is an importable module, without importing it. A dotted name under a module
    that is not a package names an attribute (``labkit.report.Report``): find_spec would import
    that module (labkit.report: pandas, IPython) into the runner only to find out."""
    parent = name.rpartition(".")[0]
    if parent and not _is_package(parent):
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ``datetime.UTC``: an attribute, not a module
        return False


def _is_package(name: str) -> bool:
    if not _is_module(name):
        return False
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.submodule_search_locations is not None


class Kernels:
    """Start with ``prepare(notebook)`` (cheap: the kernel boots on its own), run the notebook with
    ``take(notebook)``'s manager, hand it back with ``release``."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs  # the run's scratch folder
        self._server: ForkServer | None = None
        self._ready: dict[Path, KernelManager] = {}
        self._stopping: list[threading.Thread] = []

    def prepare(self, notebook: Path) -> None:
        if notebook in self._ready:
            return
        if self._server is None:  # started with the first kernel: the kernel spec is in place by then
            self._server = ForkServer(notebook.parent, self._logs / "kernelfork.log")
        km = KernelManager(kernel_name=KERNEL, kernel_id=str(uuid.uuid4()))
        km.client_class = "jupyter_client.asynchronous.AsyncKernelClient"  # what nbclient drives
        km.provisioner = ForkedProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)
        km.provisioner.server, km.provisioner.modules = self._server, tuple(warm_modules(notebook))
        with self.log(notebook).open("ab") as stderr:  # the kernel holds its own copy
            km.start_kernel(extra_arguments=KERNEL_ARGS, cwd=str(notebook.parent), stderr=stderr)
        self._ready[notebook] = km

    def log(self, notebook: Path) -> Path:
        return self._logs / f"kernel-{notebook.stem}.log"

    def last_words(self, notebook: Path, lines: int = LAST_WORDS) -> str:
        """The last lines the notebook's kernel wrote to its stderr, or else the fork server ('' if none)."""
        for log in (self.log(notebook), self._logs / "kernelfork.log"):
            with contextlib.suppress(FileNotFoundError):
                said = log.read_text(errors="replace").strip().splitlines()
                if said:
                    return "\n".join(said[-lines:])
        return ""

    def take(self, notebook: Path) -> KernelManager:
        self.prepare(notebook)
        return self._ready.pop(notebook)

    def release(self, km: KernelManager, now: bool = False) -> None:
        """Shut the kernel down without waiting (``now``: kill it, for an interrupted run)."""
        if now:
            _shutdown(km, now=True)
            return
        thread = threading.Thread(target=_shutdown, args=(km,), name="labkit-kernel-stop", daemon=True)
        thread.start()
        self._stopping.append(thread)

    def close(self) -> None:
        for km in self._ready.values():
            _shutdown(km, now=True)
        self._ready.clear()
        for thread in self._stopping:
            thread.join()
        if self._server is not None:
            self._server.close()

    def __enter__(self) -> Kernels:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shutdown(km: KernelManager, now: bool = False) -> None:
    if km.has_kernel:
        km.shutdown_kernel(now=now)


@contextmanager
def own_kernel(scratch: Path) -> Iterator[None]:
    """Run the notebooks' kernel (``homelab-notebooks``) with this very interpreter.

    The kernel spec registered for JupyterLab lives in the user's folder and names one checkout's
    venv; another checkout may have registered it last. A spec of our own, first on JUPYTER_PATH,
    makes a run use the labkit that runs it. Its kernels report the secrets they learn to a file
    of the scratch folder (``labkit.secrets.SINK_ENV``)."""
    from ipykernel.kernelspec import write_kernel_spec

    spec_dir = scratch / "jupyter" / "kernels" / KERNEL
    write_kernel_spec(spec_dir, overrides={"display_name": "homelab-notebooks",
                                           "env": {secrets.SINK_ENV: str(scratch / SECRETS_SINK)}})
    before = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(scratch / "jupyter"), before]))
    try:
        yield
    finally:
        if before is None:
            del os.environ["JUPYTER_PATH"]
        else:
            os.environ["JUPYTER_PATH"] = before
