"""What a run leaves behind: its results (per notebook), ``summary.json`` and ``summary.md``,
the executed notebooks rendered as HTML, and ``outputs/latest`` pointing at the run folder."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from labkit import __version__


@dataclass
class NotebookResult:
    name: str
    status: str = "pending"  # passed | failed | skipped
    duration_s: float = 0.0
    checks_passed: int = 0
    checks_failed: int = 0
    failed_checks: list[str] = field(default_factory=list)
    changes: int = 0
    planned: int = 0
    error: str | None = None
    secrets_scrubbed: int = 0
    output: str | None = None


@dataclass
class RunResult:
    folder: Path
    lab: str
    status: str
    notebooks: list[NotebookResult]
    started: str
    duration_s: float
    dry_run: bool

    @property
    def ok(self) -> bool:
        return self.status == "passed"

    @property
    def changes(self) -> int:
        return sum(n.changes for n in self.notebooks)



def write_summary(run: RunResult, params_file: Path, notebooks_dir: Path) -> None:
    data = {
        "run": {
            "folder": run.folder.name, "lab": run.lab, "status": run.status, "started": run.started,
            "duration_s": run.duration_s, "dry_run": run.dry_run, "changes": run.changes,
            "params_file": str(params_file), "params_sha256": _sha256(params_file),
            "git_commit": _git_commit(notebooks_dir), "labkit_version": __version__,
        },
        "notebooks": [asdict(n) for n in run.notebooks],
    }
    (run.folder / "summary.json").write_text(json.dumps(data, indent=2) + "\n")
    (run.folder / "summary.md").write_text(summary_markdown(data))


def summary_markdown(data: dict) -> str:
    run = data["run"]
    lines = [
        f"# Run {run['folder']}", "",
        f"- lab: **{run['lab']}**, status: **{run['status']}**{' (dry run)' if run['dry_run'] else ''}",
        f"- started {run['started']}, took {run['duration_s']:.1f} s",
        f"- git {run['git_commit'] or 'unknown'}, labkit {run['labkit_version']}, "
        f"parameters {Path(run['params_file']).name} (sha256 {run['params_sha256'][:12]})", "",
        "| notebook | status | duration | checks passed | checks failed | changes | secrets scrubbed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for nb in data["notebooks"]:
        lines.append(f"| {nb['name']} | {nb['status']} | {nb['duration_s']:.1f} s | {nb['checks_passed']} | "
                     f"{nb['checks_failed']} | {nb['changes']} | {nb['secrets_scrubbed']} |")
    lines.append("")
    for nb in data["notebooks"]:
        if nb["error"]:
            lines += [f"**{nb['name']} failed**: {nb['error']}", ""]
        if nb["secrets_scrubbed"]:
            lines += [f"**{nb['name']}**: {nb['secrets_scrubbed']} secret occurrence(s) were found and "
                      "scrubbed from the executed notebook; find the cell that printed them.", ""]
    if run["status"] == "passed":
        lines.append("No changes were made: the lab was already converged." if run["changes"] == 0 and not run["dry_run"]
                     else f"{run['changes']} change(s) made." if not run["dry_run"] else "Dry run: nothing was changed.")
    return "\n".join(lines) + "\n"


def render_html(folder: Path) -> None:
    """HTML of each executed notebook; figures drawn by one copy of plotly.js per run folder."""
    from nbconvert import HTMLExporter

    from labkit.plots import PLOTLY_MIME, figure_html

    plotly_js = Path(__import__("plotly").__file__).parent / "package_data" / "plotly.min.js"
    shutil.copyfile(plotly_js, folder / "plotly.min.js")
    for nb_path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        for n, output in enumerate(o for c in nb.cells for o in c.get("outputs", [])):
            if PLOTLY_MIME in output.get("data", {}):
                output["data"]["text/html"] = figure_html(output["data"][PLOTLY_MIME], f"figure-{n}")
        body, _ = HTMLExporter().from_notebook_node(nb)
        body = body.replace("</head>", '<script src="plotly.min.js"></script>\n</head>', 1)
        nb_path.with_suffix(".html").write_text(body)


def point_latest(outputs: Path, folder: Path) -> None:
    latest = outputs / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(folder.name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_commit(where: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
