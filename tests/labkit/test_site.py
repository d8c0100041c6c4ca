"""`labkit site` and `labkit diff` on run folders made here: two runs of the same lab, with a known
change between them (a VM's memory, a pinned version), rendered and read back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
import yaml

from labkit.site import Drift, drift
from tests.labkit.conftest import (
    CLOUDFLARE_TOKEN,
    GRAFANA_PASSWORD,
    HOMELAB,
    K3S_TOKEN,
    NTFY_TOKEN,
    PVE_TOKEN,
    _local_files,
)

PARAMS = 'lab_file = ""\ndry_run = False\nmemory = 2048\nversion = "v1"'
VMS = '''import labkit, pandas as pd
from labkit import plots
from labkit.changes import Change
from labkit.report import Report
r = Report("01-vms")
r.check("memory planned", memory > 0)
vms = pd.DataFrame({"name": ["k3s-master", "k3s-worker-01"], "memory_mib": [memory, 2048], "status": "running"})
r.inventory("vms", vms)
r.applied([Change("vm 120", "create")] if memory == 2048 else [Change("vm 120", "resize", f"memory {memory}")])
vms'''
FIGURE = "plots.capacity(pd.DataFrame({'resource': ['cpu', 'mem'], 'requested': [6, 12], 'available': [16, 64]}), 'Capacity')"
VERSION = '''import labkit
from labkit.report import Report
r = Report("02-k3s")
r.check("version pinned", bool(version))
labkit.record(r, k3s_version=version, dry_run=dry_run)'''


def _notebook(path: Path, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "homelab-notebooks", "display_name": "homelab-notebooks", "language": "python"}
    params = nbformat.v4.new_code_cell(PARAMS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two passing runs of lab 'homelab': the second with VM memory 4096 and k3s version v2."""
    base = tmp_path_factory.mktemp("site")
    ca, key = _local_files()
    (base / "pve-ca.pem").write_bytes(ca)
    (base / "id.pub").write_text(key.export_public_key().decode().strip() + " operator\n")
    (base / "id").write_bytes(key.export_private_key())
    doc = yaml.safe_load(HOMELAB.read_text())
    for chart in doc["charts"].values():  # the repository's values files
        chart["values"] = str(HOMELAB.parent / chart["values"])
    doc["observability"]["rules"] = str(HOMELAB.parent / doc["observability"]["rules"])
    doc["observability"]["rule_tests"] = str(HOMELAB.parent.parent / "tests" / "alerts")
    for chart in doc["observability"]["charts"].values():
        chart["values"] = str(HOMELAB.parent / chart["values"])
    doc["proxmox"]["ca_file"] = "pve-ca.pem"
    doc["ssh"].update(public_key="id.pub", private_key="file:id", known_hosts="known_hosts")
    (base / "lab.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    books = base / "notebooks"
    books.mkdir()
    _notebook(books / "01-vms.ipynb", VMS, FIGURE, "pd.DataFrame({'n': range(40)})", "labkit.record(r, vms=len(vms))")
    _notebook(books / "02-k3s.ipynb", VERSION)
    env = {**os.environ, "LABKIT_PVE_TOKEN": PVE_TOKEN, "LABKIT_K3S_TOKEN": K3S_TOKEN,
           "LABKIT_CLOUDFLARE_TOKEN": CLOUDFLARE_TOKEN, "LABKIT_GRAFANA_PASSWORD": GRAFANA_PASSWORD,
           "LABKIT_NTFY_TOKEN": NTFY_TOKEN, "LABKIT_N8N_API_KEY": "n8n_api_" + "0" * 32}
    folders = []
    for extra in ([], ["-p", "memory", "4096", "-p", "version", "v2"]):
        argv = [sys.executable, "-m", "labkit.cli", "run", "--params", str(base / "lab.yaml"), "--notebooks",
                str(books), "--outputs", str(base / "outputs"), *extra]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        folders.append((base / "outputs" / "latest").resolve())
    return {"outputs": base / "outputs", "first": folders[0], "second": folders[1], "base": base}


def labkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def site(runs: dict) -> Path:
    out = runs["base"] / "site"
    done = labkit("site", "--outputs", str(runs["outputs"]), "--out", str(out))
    assert done.returncode == 0 and f"site written: {(out / 'index.html').as_uri()}" in done.stdout, done.stderr
    return out


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.found += [v for k, v in attrs if k in ("href", "src") and v]


def links(page: Path) -> list[str]:
    parser = Links()
    parser.feed(page.read_text())
    return parser.found


def test_summary_records_the_inventory_per_notebook_and_for_the_run(runs):
    import json

    first = json.loads((runs["first"] / "summary.json").read_text())
    assert first["notebooks"][0]["inventory"]["vms"]["k3s-master"] == {"memory_mib": 2048, "status": "running"}
    # 02 inventories nothing yet: what it passed to record() stands for it (dry_run left out).
    assert first["notebooks"][1]["inventory"] == {"02-k3s": {"recorded": {"k3s_version": "v1"}}}
    assert set(first["inventory"]) == {"vms", "02-k3s"}


def test_rendered_tables_have_no_row_numbers_and_long_ones_collapse(runs):
    page = (runs["first"] / "01-vms.html").read_text()
    assert ">memory_mib</th>" in page and ">k3s-master</td>" in page
    assert ">0</th>" not in page  # the vms table's 0..n index is not shown
    assert "<details><summary>40 rows (" in page


def test_drift_names_added_removed_and_changed_items():
    before = {"vms": {"a": {"mem": 1, "tags": "x"}, "b": {"mem": 1}}, "charts": {"traefik": {"version": "1"}}}
    after = {"vms": {"a": {"mem": 2, "tags": "x"}, "c": {"mem": 1}}, "charts": {"traefik": {"version": "1"}}}
    assert drift(before, after) == [Drift("vms", "a", "changed", (("mem", 1, 2),)), Drift("vms", "b", "removed"),
                                    Drift("vms", "c", "added")]
    assert drift(after, after) == []


def test_diff_prints_what_changed_between_two_runs(runs):
    done = labkit("diff", str(runs["first"]), str(runs["second"]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{runs['first'].name} → {runs['second'].name}: 2 item(s) changed",
        "  02-k3s recorded: k3s_version 'v1' → 'v2'",
        "  vms k3s-master: memory_mib 2048 → 4096"]
    same = labkit("diff", str(runs["second"]), str(runs["second"]))
    assert same.stdout.endswith("no drift: the lab is the same\n")
    bad = labkit("diff", str(runs["base"]), str(runs["second"]))
    assert bad.returncode == 1 and "not a run folder (no summary.json)" in bad.stderr


def test_site_indexes_runs_with_history_and_drift(runs, site):
    first, second = runs["first"].name, runs["second"].name
    index = (site / "index.html").read_text()
    assert index.index(second) < index.index(first)  # newest first
    row = re.search(rf"<tr><td><a href=\"{second}/index.html\">.*?</tr>", index).group(0)
    assert ">homelab<" in row and ">passed<" in row and f'href="drift/{first}..{second}.html"' in row
    run_page = (site / second / "index.html").read_text()
    assert 'href="01-vms.html"' in run_page and "k3s-master" in run_page and "4096" in run_page
    history = (site / "history" / "01-vms.html").read_text()
    assert history.count("Plotly.newPlot(") == 3 and '<script src="../_assets/plotly.min.js">' in history
    drift_page = (site / "drift" / f"{first}..{second}.html").read_text()
    assert "memory_mib: 2048 → 4096" in drift_page and "k3s_version: &#x27;v1&#x27; → &#x27;v2&#x27;" in drift_page
    # Every link of every page resolves to a file of the site (file:// has no folder indexes).
    pages = list(site.rglob("*.html"))
    assert len(pages) == 1 + 2 + 2 * 2 + 2 + 1  # index, run pages, notebooks, histories, drift
    for page in pages:
        for link in links(page):
            path = unquote(urlsplit(link).path)
            target = (page.parent / path).resolve() if path else page.resolve()  # "#anchor": the page itself
            assert not urlsplit(link).scheme and target.is_file() and site.resolve() in target.parents, (page, link)


def test_site_can_be_written_into_the_outputs_folder_itself(runs):
    done = labkit("site", "--outputs", str(runs["outputs"]))
    assert done.returncode == 0, done.stderr
    assert (runs["outputs"] / "index.html").is_file() and (runs["second"] / "index.html").is_file()
    empty = labkit("site", "--outputs", str(runs["base"] / "notebooks"))
    assert empty.returncode == 1 and "no run folders" in empty.stderr


def test_site_in_headless_chromium(runs, site, chromium, tmp_path):
    """Every page of the site, opened from file:// in a real browser: links resolve, figures draw."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    first, second = runs["first"].name, runs["second"].name
    todo, seen = [(site / "index.html").resolve().as_uri()], set()
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        chromium.get(url)
        figures = len(chromium.find_elements(By.CSS_SELECTOR, ".labkit-figure"))
        WebDriverWait(chromium, 20).until(
            lambda b, n=figures: len(b.find_elements(By.CSS_SELECTOR, ".labkit-figure svg.main-svg")) >= n)
        errors = [e for e in chromium.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, (url, errors)
        for a in chromium.find_elements(By.CSS_SELECTOR, "a[href]"):
            href = urlsplit(a.get_attribute("href"))
            assert href.scheme == "file" and Path(unquote(href.path)).is_file(), (url, a.get_attribute("href"))
            if href.path.endswith(".html"):
                todo.append(href._replace(fragment="").geturl())
        if url.endswith("/index.html") and Path(unquote(urlsplit(url).path)).parent == site.resolve():
            rows = chromium.find_elements(By.CSS_SELECTOR, "tbody tr")
            assert [r.text.split()[0] for r in rows] == [second, first]  # the index lists the runs
            chromium.save_screenshot(str(tmp_path / "index.png"))
        if url.endswith(f"{second}/01-vms.html"):
            assert figures == 1
            chromium.save_screenshot(str(tmp_path / "notebook.png"))
        if url.endswith(f"drift/{first}..{second}.html"):
            assert "memory_mib: 2048 → 4096" in chromium.find_element(By.TAG_NAME, "body").text
            chromium.save_screenshot(str(tmp_path / "drift.png"))
        if "/history/" in url:
            assert figures == 3
            chromium.save_screenshot(str(tmp_path / f"history-{Path(url).stem}.png"))
    assert len(seen) == 10 and (tmp_path / "index.png").is_file() and (tmp_path / "notebook.png").is_file()
