"""Notebooks 01 and 02 end to end: ``labkit run`` on an embedded lab of their own (labsim as a
separate process, as ``make lab`` runs it), real kubectl on the result, a converged re-run that
changes nothing (counted from PVE and Kubernetes, not from the notebooks' claims), dry runs,
bad parameters, and the committed notebooks' form."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest
import yaml

from labkit import kube, proxmox
from labkit.kernels import own_kernel
from labkit.params import load_lab
from tests.labfiles import REPO, minimal_lab, sim_config, state_dir, write_lab
from tests.labkit.embedded import embedded_lab
from tests.labkit.series import LABKIT, labsim

NOTEBOOKS = REPO / "notebooks"
SERIES = ["01-provision-vms.ipynb", "02-bootstrap-k3s.ipynb"]
KUBECTL = shutil.which("kubectl", path=f"{REPO / '.tools' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")


def labkit_run(lab_file: Path, outputs: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([*LABKIT, "run", "--params", str(lab_file), "--only", "01", "02", "--no-html",
                           "--outputs", str(outputs), *extra], capture_output=True, text=True, timeout=600)
    summaries = sorted(outputs.glob("*/summary.json"))
    return done, json.loads(summaries[-1].read_text()) if summaries else {}


def test_committed_notebooks_are_output_free_with_a_parameters_cell():
    for name in SERIES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert nb.metadata.kernelspec.name == "homelab-notebooks"
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "lab_file" in tagged[0].source and "dry_run" in tagged[0].source


def test_labkit_run_builds_the_cluster_and_a_rerun_changes_nothing(tmp_path):
    """On a lab file that leaves out every optional key: labkit's defaults are the only ones."""
    lab_file = write_lab(tmp_path, minimal_lab(tmp_path))
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
        # The summaries' inventories: the lab as the run left it, the same after a converged re-run.
        assert set(summary["inventory"]["vms"]) == {n.name for n in lab.nodes}
        assert {n["version"] for n in summary["inventory"]["nodes"].values()} == {lab.k3s.version}
        runs = sorted(p.parent for p in outputs.glob("*/summary.json") if not p.parent.is_symlink())
        diff = subprocess.run([*LABKIT, "diff", *map(str, runs)], capture_output=True, text=True, timeout=60)
        assert diff.stdout.endswith("no drift: the lab is the same\n"), diff.stdout + diff.stderr
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
        status = subprocess.run([sys.executable, "-m", "labsim", "status", "--state", str(state_dir(lab_file)), "--json"],
                                capture_output=True, text=True, timeout=60, check=True)
        assert [vm["vmid"] for vm in json.loads(status.stdout)["vms"]] == [9000]  # the template only
    finally:
        labsim(lab_file, "down")


def run_notebook(name: str, lab_file: Path, out: Path, **params) -> nbformat.NotebookNode:
    with own_kernel(out):  # this checkout's labkit, whatever kernel spec the user folder holds
        papermill.execute_notebook(str(NOTEBOOKS / name), str(out / name), cwd=str(NOTEBOOKS),
                                   kernel_name="homelab-notebooks", parameters={"lab_file": str(lab_file), **params},
                                   progress_bar=False)
    return nbformat.read(out / name, as_version=4)


def test_dry_run_shows_the_plan_and_creates_nothing(tmp_path):
    with embedded_lab(tmp_path) as sim:
        nb = run_notebook(SERIES[0], sim.path, tmp_path, dry_run=True)
        text = json.dumps(nb)
        assert "create" in text and "not done: dry run" in text
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


def test_committed_notebooks_agree_with_their_jupytext_sources():
    """Each notebook is written from its jupytext source (make notebooks): an edit to one side only is caught."""
    sources = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.py"))
    assert [p.with_suffix(".ipynb").name for p in sources] == sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    for source in sources:
        want, have = jupytext.read(source), nbformat.read(source.with_suffix(".ipynb"), as_version=4)
        shape = [lambda nb: [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells],
                 lambda nb: nb.metadata.kernelspec]
        assert [f(have) for f in shape] == [f(want) for f in shape], f"{source.name}: run make notebooks"


def test_a_failed_01_counts_what_it_changed_and_a_plain_rerun_finishes_it(tmp_path):
    """PVE fails the master's resize: 01 fails, its summary counts the clone it made; the next plain run
    (no reconcile) resumes that VM, creates the others and passes."""
    import requests

    lab_file = write_lab(tmp_path)
    outputs = tmp_path / "outputs"
    run_01 = [*LABKIT, "run", "--params", str(lab_file), "--only", "01", "--no-html", "--outputs", str(outputs)]
    sim_config(lab_file)  # labsim's config.json, as labkit writes it
    labsim(lab_file, "up", "--detach")
    try:
        lab = load_lab(lab_file)
        pve = lab.proxmox
        answer = requests.post(f"https://{pve.host}:{pve.port}/labsim/faults", verify=str(pve.ca_file), timeout=30,
                               json={"fault": "fail_next_task", "kind": "resize"},
                               headers={"Authorization": f"PVEAPIToken={pve.token_id}={lab.secret(pve.token_secret)}"})
        assert answer.status_code == 200, answer.text
        failed = subprocess.run(run_01, capture_output=True, text=True, timeout=600)
        assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
        (first,) = json.loads((outputs / "latest" / "summary.json").read_text())["notebooks"]
        assert first["status"] == "failed" and "resize scsi0 of k3s-master" in first["error"]
        assert first["changes"] == 1  # the master was cloned before the failure
        assert "applied: create k3s-master (120)" in (outputs / "latest" / SERIES[0]).read_text()

        again = subprocess.run(run_01, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        (second,) = json.loads((outputs / "latest" / "summary.json").read_text())["notebooks"]
        assert second["changes"] == 3 and second["checks_failed"] == 0  # resumed master, two new workers
        executed = (outputs / "latest" / SERIES[0]).read_text()
        assert "applied: resume k3s-master (120)" in executed
    finally:
        labsim(lab_file, "down")
