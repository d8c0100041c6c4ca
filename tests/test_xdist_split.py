"""How `make test` splits the suite over two workers (tests/conftest.py): a file stays whole, the
series lab's files are one unit, and that unit is the first handed out."""

from __future__ import annotations

from collections import OrderedDict

from tests.conftest import SERIES, SeriesFirstScheduling


class Worker:
    def __init__(self) -> None:
        self.sent: list[int] = []

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.sent += indexes


def _scheduling() -> SeriesFirstScheduling:
    return object.__new__(SeriesFirstScheduling)  # its scoping and hand-out only: no xdist session


def test_the_series_labs_files_are_one_unit_and_every_other_file_its_own() -> None:
    split = _scheduling()._split_scope
    assert {split(f"tests/labkit/{name}::test_x") for name in (
        "test_notebook_03.py", "test_notebook_04.py", "test_notebooks_05_07.py", "test_notebooks_06.py",
        "test_operations_ledger.py")} == {SERIES}
    assert split("tests/labkit/test_notebooks_01_02.py::test_x") == "tests/labkit/test_notebooks_01_02.py"
    assert split("tests/labsim/test_net.py::test_y[1.34]") == "tests/labsim/test_net.py"


def test_the_series_unit_is_handed_out_first_and_whole_in_file_order() -> None:
    sched, worker = _scheduling(), Worker()
    collection = ["tests/a.py::t1", "tests/labkit/test_notebook_03.py::t1", "tests/labkit/test_notebook_04.py::t1",
                  "tests/b.py::t1"]
    sched.registered_collections = {worker: collection}
    sched.assigned_work = {}
    sched.workqueue = OrderedDict()
    for nodeid in collection:
        sched.workqueue.setdefault(sched._split_scope(nodeid), {})[nodeid] = False
    sched._assign_work_unit(worker)
    assert worker.sent == [1, 2] and list(sched.workqueue) == ["tests/a.py", "tests/b.py"]
