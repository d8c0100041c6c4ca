"""``labkit site`` and ``labkit diff``: the run folders as a static site, and what changed between runs.

The site is plain HTML with relative links (``.../index.html``, never a bare folder), so it works
from ``file://`` and any static host: an index of runs, a page per run (its summary, links to each
rendered notebook), a page per notebook with its history across runs (plotly charts drawn by the
shared ``_assets/plotly.min.js``), and a drift page per pair of consecutive runs of a lab, computed
from the inventories the summaries record (``labkit.summary.lab_inventory``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from html import escape
from pathlib import Path

from labkit.errors import LabError
from labkit.plots import figure_html
from labkit.render import ASSETS, plotly_script, shared_plotly

STYLE = """body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border-bottom:1px solid #ddd;padding:.3em .7em;text-align:left}
th{background:#f4f4f4}td.num{text-align:right}.passed{color:#137333}.failed,.interrupted{color:#b3261e}
.removed{color:#b3261e}.added{color:#137333}nav a{margin-right:1em}code{background:#f4f4f4;padding:0 .2em}"""


@dataclass(frozen=True)
class Run:
    folder: Path
    summary: dict

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def info(self) -> dict:
        return self.summary["run"]

    @property
    def inventory(self) -> dict:
        return self.summary.get("inventory") or {}  # runs older than inventories have none


def find_runs(outputs: Path) -> list[Run]:
    """Run folders (those with a ``summary.json``), oldest first."""
    runs = [Run(p, json.loads((p / "summary.json").read_text())) for p in sorted(outputs.iterdir())
            if p.is_dir() and not p.is_symlink() and (p / "summary.json").is_file()]
    return sorted(runs, key=lambda r: (r.info["started"], r.name))


def load_run(path: Path) -> Run:
    summary = path / "summary.json"
    if not summary.is_file():
        raise LabError(f"{path}: not a run folder (no summary.json)")
    return Run(path.resolve(), json.loads(summary.read_text()))


# --- drift -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Drift:
    section: str
    item: str
    kind: str  # added | removed | changed
    fields: tuple[tuple[str, object, object], ...] = ()  # (field, before, after) for "changed"

    def line(self) -> str:
        if self.kind != "changed":
            return f"{self.section} {self.item}: {self.kind}"
        return f"{self.section} {self.item}: " + ", ".join(f"{f} {a!r} → {b!r}" for f, a, b in self.fields)


def drift(before: dict, after: dict) -> list[Drift]:
    """What changed in the lab between two inventories (section -> item -> facts)."""
    found = []
    for section in sorted(before.keys() | after.keys()):
        old, new = before.get(section, {}), after.get(section, {})
        for item in sorted(old.keys() | new.keys()):
            if item not in old:
                found.append(Drift(section, item, "added"))
            elif item not in new:
                found.append(Drift(section, item, "removed"))
            elif old[item] != new[item]:
                fields = tuple((f, old[item].get(f), new[item].get(f)) for f in sorted(old[item].keys() | new[item].keys())
                               if old[item].get(f) != new[item].get(f))
                found.append(Drift(section, item, "changed", fields))
    return found


def diff_text(a: Run, b: Run) -> str:
    """``labkit diff``: the drift from run ``a`` to run ``b``, one line per item."""
    changes = drift(a.inventory, b.inventory)
    head = f"{a.name} → {b.name}: "
    if not a.inventory and not b.inventory:
        return head + "neither run recorded an inventory\n"
    if not changes:
        return head + "no drift: the lab is the same\n"
    return head + f"{len(changes)} item(s) changed\n" + "".join(f"  {d.line()}\n" for d in changes)


# --- the site --------------------------------------------------------------------------------------

def build_site(outputs: Path, out: Path) -> Path:
    """Write the site for the run folders in ``outputs`` into ``out`` (which may be ``outputs``
    itself); returns the index page."""
    runs = find_runs(outputs) if outputs.is_dir() else []
    if not runs:
        raise LabError(f"{outputs}: no run folders (a run folder holds a summary.json); run `labkit run` first")
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != outputs.resolve():
        for folder in [run.folder for run in runs] + [outputs / ASSETS] * (outputs / ASSETS).is_dir():
            shutil.copytree(folder, out / folder.name, dirs_exist_ok=True)
    shared_plotly(out)  # the site's own charts need it even when no run rendered HTML
    previous = _previous_of_same_lab(runs)
    _page(out / "index.html", out, "Runs", _index_body(runs, previous))
    for run in runs:
        _page(out / run.name / "index.html", out, f"Run {run.name}", _run_body(run, previous.get(run.name)))
    for name in sorted({nb["name"] for run in runs for nb in run.summary["notebooks"]}):
        _page(out / "history" / f"{name}.html", out, f"History of {name}", _history_body(name, runs))
    for run in runs:
        if run.name in previous:
            before = previous[run.name]
            _page(out / "drift" / f"{before.name}..{run.name}.html", out, f"Drift {before.name} → {run.name}",
                  _drift_body(before, run))
    return out / "index.html"


def _previous_of_same_lab(runs: list[Run]) -> dict[str, Run]:
    last: dict[str, Run] = {}
    previous = {}
    for run in runs:
        if run.info["lab"] in last:
            previous[run.name] = last[run.info["lab"]]
        last[run.info["lab"]] = run
    return previous


def _page(path: Path, root: Path, title: str, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    up = "../" * len(path.parent.relative_to(root).parts)
    path.write_text(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{STYLE}</style>
{plotly_script(path, root)}
</head><body>
<nav><a href="{up}index.html">All runs</a></nav>
<h1>{escape(title)}</h1>
{body}
</body></html>
""")


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """An HTML table of already-escaped cells; ``numeric`` columns align right."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                   for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _status(status: str) -> str:
    return f'<span class="{escape(status)}">{escape(status)}</span>'


def _index_body(runs: list[Run], previous: dict[str, Run]) -> str:
    rows = []
    for run in reversed(runs):  # newest first
        info, nbs = run.info, run.summary["notebooks"]
        before = previous.get(run.name)
        rows.append([
            f'<a href="{escape(run.name)}/index.html">{escape(run.name)}</a>', escape(info["lab"]),
            escape(info["started"][:19].replace("T", " ")) + " UTC", f"<code>{escape(info.get('git_commit') or '?')}</code>",
            _status(info["status"]) + (" (dry run)" if info.get("dry_run") else ""), f"{info['duration_s']:.1f} s",
            str(sum(n["checks_passed"] for n in nbs)), str(sum(n["checks_failed"] for n in nbs)), str(info["changes"]),
            f'<a href="drift/{escape(before.name)}..{escape(run.name)}.html">vs previous</a>' if before else "",
        ])
    table = _table(["run", "lab", "started", "git commit", "status", "duration", "checks passed", "checks failed",
                    "changes", "drift"], rows, numeric={5, 6, 7, 8})
    names = sorted({nb["name"] for run in runs for nb in run.summary["notebooks"]})
    history = "".join(f'<li><a href="history/{escape(n)}.html">{escape(n)}</a></li>' for n in names)
    return f"<p>{len(runs)} run(s), newest first.</p>{table}<h2>Notebooks across runs</h2><ul>{history}</ul>"


def _run_body(run: Run, before: Run | None) -> str:
    info = run.info
    rows = []
    for nb in run.summary["notebooks"]:
        html = nb.get("output") and (run.folder / nb["output"]).with_suffix(".html")
        link = f'<a href="{escape(html.name)}">{escape(nb["name"])}</a>' if html and html.exists() else escape(nb["name"])
        rows.append([link, _status(nb["status"]), f"{nb['duration_s']:.1f} s", str(nb["checks_passed"]),
                     str(nb["checks_failed"]), str(nb["changes"]), str(nb["secrets_scrubbed"]),
                     f'<a href="../history/{escape(nb["name"])}.html">history</a>'])
    facts = (f"<p>Lab <b>{escape(info['lab'])}</b>, {_status(info['status'])}"
             f"{' (dry run)' if info.get('dry_run') else ''}, started {escape(info['started'])}, took "
             f"{info['duration_s']:.1f} s; git <code>{escape(info.get('git_commit') or '?')}</code>, labkit "
             f"{escape(info.get('labkit_version', '?'))}, parameters {escape(Path(info['params_file']).name)}.</p>")
    errors = "".join(f"<p class=\"failed\"><b>{escape(nb['name'])} failed</b>: {escape(nb['error'])}</p>"
                     for nb in run.summary["notebooks"] if nb.get("error"))
    drift_link = (f'<p><a href="../drift/{escape(before.name)}..{escape(run.name)}.html">What changed since '
                  f"{escape(before.name)}</a></p>" if before else "<p>First run of this lab.</p>")
    table = _table(["notebook", "status", "duration", "checks passed", "checks failed", "changes",
                    "secrets scrubbed", ""], rows, numeric={2, 3, 4, 5, 6})
    files = '<p>Files: <a href="summary.md">summary.md</a>, <a href="summary.json">summary.json</a>.</p>'
    return facts + errors + table + drift_link + _inventory_html(run.inventory) + files


def _inventory_html(inventory: dict) -> str:
    if not inventory:
        return "<p>No inventory recorded.</p>"
    parts = ["<h2>Inventory at the end of the run</h2>"]
    for section, items in sorted(inventory.items()):
        fields = sorted({f for facts in items.values() for f in facts})
        rows = [[escape(item)] + [escape(str(facts.get(f, ""))) for f in fields] for item, facts in sorted(items.items())]
        parts.append(f"<h3>{escape(section)}</h3>" + _table(["name", *map(escape, fields)], rows))
    return "".join(parts)


def _history_body(name: str, runs: list[Run]) -> str:
    points = [(run, nb) for run in runs for nb in run.summary["notebooks"] if nb["name"] == name]
    x = [run.info["started"] for run, _ in points]
    text = [run.name for run, _ in points]

    def chart(div: str, title: str, series: dict[str, list], kind: str = "scatter") -> str:
        data = [{"type": kind, "name": label, "x": x, "y": ys, "hovertext": text}
                | ({"mode": "lines+markers"} if kind == "scatter" else {}) for label, ys in series.items()]
        layout = {"title": {"text": title}, "height": 320, "xaxis": {"title": {"text": "run started (UTC)"}},
                  "barmode": "group"}
        return figure_html({"data": data, "layout": layout}, div)

    rows = [[f'<a href="../{escape(run.name)}/index.html">{escape(run.name)}</a>', _status(nb["status"]),
             f"{nb['duration_s']:.1f} s", str(nb["checks_passed"]), str(nb["checks_failed"]), str(nb["changes"])]
            for run, nb in reversed(points)]
    return (chart("duration", "Duration (s)", {"duration": [nb["duration_s"] for _, nb in points]})
            + chart("checks", "Checks", {"passed": [nb["checks_passed"] for _, nb in points],
                                         "failed": [nb["checks_failed"] for _, nb in points]}, "bar")
            + chart("changes", "Changes made", {"changes": [nb["changes"] for _, nb in points]}, "bar")
            + _table(["run", "status", "duration", "checks passed", "checks failed", "changes"], rows,
                     numeric={2, 3, 4, 5}))


def _drift_body(before: Run, after: Run) -> str:
    changes = drift(before.inventory, after.inventory)
    links = (f'<p>From <a href="../{escape(before.name)}/index.html">{escape(before.name)}</a> to '
             f'<a href="../{escape(after.name)}/index.html">{escape(after.name)}</a> (lab {escape(after.info["lab"])}).</p>')
    if not changes:
        return links + "<p>No drift: the lab's inventory is the same in both runs.</p>"
    rows = []
    for d in changes:
        what = ("; ".join(f"{escape(f)}: {escape(repr(a))} → {escape(repr(b))}" for f, a, b in d.fields)
                if d.kind == "changed" else "")
        rows.append([escape(d.section), escape(d.item), f'<span class="{d.kind}">{d.kind}</span>', what])
    return links + f"<p>{len(changes)} item(s) changed.</p>" + _table(["section", "item", "change", "fields"], rows)

