"""How `make test` splits the suite over pytest-xdist workers (``-n 2 --dist loadfile``).

The suite mostly waits (real programs, the labs' clocks), so two workers nearly halve it on two
cores. Each test file stays whole on one worker, in order. The files that run on the session's
series lab (they import ``tests.labkit.series.Series``) form one unit instead: one worker builds
that lab once and runs them in file order (03, 04, 05/07, 06 stand on each other), and that unit,
the longest, is handed out first so the other worker takes every other file meanwhile.

xdist's own ``--dist loadgroup`` would do the grouping, but with pytest 9 it groups nothing
(xdist renames a test by writing ``item._nodeid``; pytest 9's ``nodeid`` no longer reads it).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from xdist.scheduler import LoadFileScheduling

SERIES = "series lab"
ROOT = Path(__file__).resolve().parent.parent
IMPORTS_SERIES = re.compile(r"^from tests\.labkit\.series import .*\bSeries\b", re.MULTILINE)


@cache
def _on_series_lab(test_file: str) -> bool:
    path = ROOT / test_file
    return path.is_file() and IMPORTS_SERIES.search(path.read_text()) is not None


class SeriesFirstScheduling(LoadFileScheduling):
    """xdist's file-by-file scheduling, with the series lab's files as one unit handed out first."""

    def _split_scope(self, nodeid: str) -> str:
        test_file = super()._split_scope(nodeid)
        return SERIES if _on_series_lab(test_file) else test_file

    def _assign_work_unit(self, node) -> None:
        if SERIES in self.workqueue:
            self.workqueue.move_to_end(SERIES, last=False)
        super()._assign_work_unit(node)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log) -> SeriesFirstScheduling:
    return SeriesFirstScheduling(config, log)
