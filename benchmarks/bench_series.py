"""The series' wall time next to papermill's floor, side by side in one run, over every notebook present.

    PATH=$PWD/.tools/bin:$PATH .venv/bin/python benchmarks/bench_series.py

Figures (each a fresh embedded lab on loopback addresses of its own, ``labkit run`` as a user runs it):
- floor: papermill executing as many notebooks as the series has, each holding only the parameters
  cell, one after another in the project's kernel: what executing any notebooks costs at all;
- cold: ``labkit run --keep-lab`` (what ``make lab`` runs) at time_scale 0 on a new lab (3 nodes),
  target <= 2.5x the floor;
- converged: the same command again on that running lab, which changes nothing (a user's second
  ``make lab``), target <= 1.8x the floor; per notebook, its papermill duration and the seconds its
  cells ran (the lab's work: plans, probes, drills); then ``labsim down``, timed on its own line;
- runner alone: ``labkit run`` over the floor's parameters-only notebooks on that running lab: the
  runner's own cost (kernels, papermill, scrubbing, summary) next to papermill's;
- 12 nodes: the cold run with 12 nodes (kept, then stopped), target <= 1.2x the 3-node cold run;
- time_scale 0.05: the cold run again; per notebook and for the series, the critical path of the
  operations the twin recorded (``bench_series_path``: its ledger, the notebooks' windows), wall /
  (path x 0.05), and the wall time at time_scale 1 if what the run spent beyond the path stayed
  serial with it (path + rest: an upper estimate), target <= 1.1x the critical path.

    .venv/bin/python benchmarks/bench_series.py --only-scaled   # the time_scale 0.05 run alone
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

from benchmarks.bench_series_path import modelled_01_02, notebook_windows, paths, windows  # noqa: E402
from labkit.kernels import KERNEL, own_kernel  # noqa: E402
from labkit.runner import select_notebooks  # noqa: E402
from labsim.operations import LEDGER_FILE, read_ledger  # noqa: E402
from tests.labfiles import sim_lab, state_dir, write_lab  # noqa: E402

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


def labkit_run(lab_file: Path, outputs: Path, label: str, *flags: str) -> tuple[float, dict]:
    """Wall time of ``labkit run`` (the whole command) and its summary (with the command's wall-clock
    start and end added, as ``bench_start`` and ``bench_end``)."""
    wall_start, start = time.time(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "labkit", "run", "--params", str(lab_file), "--outputs", str(outputs),
                           *flags], capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"labkit run failed ({label}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    summary = json.loads((outputs / "latest" / "summary.json").read_text())
    return elapsed, {**summary, "bench_start": wall_start, "bench_end": time.time()}


def cell_seconds(run_folder: Path) -> dict[str, tuple[float, float]]:
    """Per executed notebook of a run folder: papermill's duration and the sum of its cells' durations."""
    out = {}
    for path in sorted(run_folder.glob("[0-9][0-9]-*.ipynb")):
        nb = json.loads(path.read_text())
        cells = sum(c["metadata"].get("papermill", {}).get("duration") or 0 for c in nb["cells"] if c["cell_type"] == "code")
        out[path.stem] = (nb["metadata"].get("papermill", {}).get("duration") or 0.0, cells)
    return out


def lab_down(lab_file: Path) -> float:
    """Stop a lab that a ``--keep-lab`` run left running (``make stop-lab``); its wall time."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "labsim", "down", "--state", str(state_dir(lab_file))],
                   check=True, capture_output=True, timeout=300)
    return time.perf_counter() - start


def line(label: str, seconds: float, ratio: str = "") -> None:
    print(f"{label:<46} {seconds:7.2f} s   {ratio}")


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:4.2f}x (target <= {target}x: {'met' if ratio <= target else 'NOT met'})"


def scaled(folder: Path) -> None:
    """The cold run at time_scale SCALE against the critical path of what the twin recorded."""
    lab_file = write_lab(folder, workers=2, time_scale=SCALE)
    wall, summary = labkit_run(lab_file, folder / "outputs", f"time_scale {SCALE}")
    ops = read_ledger(state_dir(lab_file) / LEDGER_FILE)
    run = windows(summary["bench_start"], summary["bench_end"], notebook_windows(folder / "outputs" / "latest"))
    found = paths(ops, run)
    print(f"cold run, 3 nodes, time_scale {SCALE}: {len(ops)} operations recorded; per window: wall, critical "
          f"path x {SCALE}, wall / that, at time_scale 1 (path + rest) / path, longest operations on the path")
    for part in found:
        span = part.window.end - part.window.start
        ratios = (f"{span / (part.seconds * SCALE):6.2f}x {(part.seconds + span - part.seconds * SCALE) / part.seconds:5.2f}x"
                  if part.seconds else "     -      -")
        top = sorted(part.chain, key=lambda op: -op.modelled_s)[:3]
        print(f"  {part.window.name:<26} {span:7.2f} s {part.seconds * SCALE:6.2f} s {ratios}   "
              + "; ".join(f"{op.what} {op.modelled_s:g}" for op in top))
    path = sum(part.seconds for part in found)
    beyond = wall - path * SCALE  # kernels, imports, the runner, requests, polls: assumed serial at scale 1
    line(f"series at time_scale {SCALE}", wall, f"critical path x {SCALE} = {path * SCALE:.2f} s; "
         f"wall / that {wall / (path * SCALE):.2f}x; the rest {beyond:.2f} s")
    line("  at time_scale 1 (upper estimate): path + rest", path + beyond,
         verdict((path + beyond) / path, 1.1) + f" of the critical path {path:.1f} s")
    as_ran = sum(p.seconds for p in found if p.window.name in ("01-provision-vms", "02-bootstrap-k3s"))
    print(f"  01+02 as they ran {as_ran:.1f} s; by the lab's own dependencies {modelled_01_02(summary):.1f} s")


def main() -> None:
    if sys.argv[1:] == ["--only-scaled"]:
        with tempfile.TemporaryDirectory(prefix="bench-series-") as tmp:
            scaled(Path(tmp))
        return
    count = len(select_notebooks(NOTEBOOKS, [], None))
    names = ", ".join(p.stem for p in select_notebooks(NOTEBOOKS, [], None))
    print(f"series: {count} notebook(s): {names}")
    with tempfile.TemporaryDirectory(prefix="bench-series-") as tmp:
        base = Path(tmp)
        for name in ("floor", "lab3", "lab12", "scaled", "runner"):
            (base / name).mkdir()
        empty = floor(base / "floor", count)
        line(f"floor: papermill, {count} parameters-only notebooks", empty)
        lab3 = write_lab(base / "lab3", workers=2, time_scale=0.0)
        try:
            cold, summary = labkit_run(lab3, base / "lab3" / "outputs", "cold, 3 nodes", "--keep-lab")
            in_notebooks = sum(n["duration_s"] for n in summary["notebooks"])
            line("cold run, 3 nodes, time_scale 0", cold, verdict(cold / empty, 2.5))
            print(f"{'  of which inside the notebooks (summary)':<46} {in_notebooks:7.2f} s")
            again, summary = labkit_run(lab3, base / "lab3" / "outputs", "converged", "--keep-lab")
            changes = sum(n["changes"] for n in summary["notebooks"])
            line(f"converged re-run ({changes} changes), same lab", again, verdict(again / empty, 1.8))
            spent = cell_seconds(base / "lab3" / "outputs" / "latest")
            print(f"{'  of which in cells (the lab work)':<46} {sum(c for _, c in spent.values()):7.2f} s   "
                  + ", ".join(f"{name[:2]} {cells:.1f}/{total:.1f}" for name, (total, cells) in spent.items())
                  + "  (per notebook: cells/papermill s)")
            runner, _ = labkit_run(lab3, base / "runner", "runner alone", "--keep-lab", "--notebooks", str(base / "floor"))
            line(f"runner alone: labkit run, {count} parameters-only notebooks", runner, f"{runner / empty:4.2f}x the floor")
        finally:
            line("  then labsim down", lab_down(lab3))
        doc = sim_lab(base / "lab12", workers=11, time_scale=0.0)
        pods = ipaddress.ip_network(doc["k3s"]["cluster_cidr"])
        doc["k3s"]["cluster_cidr"] = str(pods.supernet(new_prefix=20))  # a /24 per node: 12 need more than a /22
        lab12 = write_lab(base / "lab12", doc)
        try:
            big, _ = labkit_run(lab12, base / "lab12" / "outputs", "cold, 12 nodes", "--keep-lab")
        finally:
            lab_down(lab12)
        line("cold run, 12 nodes, time_scale 0", big, verdict(big / cold, 1.2) + " of the 3-node run")
        scaled(base / "scaled")


if __name__ == "__main__":
    main()
