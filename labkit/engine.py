"""A papermill engine that reports each cell as it starts, for the runner's progress display, and
runs a notebook in a kernel started ahead of it (``km``, forked by ``labkit.kernels``)."""

from __future__ import annotations

import asyncio
import time

from jupyter_core.utils import ensure_event_loop
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError
from papermill.log import logger

ENGINE_NAME = "labkit"
SAVE_EVERY_S = 10.0


class _Client(PapermillNotebookClient):
    """Given a kernel (``km``), nbclient leaves it running, and its client's channels open: they
    close with the notebook here; the kernel is its owner's to stop."""

    def execute(self, **kwargs):
        try:
            return super().execute(**kwargs)
        except BaseException:
            # Interrupted, timed out or dead: the cell's polls, cut short, are still pending on this
            # thread's loop; cancelled first, they do not wake to a dead kernel later, in a traceback.
            # Then the kernel stops here, as nbclient stops a kernel of its own.
            _cancel_pending(ensure_event_loop())
            if not self.owns_km and self.km is not None:
                self._cleanup_kernel()
            raise
        finally:
            if not self.owns_km and self.kc is not None:
                self.kc.stop_channels()


def _cancel_pending(loop: asyncio.AbstractEventLoop) -> None:
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


class ProgressEngine(NBClientEngine):
    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, on_cell=None, km=None, execution_timeout=None,
                                 start_timeout=60, **kwargs):
        if on_cell is not None:
            cell_start = nb_man.cell_start
            def reporting_cell_start(cell, cell_index=None, **kw):
                on_cell(cell_index, nb_man.nb.cells)
                return cell_start(cell, cell_index, **kw)

            nb_man.cell_start = reporting_cell_start
        save = nb_man.save
        nb_man.save = _at_most_every(SAVE_EVERY_S, save)
        try:
            if km is None:
                return super().execute_managed_notebook(nb_man, kernel_name, execution_timeout=execution_timeout,
                                                        start_timeout=start_timeout, **kwargs)
            kwargs.pop("input_path", None)
            return _Client(nb_man, km=km, kernel_name=kernel_name, timeout=execution_timeout,
                           startup_timeout=start_timeout, log=logger, **kwargs).execute()
        finally:
            nb_man.save = save  # papermill's last save (done, failed or interrupted) writes everything


def _at_most_every(seconds: float, save):
    """papermill writes the whole notebook as each cell starts and ends (40 writes for 20 cells, a
    second of the runner's time per notebook); the run reads it only once it ended."""
    last = time.monotonic()

    def throttled(**kwargs):
        nonlocal last
        if time.monotonic() - last >= seconds:
            last = time.monotonic()
            save(**kwargs)

    return throttled


papermill_engines.register(ENGINE_NAME, ProgressEngine)


def section_heading(cells: list, index: int) -> str:
    """The heading of the section a cell belongs to: the nearest markdown heading above it."""
    return next((line.lstrip("# ").strip() for c in reversed(cells[:index]) if c.get("cell_type") == "markdown"
                 for line in reversed(c.get("source", "").splitlines()) if line.startswith("#")), "")


def describe_failure(exc: PapermillExecutionError, cells: list) -> str:
    """``cell In [7] · Install the server `labkit.k3s.bootstrap(...)`: K3sError: ...`` (the
    traceback stays in the notebook); ``cells`` are the executed notebook's."""
    first = next((line for line in (exc.source or "").splitlines() if line.strip()), "")[:80]
    heading = section_heading(cells, exc.cell_index)
    return f"cell In [{exc.exec_count}]{f' · {heading[:60]}' if heading else ''} `{first}`: {exc.ename}: {exc.evalue}"
