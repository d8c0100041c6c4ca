"""The series' wall time next to papermill's floor, side by side in one run, over every notebook present.

    PATH=$PWD/.tools/bin:$PATH .venv/bin/python benchmarks/bench_series.py

Figures (each a fresh embedded lab on loopback addresses of its own, ``labkit run`` as a user runs it):
- floor: papermill executing as many notebooks as the series has, each holding only the parameters
  cell, one after another in the project's kernel: what executing any notebooks costs at all;
- cold: ``labkit run`` at time_scale 0 on a new lab (3 nodes), target <= 2.5x the floor;
- converged: the same command again on that lab, which changes nothing, target <= 1.8x the floor;
- 12 nodes: the cold run with 12 nodes, target <= 1.2x the 3-node cold run;
- time_scale 0.05: the cold run again; the critical path of what the twin performed
  (``bench_series_path.critical_path``) at that scale, the rest of its wall time, and the wall time
  that makes at time_scale 1 if none of that rest overlapped the modelled waits (an upper estimate),
  target <= 1.1x the critical path.
Timings are printed, never asserted (tests assert behaviour only).
"""

from __future__ import annotations

import ipaddress
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

from benchmarks.bench_series_path import critical_path  # noqa: E402
from labkit.kernels import KERNEL, own_kernel  # noqa: E402
from labkit.runner import select_notebooks  # noqa: E402
from tests.labfiles import sim_lab, write_lab  # noqa: E402

NOTEBOOKS = REPO / "notebooks"
SCALE = 0.05


def floor(folder: Path, count: int) -> float:
    """papermill on ``count`` notebooks holding only a parameters cell, in this checkout's kernel."""
    nb = new_notebook(cells=[new_code_cell("lab_file = ''\ndry_run = False")],
                      metadata={"kernelspec": {"name": KERNEL, "display_name": KERNEL, "language": "python"}})
    nb.cells[0].metadata["tags"] = ["parameters"]
    with own_kernel(folder):
        start = time.perf_counter()
        for n in range(1, count + 1):
            path = folder / f"{n:02d}-empty.ipynb"
            nbformat.write(nb, path)
            papermill.execute_notebook(str(path), str(folder / f"out-{path.name}"), kernel_name=KERNEL,
                                       parameters={"lab_file": "x", "dry_run": False}, progress_bar=False)
        return time.perf_counter() - start


def labkit_run(lab_file: Path, outputs: Path, label: str) -> tuple[float, dict]:
    """Wall time of ``labkit run`` (the whole command) and its summary."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "labkit", "run", "--params", str(lab_file), "--outputs", str(outputs)],
                          capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"labkit run failed ({label}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    summary = json.loads((outputs / "latest" / "summary.json").read_text())
    return elapsed, summary


def line(label: str, seconds: float, ratio: str = "") -> None:
    print(f"{label:<46} {seconds:7.2f} s   {ratio}")


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:4.2f}x (target <= {target}x: {'met' if ratio <= target else 'NOT met'})"


def main() -> None:
    count = len(select_notebooks(NOTEBOOKS, [], None))
    names = ", ".join(p.stem for p in select_notebooks(NOTEBOOKS, [], None))
    print(f"series: {count} notebook(s): {names}")
    with tempfile.TemporaryDirectory(prefix="bench-series-") as tmp:
        base = Path(tmp)
        for name in ("floor", "lab3", "lab12", "scaled"):
            (base / name).mkdir()
        empty = floor(base / "floor", count)
        line(f"floor: papermill, {count} parameters-only notebooks", empty)
        lab3 = write_lab(base / "lab3", workers=2, time_scale=0.0)
        cold, summary = labkit_run(lab3, base / "lab3" / "outputs", "cold, 3 nodes")
        in_notebooks = sum(n["duration_s"] for n in summary["notebooks"])
        line("cold run, 3 nodes, time_scale 0", cold, verdict(cold / empty, 2.5))
        print(f"{'  of which inside the notebooks (summary)':<46} {in_notebooks:7.2f} s")
        again, summary = labkit_run(lab3, base / "lab3" / "outputs", "converged")
        changes = sum(n["changes"] for n in summary["notebooks"])
        line(f"converged re-run ({changes} changes)", again, verdict(again / empty, 1.8))
        doc = sim_lab(base / "lab12", workers=11, time_scale=0.0)
        pods = ipaddress.ip_network(doc["k3s"]["cluster_cidr"])
        doc["k3s"]["cluster_cidr"] = str(pods.supernet(new_prefix=20))  # a /24 per node: 12 need more than a /22
        lab12 = write_lab(base / "lab12", doc)
        big, _ = labkit_run(lab12, base / "lab12" / "outputs", "cold, 12 nodes")
        line("cold run, 12 nodes, time_scale 0", big, verdict(big / cold, 1.2) + " of the 3-node run")
        scaled_lab = write_lab(base / "scaled", workers=2, time_scale=SCALE)
        scaled, summary = labkit_run(scaled_lab, base / "scaled" / "outputs", f"time_scale {SCALE}")
        path, steps = critical_path(summary)
        # What the run spent beyond its modelled waits at this scale (kernels, imports, the runner,
        # requests) is assumed to stay serial with them at time_scale 1: an upper estimate.
        beyond = scaled - path * SCALE
        line(f"cold run, 3 nodes, time_scale {SCALE}", scaled,
             f"critical path x {SCALE} = {path * SCALE:.2f} s; the rest {beyond:.2f} s")
        line("  at time_scale 1 (upper estimate): path + rest", path + beyond,
             verdict((path + beyond) / path, 1.1) + f" of the critical path {path:.1f} s")
        print("  critical path (modelled seconds): " + " -> ".join(f"{name} {s:g}" for name, s in steps))


if __name__ == "__main__":
    main()
