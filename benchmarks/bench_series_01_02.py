"""Wall time of ``labkit run --only 01 02`` on a fresh embedded lab (3 and 12 nodes, time_scale 0),
next to the floor: papermill running two empty notebooks in the same kernel and environment.

    .venv/bin/python benchmarks/bench_series_01_02.py

The run includes what ``labkit run`` does around the notebooks (starting and stopping labsim,
rendering HTML); the floor is the cost of executing any two notebooks with papermill at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill
from nbformat.v4 import new_code_cell, new_notebook

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.labfiles import write_lab  # noqa: E402

KERNEL = "homelab-notebooks"


def floor(folder: Path) -> float:
    """papermill on two notebooks holding only a parameters cell."""
    nb = new_notebook(cells=[new_code_cell("lab_file = ''\ndry_run = False")],
                      metadata={"kernelspec": {"name": KERNEL, "display_name": KERNEL, "language": "python"}})
    nb.cells[0].metadata["tags"] = ["parameters"]
    start = time.perf_counter()
    for name in ("01-empty.ipynb", "02-empty.ipynb"):
        nbformat.write(nb, folder / name)
        papermill.execute_notebook(str(folder / name), str(folder / f"out-{name}"), kernel_name=KERNEL,
                                   parameters={"lab_file": "x", "dry_run": False}, progress_bar=False)
    return time.perf_counter() - start


def series(folder: Path, workers: int) -> tuple[float, float]:
    """Wall time of the whole command, and the part spent in the two notebooks (from summary.json)."""
    lab_file = write_lab(folder, workers=workers, time_scale=0.0)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "labkit", "run", "--params", str(lab_file), "--only", "01", "02",
                           "--outputs", str(folder / "outputs")], capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"labkit run failed ({workers + 1} nodes):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    summary = json.loads(next((folder / "outputs").glob("*/summary.json")).read_text())
    return elapsed, sum(n["duration_s"] for n in summary["notebooks"])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "floor").mkdir()
        empty = floor(base / "floor")
        print(f"floor: papermill, two empty notebooks           {empty:6.1f} s")
        for workers in (2, 11):
            folder = base / f"lab{workers + 1}"
            folder.mkdir()
            took, notebooks = series(folder, workers)
            print(f"labkit run --only 01 02, {workers + 1:2d} nodes              {took:6.1f} s"
                  f"   = {took / empty:4.1f} x the floor; the notebooks alone {notebooks:5.1f} s"
                  f" = {notebooks / empty:4.1f} x")


if __name__ == "__main__":
    main()
