"""A papermill engine that reports each cell as it starts, for the runner's progress display."""

from __future__ import annotations

from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError

ENGINE_NAME = "labkit"


class ProgressEngine(NBClientEngine):
    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, on_cell=None, **kwargs):
        if on_cell is not None:
            cell_start = nb_man.cell_start
            def reporting_cell_start(cell, cell_index=None, **kw):
                on_cell(cell_index, nb_man.nb.cells)
                return cell_start(cell, cell_index, **kw)

            nb_man.cell_start = reporting_cell_start
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


papermill_engines.register(ENGINE_NAME, ProgressEngine)


def describe_failure(exc: PapermillExecutionError) -> str:
    """``cell In [7] `labkit.proxmox.apply(plan)`: ProxmoxError: ...`` (the traceback stays in the notebook)."""
    first = next((line for line in (exc.source or "").splitlines() if line.strip()), "")[:80]
    return f"cell In [{exc.exec_count}] `{first}`: {exc.ename}: {exc.evalue}"
