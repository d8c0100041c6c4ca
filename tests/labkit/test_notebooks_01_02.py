"""Notebooks 01 and 02 end to end: ``labkit run`` on an embedded lab of their own (labsim as a
separate process, as ``make lab`` runs it), real kubectl on the result, a converged re-run that
changes nothing (counted from PVE and Kubernetes, not from the notebooks' claims), dry runs,
bad parameters, and the committed notebooks' form."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from labkit import kube, proxmox
from labkit.params import load_lab
from tests.labfiles import REPO, write_lab
from tests.labkit.embedded import embedded_lab

NOTEBOOKS = REPO / "notebooks"
SERIES = ["01-provision-vms.ipynb", "02-bootstrap-k3s.ipynb"]
LABKIT = [sys.executable, "-m", "labkit"]
KUBECTL = shutil.which("kubectl", path=f"{REPO / '.tools' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")


def labkit_run(lab_file: Path, outputs: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([*LABKIT, "run", "--params", str(lab_file), "--only", "01", "02", "--no-html",
                           "--outputs", str(outputs), *extra], capture_output=True, text=True, timeout=600)
    summaries = sorted(outputs.glob("*/summary.json"))
    return done, json.loads(summaries[-1].read_text()) if summaries else {}


def labsim(lab_file: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "labsim", args[0], "--params", str(lab_file), *args[1:]],
                   capture_output=True, timeout=120)


def test_committed_notebooks_are_output_free_with_a_parameters_cell():
    for name in SERIES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert nb.metadata.kernelspec.name == "homelab-notebooks"
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "lab_file" in tagged[0].source and "dry_run" in tagged[0].source


def test_labkit_run_builds_the_cluster_and_a_rerun_changes_nothing(tmp_path):
    lab_file = write_lab(tmp_path)
    outputs = tmp_path / "outputs"
    try:
        first, summary = labkit_run(lab_file, outputs, "--keep-lab")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert [n["status"] for n in summary["notebooks"]] == ["passed", "passed"]
        assert all(n["checks_failed"] == 0 and n["checks_passed"] > 0 for n in summary["notebooks"])
        assert summary["notebooks"][0]["changes"] == 3 and summary["notebooks"][1]["changes"] == 3

        lab = load_lab(lab_file)
        assert lab.kubeconfig.stat().st_mode & 0o777 == 0o600
        if KUBECTL:
            nodes = subprocess.run([KUBECTL, "--kubeconfig", str(lab.kubeconfig), "get", "nodes", "-o", "json"],
                                   capture_output=True, text=True, timeout=60, check=True)
            items = json.loads(nodes.stdout)["items"]
            assert sorted(i["metadata"]["name"] for i in items) == sorted(n.name for n in lab.nodes)
            assert {i["status"]["nodeInfo"]["kubeletVersion"] for i in items} == {lab.k3s.version}

        api = proxmox.connect(lab)
        tasks_before = proxmox.task_ids(api, lab)
        kube_api = kube.connect(lab.kubeconfig)
        nodes_before = {n.metadata.uid for n in kube.client.CoreV1Api(kube_api).list_node().items}

        second, summary = labkit_run(lab_file, outputs, "--keep-lab")
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert [(n["changes"], n["planned"]) for n in summary["notebooks"]] == [(0, 0), (0, 0)]
        assert proxmox.task_ids(api, lab) == tasks_before
        assert {n.metadata.uid for n in kube.client.CoreV1Api(kube_api).list_node().items} == nodes_before

        executed = outputs / "latest"
        for name in SERIES:
            text = (executed / name).read_text()
            for secret in (lab.secret(lab.proxmox.token_secret), lab.secret(lab.k3s.token)):
                assert secret not in text
    finally:
        labsim(lab_file, "down")


def test_labkit_run_dry_run_on_a_fresh_lab_shows_plans_and_changes_nothing(tmp_path):
    lab_file = write_lab(tmp_path)
    try:
        done, summary = labkit_run(lab_file, tmp_path / "outputs", "--dry-run", "--keep-lab")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert [(n["status"], n["changes"]) for n in summary["notebooks"]] == [("passed", 0), ("passed", 0)]
        assert [n["planned"] for n in summary["notebooks"]] == [3, 3]
        status = subprocess.run([sys.executable, "-m", "labsim", "status", "--params", str(lab_file), "--json"],
                                capture_output=True, text=True, timeout=60, check=True)
        assert [vm["vmid"] for vm in json.loads(status.stdout)["vms"]] == [9000]  # the template only
    finally:
        labsim(lab_file, "down")


def run_notebook(name: str, lab_file: Path, out: Path, **params) -> nbformat.NotebookNode:
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out / name), cwd=str(NOTEBOOKS), kernel_name="homelab-notebooks",
                               parameters={"lab_file": str(lab_file), **params}, progress_bar=False)
    return nbformat.read(out / name, as_version=4)


def test_dry_run_shows_the_plan_and_creates_nothing(tmp_path):
    with embedded_lab(tmp_path) as sim:
        nb = run_notebook(SERIES[0], sim.path, tmp_path, dry_run=True)
        text = json.dumps(nb)
        assert "create" in text and "dry run: nothing applied" in text
        assert [vm["vmid"] for vm in sim.handle.status()["vms"]] == [sim.lab.proxmox.template_vmid]


def test_bad_parameters_stop_before_any_change(tmp_path):
    with embedded_lab(tmp_path) as sim:
        doc = yaml.safe_load(sim.path.read_text())
        doc["nodes"][1]["ip"] = "192.168.2.300"
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(doc))
        with pytest.raises(papermill.PapermillExecutionError, match=r"nodes\[1\]\.ip: '192.168.2.300' is not an IPv4"):
            run_notebook(SERIES[0], bad, tmp_path)
        assert [vm["vmid"] for vm in sim.handle.status()["vms"]] == [sim.lab.proxmox.template_vmid]


def test_committed_notebooks_are_what_build_py_writes():
    """The notebooks are generated from notebooks/build.py: an edit to one side only is caught here."""
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for name in build.SERIES:
        assert (NOTEBOOKS / name).read_text() == build.build(name), f"{name}: run python notebooks/build.py"
