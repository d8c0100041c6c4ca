"""``labkit run``: the series, headless, with an audit trail.

Each selected notebook runs with papermill in the ``homelab-notebooks`` kernel, into a private
temporary folder; once it ends, every known secret is scrubbed from it and only then is it written
to ``outputs/<UTC timestamp>-<lab>/``. The run stops at the first failure, naming notebook and cell,
and leaves its summary behind (``labkit.summary``). Ctrl-C (SIGINT) and SIGTERM stop it the same
way: the kernel is stopped, what ran is scrubbed and kept, the summary says ``interrupted`` and
where, the temporary folder goes and an embedded lab the run started is stopped.

What does not depend on a notebook's cells overlaps them: the first kernel boots while the embedded
lab starts, each next kernel while the current notebook runs (``labkit.kernels``), each page renders
while the next notebook runs (``labkit.render.RenderWorker``), and the lab stops while the summary
is written.
"""

from __future__ import annotations

import ast
import gc
import json
import logging
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labkit import secrets
from labkit.embedded import EmbeddedLab
from labkit.errors import LabError, ParamsError, Terminated
from labkit.kernels import KERNEL, SECRETS_SINK, Kernels, own_kernel
from labkit.nbimport import nbformat
from labkit.params import Lab, excerpt
from labkit.records import applied_in, records_in
from labkit.render import RenderWorker
from labkit.scrub import scrub
from labkit.summary import NotebookResult, RunResult, notebook_inventory, point_latest, write_summary

# Kernels started ahead of their notebook: a short notebook ends before the next kernel has imported
# what it needs (the kubernetes client, pandas, plotly: seconds); more would crowd two cores.
KERNELS_AHEAD = 2
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


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


class _InterruptedTasks(logging.Filter):
    """A Ctrl-C or SIGTERM that lands while one of papermill's asyncio tasks steps ends that task
    too; asyncio then logs 'Task exception was never retrieved' with a KeyboardInterrupt traceback
    when the task is collected. The run's record already says where it was interrupted."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


@contextmanager
def interruptible() -> Iterator[None]:
    """Around ``run_series``: SIGTERM interrupts the run as SIGINT does (a run then records where it
    stopped); the handlers in place before come back after."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, _terminate)
    quiet, asyncio_log = _InterruptedTasks(), logging.getLogger("asyncio")
    asyncio_log.addFilter(quiet)
    try:
        yield
    finally:
        gc.collect()  # the tasks an interrupt ended are collected (and their log filtered) now
        asyncio_log.removeFilter(quiet)
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _hold_signals() -> None:
    """Once interrupted, the run cleans up whatever else arrives: a second Ctrl-C must not leave
    an unscrubbed notebook in /tmp or the embedded lab running."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _signal_name(stop: KeyboardInterrupt) -> str:
    return "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"


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
    interrupted = None
    embedded = EmbeddedLab(lab, keep=options.keep_lab, report=report, background_stop=True)
    scratch_dir, pages = tempfile.TemporaryDirectory(prefix="labkit-run-"), RenderWorker()
    kernels = Kernels(logs=Path(scratch_dir.name))
    try:
        with scratch_dir as scratch, own_kernel(Path(scratch)):
            for path in notebooks[:KERNELS_AHEAD]:
                kernels.prepare(path)  # boot and import while the embedded lab starts
            with embedded:
                known = _resolve_secrets(lab, options.parameters)
                for n, (path, result) in enumerate(zip(notebooks, results, strict=True)):
                    _run_notebook(path, result, lab, options, Path(scratch), folder, known, report,
                                  kernels, notebooks[n + 1:n + 1 + KERNELS_AHEAD])
                    if result.output and options.html:
                        pages.submit(folder / result.output)  # rendered while the next notebook runs
                    if result.status == "failed":
                        break
    except KeyboardInterrupt as stop:
        _hold_signals()
        if all(r.status == "pending" for r in results):
            _close(kernels, pages, embedded)
            with suppress(OSError):  # interrupted before any notebook ran: nothing to keep
                folder.rmdir()
            raise
        interrupted = _signal_name(stop)
    except BaseException:
        _close(kernels, pages, embedded)
        with suppress(OSError):  # a run that could not start leaves no empty folder behind
            folder.rmdir()
        raise
    for result in results:
        if result.status == "pending":
            result.status = "skipped"
    status = "passed" if all(r.status == "passed" for r in results) else "failed"
    run = RunResult(folder, lab.name, "interrupted" if interrupted else status, results, started.isoformat(),
                    round(time.monotonic() - t0, 1), options.dry_run, interrupted)
    try:
        write_summary(run, options.params, options.notebooks_dir)  # while the lab stops and pages render
        pages.wait()
        point_latest(options.outputs_dir, folder)
    finally:
        _close(kernels, pages, embedded)
    return run


def _close(kernels: Kernels, pages: RenderWorker, embedded: EmbeddedLab) -> None:
    """What the run left working in the background: render, kernel and lab shut-downs."""
    try:
        pages.wait()
    finally:
        kernels.close()
        embedded.wait_stopped()


def _run_folder(outputs: Path, started: datetime, lab: str) -> Path:
    folder = outputs / f"{started:%Y%m%dT%H%M%SZ}-{lab}"
    suffix = 1
    while folder.exists():  # two runs in one second
        suffix += 1
        folder = outputs / f"{started:%Y%m%dT%H%M%SZ}-{lab}-{suffix}"
    folder.mkdir(parents=True)
    return folder


def _declared(path: Path) -> dict[str, str]:
    """The notebook's parameters: name -> default, as written in its parameters cell."""
    from papermill import inspect_notebook

    return {name: str(p["default"]) for name, p in inspect_notebook(str(path)).items()}


def _check_parameters(notebooks: list[Path], parameters: dict[str, Any]) -> None:
    """A parameter no notebook declares would be ignored silently (a typo of ``reconcile``, say);
    a value must have its default's type (``-p reconcile 1`` is no bool)."""
    if not parameters:
        return
    declared: dict[str, tuple[str, str]] = {}
    for path in notebooks:
        for name, default in _declared(path).items():
            declared.setdefault(name, (path.stem, default))
    unknown = [name for name in parameters if name not in declared]
    if unknown:
        raise ParamsError([f"-p {name}: no notebook of this run has that parameter (they have: "
                           f"{', '.join(sorted(declared))})" for name in unknown], source="the command line")
    wrong = [_wrong_type(name, value, *declared[name]) for name, value in parameters.items()]
    if any(wrong):
        raise ParamsError([w for w in wrong if w], source="the command line")


def _wrong_type(name: str, value: Any, notebook: str, default: str) -> str | None:
    try:
        expected = type(ast.literal_eval(default))
    except (ValueError, SyntaxError):
        return None  # a default that is an expression: nothing to compare with
    number = expected is float and type(value) is int
    if expected is type(None) or type(value) is expected or number:
        return None
    got, want = type(value).__name__, expected.__name__
    return (f"-p {name}: {excerpt(value)} is {'an' if got[0] in 'aeiou' else 'a'} {got}; {notebook} expects "
            f"{'an' if want[0] in 'aeiou' else 'a'} {want} like its default {default[:40]}")


def _resolve_secrets(lab: Lab, parameters: dict[str, Any]) -> frozenset[str]:
    """Resolve the lab's secrets up front: a missing one stops the run before any notebook, and so
    does a -p value holding one (secrets come by reference only; never echoed)."""
    values = {where: lab.secret(ref) for where, ref in lab.secret_refs().items()}
    misplaced = [f"-p {name}: the value holds the lab's secret {where}; secrets never go on the command line: "
                 "the notebooks read them through the lab file" for name, value in parameters.items()
                 for where, secret in values.items() if secret in str(value)]
    if misplaced:
        raise ParamsError(misplaced, source="the command line")
    return secrets.registered()


def _run_notebook(path: Path, result: NotebookResult, lab: Lab, options: RunOptions, scratch: Path,
                  folder: Path, known: frozenset[str], report: Reporter, kernels: Kernels,
                  following: list[Path]) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from labkit.engine import ENGINE_NAME, describe_failure

    report(f"▶ {path.name}")
    executed = scratch / path.name
    t0 = time.monotonic()
    cells: list[str] = []  # the cells started so far, as the progress shows them
    interrupted = None
    km = kernels.take(path)
    for upcoming in following:
        kernels.prepare(upcoming)  # boots and imports while this notebook runs
    try:
        papermill.execute_notebook(
            str(path), str(executed), parameters={
                **{k: v for k, v in options.parameters.items() if k in _declared(path)},
                "lab_file": lab_file_parameter(lab.path, path.parent), "dry_run": options.dry_run},
            kernel_name=KERNEL, engine_name=ENGINE_NAME, km=km, cwd=str(path.parent), progress_bar=False,
            execution_timeout=options.timeout_s, on_cell=_cell_reporter(report, cells))
        result.status = "passed"
    except PapermillExecutionError as failure:
        # The cells as executed: without the two error notes papermill adds, which shift the indices.
        cells = [c for c in (nbformat.read(executed, as_version=4).cells if executed.exists() else [])
                 if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
        result.status, result.error = "failed", describe_failure(failure, cells)
    except Exception as exc:  # kernel died, timeout, papermill itself
        said = kernels.last_words(path)
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}" + (
            f"\nthe kernel's last words (stderr):\n{said}" if said else "")
    except KeyboardInterrupt as stop:  # papermill has saved what ran; the kernel is stopped below
        _hold_signals()
        interrupted = stop
        result.status = "interrupted"
        result.error = f"interrupted by {_signal_name(stop)} in {cells[-1] if cells else 'the kernel start'}"
    finally:
        kernels.release(km, now=interrupted is not None)
    result.duration_s = round(time.monotonic() - t0, 1)
    known = known | secrets.learnt(scratch / SECRETS_SINK)  # what the kernel learnt, before anything is kept
    if executed.exists():
        _store(executed, result, folder, known)
    if result.error:
        result.error = secrets.redact(result.error, known)
    mark = "✔" if result.status == "passed" else "✘"
    report(f"{mark} {path.name} {result.status} in {result.duration_s:.1f}s"
           f"{': ' + result.error if result.error else ''}")
    if interrupted is not None:
        raise interrupted


def lab_file_parameter(lab_file: Path, notebooks_dir: Path) -> str:
    """The lab file as the notebook (run in its own folder) should name it: relative when it lies in
    the notebooks' repository, so rendered notebooks do not show this checkout's absolute path."""
    lab_file, repo = lab_file.resolve(), notebooks_dir.resolve().parent
    return os.path.relpath(lab_file, notebooks_dir.resolve()) if lab_file.is_relative_to(repo) else str(lab_file)


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
    result.changes = len(applied_in(nb))  # counted as made, not from the last cell's record
    records = records_in(nb)
    result.inventory = notebook_inventory(result.name, records)
    for rec in records:
        enforced = [c for c in rec["checks"] if c.get("enforced", True)]  # a dry run's checks only show
        result.checks_passed += sum(c["passed"] for c in enforced)
        result.checks_failed += sum(not c["passed"] for c in enforced)
        result.failed_checks += [c["name"] for c in enforced if not c["passed"]]
        result.planned += len(rec["planned"])


def _cell_reporter(report: Reporter, started: list[str]) -> Callable[[int, list], None]:
    """Report each code cell as it starts, under the heading of the section it belongs to; the
    lines go to ``started`` too."""
    from labkit.engine import section_heading

    def on_cell(index: int, cells: list) -> None:
        cell = cells[index]
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") != "code" or not cell.get("source", "").strip() or "injected-parameters" in tags:
            return
        heading = section_heading(cells, index)
        first = cell["source"].strip().splitlines()[0][:60]
        started.append(f"cell {index + 1}/{len(cells)}" + (f" · {heading[:50]}" if heading else "") + f": {first}")
        report(f"    {started[-1]}")

    return on_cell
