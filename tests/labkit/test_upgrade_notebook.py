"""Notebook 08 end to end, as the issue's documented command does it: ``labkit run --only 01 02`` on a
lab file pinned one minor lower, the pin raised, ``labkit run --only 08`` (a real rolling upgrade,
its executed notebook holding versions, availability figures and the phase timeline), then 08
again: every node already at the pin, nothing changed; then 08 with ``os_patch``: each node patched
and rebooted in turn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

from labkit import kube
from labkit.params import load_lab
from labkit.plots import PLOTLY_MIME
from tests.labfiles import REPO, state_dir, write_lab

LABKIT = [sys.executable, "-m", "labkit"]
BEFORE, TARGET = "v1.33.6+k3s1", "v1.34.3+k3s1"


def run(lab_file: Path, outputs: Path, *only: str) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([*LABKIT, "run", "--params", str(lab_file), "--only", *only, "--no-html", "--keep-lab",
                           "--outputs", str(outputs)], capture_output=True, text=True, timeout=900)
    summaries = sorted(p for p in outputs.glob("*/summary.json") if not p.parent.is_symlink())
    return done, json.loads(summaries[-1].read_text()) if summaries else {}


def test_committed_notebook_08_has_its_parameters():
    nb = nbformat.read(REPO / "notebooks" / "08-upgrade-k3s.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("lab_file", "dry_run", "max_unavailable", "drain_timeout_s", "availability_probe", "snapshot_first",
                 "allow_minor_skip", "rollback_on_failure", "os_patch", "remove", "confirm", "rejoin"):
        assert f"\n{name} = " in "\n" + tagged[0].source


def test_08_upgrades_a_lab_pinned_one_minor_lower_and_a_rerun_changes_nothing(tmp_path):
    lab_file = write_lab(tmp_path, time_scale=0.005)
    doc = yaml.safe_load(lab_file.read_text())
    doc["k3s"]["version"] = BEFORE
    lab_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    outputs = tmp_path / "outputs"
    try:
        planned, summary = run(lab_file, outputs, "01", "02", "08", "--dry-run")  # a fresh lab: no cluster to read
        assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
        assert [(n["status"], n["changes"]) for n in summary["notebooks"]] == [("passed", 0)] * 3
        built, _ = run(lab_file, outputs, "01", "02")
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        doc["k3s"]["version"] = TARGET
        lab_file.write_text(yaml.safe_dump(doc, sort_keys=False))

        upgraded, summary = run(lab_file, outputs, "08")
        assert upgraded.returncode == 0, upgraded.stdout[-3000:] + upgraded.stderr[-3000:]
        lab = load_lab(lab_file)
        names = [n.name for n in lab.nodes]
        (nb_summary,) = summary["notebooks"]
        assert nb_summary["status"] == "passed" and nb_summary["changes"] == 3 and nb_summary["checks_failed"] == 0
        assert {n["version"] for n in summary["inventory"]["nodes"].values()} == {TARGET}
        executed = nbformat.read(outputs / "latest" / "08-upgrade-k3s.ipynb", as_version=4)
        extra = next(o["data"]["application/vnd.labkit.record+json"]["extra"] for c in executed.cells
                     for o in c.get("outputs", []) if "application/vnd.labkit.record+json" in o.get("data", {}))
        assert extra["upgraded"] == names and extra["installed"] == dict.fromkeys(names, TARGET)
        assert extra["snapshot"].startswith("pre-upgrade-v1-34-3-k3s1-") and extra["probe_requests"] > 10
        assert 0 <= extra["availability_pct"] <= 100
        text = json.dumps(executed)
        assert f"{BEFORE}" in text and "availability_pct" in text and "longest_outage_s" in text
        assert any(PLOTLY_MIME in o.get("data", {}) and "node phases" in json.dumps(o["data"][PLOTLY_MIME])
                   for c in executed.cells for o in c.get("outputs", []))
        api = kube.connect(lab.kubeconfig)
        assert "availability-probe" not in {n.metadata.name for n in kube.client.CoreV1Api(api).list_namespace().items}

        again, summary = run(lab_file, outputs, "08")
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert [(n["status"], n["changes"], n["planned"]) for n in summary["notebooks"]] == [("passed", 0, 0)]
        rerun = json.dumps(nbformat.read(outputs / "latest" / "08-upgrade-k3s.ipynb", as_version=4))
        assert f"every node already runs k3s {TARGET}: nothing to upgrade" in rerun

        patched, summary = run(lab_file, outputs, "08", "-p", "os_patch", "true")  # maintenance: OS updates
        assert patched.returncode == 0, patched.stdout[-3000:] + patched.stderr[-3000:]
        (nb_summary,) = summary["notebooks"]
        assert nb_summary["status"] == "passed" and nb_summary["changes"] == 3
        assert {n["version"] for n in summary["inventory"]["nodes"].values()} == {TARGET}
    finally:
        subprocess.run([sys.executable, "-m", "labsim", "down", "--state", str(state_dir(lab_file))],
                       capture_output=True, timeout=120)
