"""The critical-path arithmetic of benchmarks/bench_series_path.py over known intervals (no timing)."""

from __future__ import annotations

import pytest

from benchmarks.bench_series_path import Window, clipped, critical_chain, paths, windows
from labsim.operations import Operation


def op(what: str, start: float, end: float, modelled: float | None = None) -> Operation:
    return Operation(what, end - start if modelled is None else modelled, start, end)


def test_serial_operations_add_up_and_concurrent_ones_count_once():
    # clones one after another; each boot after its clone, overlapping the next clone; a join last
    ops = [op("clone 1", 0, 20), op("clone 2", 20, 40), op("clone 3", 40, 60),
           op("boot 1", 20, 73.5), op("boot 2", 40, 93.5), op("boot 3", 60, 113.5),
           op("join 3", 113.5, 140.5)]
    seconds, chain = critical_chain(ops)
    assert seconds == pytest.approx(140.5)
    assert [o.what for o in chain] == ["clone 1", "clone 2", "clone 3", "boot 3", "join 3"]


def test_weights_are_modelled_seconds_not_wall_seconds():
    # at a small time scale the wall intervals are short; a long wall gap between them adds nothing
    ops = [op("pull", 0.0, 0.25, 5), op("run", 3.0, 3.25, 5), op("start", 0.1, 0.15, 1)]
    assert critical_chain(ops) == (10, [ops[0], ops[1]])
    assert critical_chain([]) == (0.0, [])


def test_each_step_is_released_by_the_operation_that_ended_last_before_it():
    # two VMs' boots and cloud-inits: the overhead of a scaled run spaces them so that vm2's
    # cloud-init begins after vm1's (heavier) cloud-init ended, but vm2's boot released it
    ops = [op("vm1 cloud-init", 0.0, 1.0, 40), op("vm2 boot", 0.5, 1.05, 25), op("vm2 cloud-init", 1.05, 2.3, 25)]
    assert critical_chain(ops) == (50, [ops[1], ops[2]])
    instant = [op("a", 1, 1, 3), op("b", 1, 1, 4)]  # time_scale 0: one after the other, by their order
    assert critical_chain(instant)[0] == 7


def test_an_operation_crossing_windows_counts_its_share_in_each():
    window = Window("02", 10, 20)
    assert clipped(op("boot", 5, 15, 50), window) == op("boot", 10, 15, 25)
    assert clipped(op("clone", 0, 10, 20), window) is None
    assert clipped(op("instant", 12, 12, 7), window) == op("instant", 12, 12, 7)  # time_scale 0


def test_windows_and_paths_of_a_run():
    nbs = [Window("01", 2, 10), Window("02", 11, 20)]
    run = windows(0, 25, nbs)
    assert [(w.name, w.start, w.end) for w in run] == [
        ("lab start", 0, 2), ("01", 2, 10), ("before 02", 10, 11), ("02", 11, 20), ("after the last notebook", 20, 25)]
    ops = [op("boot", 1, 3, 20), op("clone a", 3, 5, 4), op("clone b", 5, 9, 4), op("boot b", 5, 12, 70),
           op("join", 12, 19, 7)]
    found = {p.window.name: p.seconds for p in paths(ops, run)}
    assert found == pytest.approx({"lab start": 10, "01": 10 + 4 + 50, "before 02": 10, "02": 10 + 7,
                                   "after the last notebook": 0})
