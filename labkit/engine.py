"""A papermill engine that reports each cell as it starts, for the runner's progress display, and
runs a notebook in a kernel started ahead of it (``km``, from ``labkit.kernels``)."""

from __future__ import annotations

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError
from papermill.log import logger

ENGINE_NAME = "labkit"


class _Client(PapermillNotebookClient):
    """Given a kernel (``km``), nbclient leaves it running, and its client's channels open: they
    close with the notebook here; the kernel is its owner's to stop."""

    def execute(self, **kwargs):
        try:
            return super().execute(**kwargs)
        finally:
            if not self.owns_km and self.kc is not None:
                self.kc.stop_channels()


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
        if km is None:
            return super().execute_managed_notebook(nb_man, kernel_name, execution_timeout=execution_timeout,
                                                    start_timeout=start_timeout, **kwargs)
        kwargs.pop("input_path", None)
        return _Client(nb_man, km=km, kernel_name=kernel_name, timeout=execution_timeout,
                       startup_timeout=start_timeout, log=logger, **kwargs).execute()


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
