"""Executed notebooks rendered as HTML, their figures drawn by one shared ``plotly.min.js``.

plotly.js (~4.6 MB) and nbconvert's stylesheet (~300 kB per page) live once in ``outputs/_assets/``
and every page refers to them by relative paths, so a run folder holds only notebooks, their HTML
and the summary, and its pages keep working wherever the run folder is copied along with ``_assets/``.
"""

from __future__ import annotations

import filecmp
import hashlib
import re
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from pathlib import Path

from labkit.nbimport import nbformat

ASSETS = "_assets"
PLOTLY_JS = "plotly.min.js"
# nbconvert's lab template, less what it fetches from CDNs (require.js, MathJax, mermaid): the pages
# work offline, and a figure needs none of them.
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
STYLE = re.compile(r"<style[^>]*>(.*?)</style>\s*", re.DOTALL)


def shared_plotly(outputs: Path) -> Path:
    """``outputs/_assets/plotly.min.js``, copied from the installed plotly when missing or different."""
    source = Path(__import__("plotly").__file__).parent / "package_data" / PLOTLY_JS
    target = outputs / ASSETS / PLOTLY_JS
    if not (target.exists() and filecmp.cmp(source, target, shallow=False)):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)  # atomic: a page never loads half a file
    return target


def _assets_url(page: Path, outputs: Path) -> str:
    return "../" * len(page.parent.relative_to(outputs).parts) + ASSETS


def plotly_script(page: Path, outputs: Path) -> str:
    """The ``<script>`` tag loading the shared plotly.js, relative to ``page`` (a file under ``outputs``)."""
    return f'<script src="{_assets_url(page, outputs)}/{PLOTLY_JS}"></script>'


def render_html(folder: Path) -> None:
    """HTML of each executed notebook in a run folder (``outputs/<run>/``)."""
    for nb_path in sorted(folder.glob("*.ipynb")):
        render_notebook(nb_path)


def render_notebook(nb_path: Path) -> Path:
    """``outputs/<run>/NN-name.html`` from the executed (scrubbed) notebook beside it."""
    from labkit.plots import PLOTLY_MIME, figure_html

    outputs = nb_path.parent.parent
    shared_plotly(outputs)
    nb = nbformat.read(nb_path, as_version=4)
    for n, output in enumerate(o for c in nb.cells for o in c.get("outputs", [])):
        if PLOTLY_MIME in output.get("data", {}):
            output["data"]["text/html"] = figure_html(output["data"][PLOTLY_MIME], f"figure-{n}")
    body, _ = _exporter().from_notebook_node(nb)
    page = nb_path.with_suffix(".html")
    body = _shared_css(body, page, outputs)
    page.write_text(body.replace("</head>", plotly_script(page, outputs) + "\n</head>", 1))
    return page


@cache
def _exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(extra_loaders=[DictLoader({"offline.html.j2": OFFLINE_TEMPLATE})],
                        template_file="offline.html.j2")


class RenderWorker:
    """Renders each notebook in a thread of its own as soon as the runner has written it, while
    the next notebook runs; ``wait`` returns once every page is written (a failure is raised
    there). It reads only what the runner wrote, so the pages are those ``render_html`` makes."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labkit-render")
        self._pages: list[Future[Path]] = []

    def submit(self, nb_path: Path) -> None:
        self._pages.append(self._pool.submit(render_notebook, nb_path.resolve()))  # papermill may chdir

    def wait(self) -> None:
        try:
            for page in self._pages:
                page.result()
        finally:
            self._pool.shutdown(cancel_futures=True)


def _shared_css(body: str, page: Path, outputs: Path) -> str:
    """Move the page head's stylesheets into ``_assets/notebook-<hash>.css`` (the same for every
    notebook rendered by one nbconvert) and link it instead."""
    head, rest = body.split("</head>", 1)
    css = "\n".join(STYLE.findall(head))
    name = f"notebook-{hashlib.sha256(css.encode()).hexdigest()[:12]}.css"
    target = outputs / ASSETS / name
    if not target.exists():
        target.with_suffix(".tmp").write_text(css)
        target.with_suffix(".tmp").replace(target)
    link = f'<link rel="stylesheet" href="{_assets_url(page, outputs)}/{name}">\n'
    head = STYLE.sub("", head)
    return head + link + "</head>" + rest
