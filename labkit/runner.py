"""``labkit run``: the series, headless, with an audit trail.

Each selected notebook runs with papermill in the ``homelab-notebooks`` kernel, into a private
temporary folder; once it ends, every known secret is scrubbed from it and only then is it written
to ``outputs/<UTC timestamp>-<lab>/``. The run stops at the first failure, naming notebook and cell,
and leaves its summary behind (``labkit.summary``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat

from labkit import secrets
from labkit.embedded import EmbeddedLab
from labkit.errors import LabError, ParamsError
from labkit.params import Lab
from labkit.report import records_in
from labkit.scrub import scrub
from labkit.summary import NotebookResult, RunResult, point_latest, render_html, write_summary

KERNEL = "homelab-notebooks"
NOTEBOOK_NAME = re.compile(r"^(\d\d)-[\w-]+\.ipynb$")


@dataclass
class RunOptions:
    params: Path
    notebooks_dir: Path
    outputs_dir: Path
    only: list[str] = field(default_factory=list)
    start_from: str | None = None
    dry_run: bool = False
    keep_lab: bool = False
    html: bool = True
    timeout_s: int = 3600
    parameters: dict[str, Any] = field(default_factory=dict)  # -p NAME VALUE: to the notebooks that declare NAME


Reporter = Callable[[str], None]


def select_notebooks(notebooks_dir: Path, only: list[str], start_from: str | None) -> list[Path]:
    """Notebooks named ``NN-name.ipynb`` in order, filtered by ``--only`` / ``--from`` numbers."""
    found = sorted(p for p in notebooks_dir.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))
    numbers = {p.name[:2] for p in found}
    wanted = [n.zfill(2) for n in only]
    unknown = [n for n in wanted + ([start_from.zfill(2)] if start_from else []) if n not in numbers]
    if unknown:
        raise ParamsError([f"--only/--from: no notebook numbered {', '.join(unknown)} in {notebooks_dir} "
                           f"(have: {', '.join(sorted(numbers)) or 'none'})"], source="the command line")
    if wanted:
        found = [p for p in found if p.name[:2] in wanted]
    if start_from:
        found = [p for p in found if p.name[:2] >= start_from.zfill(2)]
    if not found:
        raise LabError(f"no notebooks to run in {notebooks_dir}")
    return found


def run_series(lab: Lab, options: RunOptions, report: Reporter = print) -> RunResult:
    """Run the selected notebooks against ``lab``; never raises for a notebook failure."""
    notebooks = select_notebooks(options.notebooks_dir, options.only, options.start_from)
    _check_parameters(notebooks, options.parameters)
    started = datetime.now(UTC)
    folder = _run_folder(options.outputs_dir, started, lab.name)
    results = [NotebookResult(p.stem) for p in notebooks]
    t0 = time.monotonic()
    report(f"run {folder.name}: {len(notebooks)} notebook(s) on lab '{lab.name}'"
           f"{' (dry run: plans only)' if options.dry_run else ''}")
    try:
        with EmbeddedLab(lab, keep=options.keep_lab, report=report):
            known = _resolve_secrets(lab)
            with tempfile.TemporaryDirectory(prefix="labkit-run-") as scratch, own_kernel(Path(scratch)):
                for path, result in zip(notebooks, results, strict=True):
                    _run_notebook(path, result, lab, options, Path(scratch), folder, known, report)
                    if result.status == "failed":
                        break
    except BaseException:
        with suppress(OSError):  # a run that could not start leaves no empty folder behind
            folder.rmdir()
        raise
    for result in results:
        if result.status == "pending":
            result.status = "skipped"
    status = "passed" if all(r.status == "passed" for r in results) else "failed"
    run = RunResult(folder, lab.name, status, results, started.isoformat(), round(time.monotonic() - t0, 1),
                    options.dry_run)
    write_summary(run, options.params, options.notebooks_dir)
    if options.html:
        render_html(folder)
    point_latest(options.outputs_dir, folder)
    return run


def _run_folder(outputs: Path, started: datetime, lab: str) -> Path:
    folder = outputs / f"{started:%Y%m%dT%H%M%SZ}-{lab}"
    suffix = 1
    while folder.exists():  # two runs in one second
        suffix += 1
        folder = outputs / f"{started:%Y%m%dT%H%M%SZ}-{lab}-{suffix}"
    folder.mkdir(parents=True)
    return folder


def _declared(path: Path) -> set[str]:
    from papermill import inspect_notebook

    return set(inspect_notebook(str(path)))


def _check_parameters(notebooks: list[Path], parameters: dict[str, Any]) -> None:
    """A parameter no notebook declares would be ignored silently (a typo of ``reconcile``, say)."""
    if not parameters:
        return
    declared = set().union(*(_declared(p) for p in notebooks))
    unknown = [name for name in parameters if name not in declared]
    if unknown:
        raise ParamsError([f"-p {name}: no notebook of this run has that parameter (they have: "
                           f"{', '.join(sorted(declared))})" for name in unknown], source="the command line")


def _resolve_secrets(lab: Lab) -> frozenset[str]:
    """Resolve the lab's secrets up front: a missing one stops the run before any notebook."""
    for ref in lab.secret_refs().values():
        lab.secret(ref)
    return secrets.registered()


def _run_notebook(path: Path, result: NotebookResult, lab: Lab, options: RunOptions, scratch: Path,
                  folder: Path, known: frozenset[str], report: Reporter) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from labkit.engine import ENGINE_NAME, describe_failure

    report(f"▶ {path.name}")
    executed = scratch / path.name
    t0 = time.monotonic()
    try:
        papermill.execute_notebook(
            str(path), str(executed), parameters={
                **{k: v for k, v in options.parameters.items() if k in _declared(path)},
                "lab_file": str(lab.path.resolve()), "dry_run": options.dry_run},
            kernel_name=KERNEL, engine_name=ENGINE_NAME, cwd=str(path.parent), progress_bar=False,
            execution_timeout=options.timeout_s, on_cell=_cell_reporter(report),
            # The kernel's own log is not the run's story: its start-up chatter (e.g. the TCP transport
            # warning), and the 'KeyboardInterrupt caught in kernel' ERROR it logs when jupyter_client's
            # shutdown (which always interrupts first) lands inside a message handler. Cell errors
            # reach the run through the notebook, a dead kernel through papermill.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )
        result.status = "passed"
    except PapermillExecutionError as failure:
        result.status, result.error = "failed", describe_failure(failure)
    except Exception as exc:  # kernel died, timeout, papermill itself
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
    result.duration_s = round(time.monotonic() - t0, 1)
    if executed.exists():
        _store(executed, result, folder, known)
    if result.error:
        result.error = secrets.redact(result.error, known)
    mark = "✔" if result.status == "passed" else "✘"
    report(f"{mark} {path.name} {result.status} in {result.duration_s:.1f}s"
           f"{': ' + result.error if result.error else ''}")


def _store(executed: Path, result: NotebookResult, folder: Path, known: frozenset[str]) -> None:
    """Scrub the executed notebook and write it into the run folder; read its records."""
    clean, result.secrets_scrubbed = scrub(json.loads(executed.read_text()), known)
    nb = nbformat.from_dict(clean)
    target = folder / executed.name
    nbformat.write(nb, target)
    if scrub(json.loads(target.read_text()), known)[1]:  # belt and braces: never leave a known secret on disk
        target.unlink()
        raise LabError(f"{target.name}: a secret survived scrubbing; the executed notebook was not kept")
    result.output = target.name
    for rec in records_in(nb):
        result.checks_passed += sum(c["passed"] for c in rec["checks"])
        result.checks_failed += sum(not c["passed"] for c in rec["checks"])
        result.failed_checks += [c["name"] for c in rec["checks"] if not c["passed"]]
        result.changes += len(rec["changes"])
        result.planned += len(rec["planned"])


def _cell_reporter(report: Reporter) -> Callable[[int, list], None]:
    """Report each code cell as it starts, under the heading of the section it belongs to."""

    def on_cell(index: int, cells: list) -> None:
        cell = cells[index]
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") != "code" or not cell.get("source", "").strip() or "injected-parameters" in tags:
            return
        heading = next((line.lstrip("# ").strip() for c in reversed(cells[:index]) if c.get("cell_type") == "markdown"
                        for line in c.get("source", "").splitlines() if line.startswith("#")), "")
        first = cell["source"].strip().splitlines()[0][:60]
        report(f"    cell {index + 1}/{len(cells)}" + (f" · {heading[:50]}" if heading else "") + f": {first}")

    return on_cell


@contextmanager
def own_kernel(scratch: Path) -> Iterator[None]:
    """Run the notebooks' kernel (``homelab-notebooks``) with this very interpreter.

    The kernel spec registered for JupyterLab lives in the user's folder and names one checkout's
    venv; another checkout may have registered it last. A spec of our own, first on JUPYTER_PATH,
    makes a run use the labkit that runs it."""
    from ipykernel.kernelspec import write_kernel_spec

    spec_dir = scratch / "jupyter" / "kernels" / KERNEL
    write_kernel_spec(spec_dir, overrides={"display_name": "homelab-notebooks"})
    before = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(scratch / "jupyter"), before]))
    try:
        yield
    finally:
        if before is None:
            del os.environ["JUPYTER_PATH"]
        else:
            os.environ["JUPYTER_PATH"] = before
