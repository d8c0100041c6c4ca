"""Backups and restore drills: PostgreSQL dumps and k3s' etcd snapshots.

Each drill is destructive only to what it creates itself (a table, a namespace), measures its
recovery point (what was written after the backup and is lost) and recovery time (from the loss
to the data verified back), and compares both with the lab file's ``backup`` targets.

- PostgreSQL: 05 applies a CronJob (``postgresql-backup``) whose pod runs the real ``pg_dump -Fc``
  against the database's Service onto the backup volume (``backup.pg_dump.pvc``), one dump per run
  named ``<database>-<UTC time>.dump``, pruned to ``backup.pg_dump.retention``. The drill takes
  its dump on demand as a Job made from the CronJob (``kubectl create job --from=cronjob/...``)
  and restores it with the real ``pg_restore`` (a pod mounting the same volume) into a fresh
  database.
- etcd: ``k3s etcd-snapshot save --name`` on the first server; the restore is k3s' documented
  one (stop k3s on the servers, ``k3s server --cluster-reset --cluster-reset-restore-path=...``
  on the first, start it again), which needs ``confirm=True``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import secrets as random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
from kubernetes import client
from psycopg import sql

from labkit import kube, manifests, polling, postgres, storage
from labkit.changes import Change, Check, Plan, StepTimer, untimed
from labkit.errors import KubeError, LabError
from labkit.params import Backup, Lab
from labkit.progress import progress
from labkit.ssh import Session

DRILL_TABLE = "labkit_drill"
DRILL_NAMESPACE = "labkit-drill-etcd"
SNAPSHOT_NAME = "labkit-drill"
SNAPSHOT_DIR = "/var/lib/rancher/k3s/server/db/snapshots"
CRONJOB = "postgresql-backup"  # the CronJob, its Jobs' and pods' name prefix, the manifest set
BACKUPS = "/backups"  # where the backup volume is mounted in those pods
INSTANTIATE = "cronjob.kubernetes.io/instantiate"  # kubectl create job --from marks its Job "manual"
LISTER_IMAGE = "busybox:1.36"
RESTORED = "labkit_drill_restored"  # the fresh database the drill restores into


class BackupError(LabError):
    """A backup or a restore failed, or a restore was refused."""


def settings(lab: Lab) -> Backup:
    if lab.backup is None:
        raise BackupError(f"{lab.path}: no backup section; add one (see parameters/sim.yaml) to run 07")
    return lab.backup


@dataclass(frozen=True)
class Drill:
    """One restore drill: its moments, what it lost (RPO) and how long it took (RTO), its checks."""

    name: str
    backup_at: datetime
    lost_at: datetime
    restored_at: datetime
    verified_at: datetime
    rpo_rows: int
    checks: list[Check] = field(default_factory=list)

    @property
    def rpo_seconds(self) -> float:
        return (self.lost_at - self.backup_at).total_seconds()

    @property
    def rto_seconds(self) -> float:
        return (self.verified_at - self.lost_at).total_seconds()



def target_checks(drill: Drill, lab: Lab) -> list[Check]:
    """The measured RPO and RTO against the lab file's targets."""
    b = settings(lab)
    return [Check(f"{drill.name}: RPO within {b.rpo_minutes:g} min", drill.rpo_seconds <= b.rpo_minutes * 60,
                  f"{drill.rpo_rows} rows, {drill.rpo_seconds:.1f} s of writes lost"),
            Check(f"{drill.name}: RTO within {b.rto_minutes:g} min", drill.rto_seconds <= b.rto_minutes * 60,
                  f"{drill.rto_seconds:.1f} s from loss to verified")]


def timeline_rows(drills: list[Drill]) -> pd.DataFrame:
    """Each drill's moments as steps (step, target, start, end, seconds) for ``plots.timeline``."""
    rows = []
    for d in drills:
        for step, start, end in (("written after the backup", d.backup_at, d.lost_at),
                                 ("restore", d.lost_at, d.restored_at), ("verify", d.restored_at, d.verified_at)):
            rows.append({"step": step, "target": d.name, "start": start, "end": end,
                         "seconds": (end - start).total_seconds()})
    return pd.DataFrame(rows)


def measures(drills: list[Drill], lab: Lab) -> pd.DataFrame:
    """RPO and RTO per drill with the targets (seconds), for the bar plot."""
    b = settings(lab)
    return pd.DataFrame([{"drill": d.name, "rpo_s": d.rpo_seconds, "rto_s": d.rto_seconds, "rpo_rows": d.rpo_rows,
                          "rpo_target_s": b.rpo_minutes * 60, "rto_target_s": b.rto_minutes * 60} for d in drills])


# -- PostgreSQL dumps: the CronJob, its Jobs, the backup volume ----------------------------------


def schedule_objects(lab: Lab) -> list[dict]:
    """The backup volume (``backup.pg_dump.pvc``) and the CronJob that dumps the lab's database
    onto it with the real ``pg_dump -Fc``, at ``backup.pg_dump.schedule``, pruned to the retention."""
    pg, dump_ = postgres.settings(lab), settings(lab).pg_dump
    labels = {"app.kubernetes.io/name": CRONJOB, "app.kubernetes.io/part-of": "postgresql"}
    env = [{"name": "PGHOST", "value": postgres.RELEASE},  # the database's Service
           {"name": "PGDATABASE", "value": pg.database}, {"name": "PGUSER", "value": pg.user},
           {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": postgres.CREDENTIALS,
                                                                 "key": postgres.USER_KEY}}},
           {"name": "RETENTION", "value": str(dump_.retention)}]
    pod = {"metadata": {"labels": dict(labels)},
           "spec": {"restartPolicy": "Never",
                    "containers": [{"name": "pg-dump", "image": pg.image, "command": ["sh", "-c", DUMP_SCRIPT],
                                    "env": env, "volumeMounts": [{"name": "backups", "mountPath": BACKUPS}]}],
                    "volumes": [{"name": "backups", "persistentVolumeClaim": {"claimName": dump_.pvc}}]}}
    return [
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": dump_.pvc, "namespace": pg.namespace, "labels": dict(labels)},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": dump_.storage_class,
                  "resources": {"requests": {"storage": dump_.size}}}},
        {"apiVersion": "batch/v1", "kind": "CronJob",
         "metadata": {"name": CRONJOB, "namespace": pg.namespace, "labels": labels},
         "spec": {"schedule": dump_.schedule, "concurrencyPolicy": "Forbid",
                  "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                  "jobTemplate": {"metadata": {"labels": dict(labels)},
                                  "spec": {"backoffLimit": 0, "template": pod}}}},
    ]


# One dump, named <database>-<UTC time>.dump, written aside and renamed once whole (a failed or
# interrupted pg_dump leaves no dump that looks complete), then the oldest dated dumps beyond
# RETENTION removed (a file put there by hand is left alone): what the original lab's nightly script
# did, with pg_dump's custom format (pg_restore reads it).
DUMP_SCRIPT = """\
f="/backups/$PGDATABASE-$(date -u +%Y%m%dT%H%M%SZ).dump"
if ! pg_dump -Fc -h "$PGHOST" -d "$PGDATABASE" > "$f.part"; then
  rm -f "$f.part"; echo "pg_dump of database $PGDATABASE failed: no dump kept" >&2; exit 1
fi
mv "$f.part" "$f"
echo "dumped $f"
ls /backups/"$PGDATABASE"-[0-9]*Z.dump | sort -r | tail -n +$((RETENTION + 1)) | while read -r old; do
  rm "$old" && echo "pruned $old"
done
"""


def plan_schedule(api: client.ApiClient, lab: Lab) -> Plan[manifests.ObjectPlan]:
    return manifests.plan(api, CRONJOB, schedule_objects(lab))


def apply_schedule(api: client.ApiClient, lab: Lab, plan_: Plan[manifests.ObjectPlan], *, dry_run: bool = False,
                   step: StepTimer = untimed) -> list[Change]:
    """What the plan says (server-side apply, field manager labkit), then verified (nothing in a dry run)."""
    if dry_run:
        return []
    done = manifests.apply(api, plan_, step=step)
    left = manifests.verify(api, CRONJOB, schedule_objects(lab))
    if left:
        raise BackupError("after the apply the backup schedule still differs from the lab file: " + "; ".join(left))
    return done


def schedule_checks(api: client.ApiClient, lab: Lab, *, dry_run: bool = False) -> list[Check]:
    """The CronJob is there with the lab file's schedule, its volume bound."""
    if dry_run:
        return [Check("backup CronJob (dry run: nothing applied)", True, enforced=False)]
    pg, dump_ = postgres.settings(lab), settings(lab).pg_dump
    cron = client.BatchV1Api(api).read_namespaced_cron_job(CRONJOB, pg.namespace)
    volume = storage.wait_bound(api, pg.namespace, dump_.pvc)
    return [Check(f"CronJob {CRONJOB} dumps at '{dump_.schedule}' keeping {dump_.retention}",
                  cron.spec.schedule == dump_.schedule and not cron.spec.suspend,
                  f"image {cron.spec.job_template.spec.template.spec.containers[0].image}"),
            Check(f"backup volume {dump_.pvc} bound ({dump_.storage_class}, {dump_.size})", bool(volume), volume)]


@dataclass(frozen=True)
class Dump:
    """A dump a Job wrote onto the backup volume."""

    name: str  # <database>-<UTC time>.dump
    job: str
    log: str

    @property
    def path(self) -> str:
        return f"{BACKUPS}/{self.name}"


def dump(api: client.ApiClient, lab: Lab, *, database: str | None = None, timeout: float = 600) -> Dump:
    """A dump now: a Job made from the CronJob as ``kubectl create job --from=cronjob/postgresql-backup``
    does (its jobTemplate, annotated ``cronjob.kubernetes.io/instantiate: manual``, owned by the
    CronJob), waited for. ``database`` dumps another one (the template with PGDATABASE changed).
    A failed Job raises naming it, with its pod's last log lines."""
    namespace = postgres.settings(lab).namespace
    batch = client.BatchV1Api(api)
    try:
        cron = batch.read_namespaced_cron_job(CRONJOB, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            raise BackupError(f"CronJob {namespace}/{CRONJOB} is missing: run 05-postgres first") from None
        raise
    job = _job_from(api.sanitize_for_serialization(cron), database)
    batch.create_namespaced_job(namespace, job)
    log = _wait_job(api, namespace, job["metadata"]["name"], timeout)
    written = re.search(r"^dumped /backups/(\S+)$", log, re.M)
    if written is None:
        raise BackupError(f"Job {namespace}/{job['metadata']['name']} completed but said no dump: {log[-300:]}")
    return Dump(written.group(1), job["metadata"]["name"], log)


def _job_from(cron: dict, database: str | None) -> dict:
    template = cron["spec"]["jobTemplate"]
    meta = template.get("metadata") or {}
    spec = copy.deepcopy(template["spec"])
    if database is not None:
        for container in spec["template"]["spec"]["containers"]:
            for var in container.get("env") or []:
                if var["name"] == "PGDATABASE":
                    var["value"] = database
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": f"{CRONJOB}-manual-{random.token_hex(3)}",
                         "labels": meta.get("labels") or {},
                         "annotations": {**(meta.get("annotations") or {}), INSTANTIATE: "manual"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                              "name": cron["metadata"]["name"], "uid": cron["metadata"]["uid"],
                                              "controller": True}]},
            "spec": spec}


def _wait_job(api: client.ApiClient, namespace: str, name: str, timeout: float) -> str:
    """Follow the Job to its end (progress on each change); its pod's log. Failed: BackupError."""
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    with progress(f"Job {name}") as bar:
        def ended(jobs) -> str | None:
            job = next(iter(jobs.items), None)
            if job is None:
                return "gone"
            states = {c.type: c.status for c in job.status.conditions or []}
            status = job.status
            bar.update(note=f"active {status.active or 0}, succeeded {status.succeeded or 0}, "
                            f"failed {status.failed or 0}")
            return next((kind for kind in ("Complete", "Failed") if states.get(kind) == "True"), None)

        outcome = kube.until(batch.list_namespaced_job, ended, what=f"Job {namespace}/{name} to finish",
                             timeout=timeout, namespace=namespace, field_selector=f"metadata.name={name}")
    pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
    log = core.read_namespaced_pod_log(pods[-1].metadata.name, namespace) if pods else ""
    if outcome != "Complete":
        tail = " | ".join(line for line in log.strip().splitlines()[-5:]) or "(no log)"
        raise BackupError(f"Job {namespace}/{name} {outcome.lower()}: {tail}; "
                          f"`kubectl -n {namespace} logs job/{name}` shows its whole log")
    return log


def dumps(api: client.ApiClient, lab: Lab, *, timeout: float = 120) -> pd.DataFrame:
    """The dumps on the backup volume (name, time, size, location), read by a short pod that
    mounts it, as the backup Jobs do: this works whatever the volume's storage class (NFS or
    not) and needs no login on the NAS."""
    pg, dump_ = postgres.settings(lab), settings(lab).pg_dump
    try:
        client.CoreV1Api(api).read_namespaced_persistent_volume_claim(dump_.pvc, pg.namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            raise BackupError(f"backup volume {pg.namespace}/{dump_.pvc} is missing: run 05-postgres first") from None
        raise
    log = _run(api, _pod(lab, f"{CRONJOB}-list", LISTER_IMAGE, LIST_SCRIPT), timeout)
    rows = []
    for line in log.splitlines():
        path, size, mtime = line.rsplit(" ", 2)
        rows.append({"kind": "pg_dump", "name": path.rsplit("/", 1)[-1], "time": datetime.fromtimestamp(int(mtime), UTC),
                     "size_bytes": int(size), "location": f"pvc {pg.namespace}/{dump_.pvc}:{path}"})
    return pd.DataFrame(rows, columns=["kind", "name", "time", "size_bytes", "location"])


LIST_SCRIPT = 'for f in /backups/*.dump; do [ -f "$f" ] && stat -c "%n %s %Y" "$f"; done; true'


def _pod(lab: Lab, name: str, image: str, script: str, env: list[dict] | None = None) -> dict:
    """A pod that runs ``script`` once with the backup volume at /backups."""
    pg, dump_ = postgres.settings(lab), settings(lab).pg_dump
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": pg.namespace, "labels": {"app.kubernetes.io/name": name}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "run", "image": image, "command": ["sh", "-c", script], "env": env or [],
                                     "volumeMounts": [{"name": "backups", "mountPath": BACKUPS}]}],
                     "volumes": [{"name": "backups", "persistentVolumeClaim": {"claimName": dump_.pvc}}]}}


def _run(api: client.ApiClient, pod: dict, timeout: float) -> str:
    """Run the pod to its end and remove it; its log (KubeError with its last lines if it failed)."""
    try:
        return kube.run_pod(api, pod, timeout=timeout)
    finally:
        kube.delete_pod(api, pod["metadata"]["namespace"], pod["metadata"]["name"])


def restore(api: client.ApiClient, lab: Lab, name: str, database: str, *, timeout: float = 600,
            port: int | None = None) -> None:
    """Restore the dump ``name`` (on the backup volume) into ``database``, created fresh here (one
    that exists is refused, never overwritten), with the real ``pg_restore --clean --if-exists`` in
    one transaction: a missing or corrupt dump fails naming it, and no other database is touched."""
    pg = postgres.settings(lab)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+[.]dump", name):
        raise BackupError(f"{name!r} is not a dump's name like {pg.database}-20260101T020000Z.dump")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
        raise BackupError(f"{database!r} is not a database name (lowercase letters, digits and '_')")
    with postgres.connect(api, lab, admin=True, port=port) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            raise BackupError(f"database {database!r} exists: restore into a fresh one (or drop it first)")
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    password = {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": postgres.CREDENTIALS,
                                                                     "key": postgres.ADMIN_KEY}}}
    script = (f'f={BACKUPS}/{name}; [ -f "$f" ] || {{ echo "no dump $f on the backup volume" >&2; exit 2; }}; '
              f'pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error '
              f'-h {postgres.RELEASE} -U postgres -d {database} "$f"')
    try:
        _run(api, _pod(lab, f"{CRONJOB}-restore", pg.image, script, [password]), timeout)
    except KubeError as exc:
        drop(api, lab, database, port=port)  # the empty database this restore made: nothing else was touched
        raise BackupError(f"restoring {name} into {database} failed: {exc}") from None


def drop(api: client.ApiClient, lab: Lab, database: str, *, port: int | None = None) -> None:
    """Drop a database a restore made (if it is there), sessions on it ended (``port``: see postgres.connect)."""
    with postgres.connect(api, lab, admin=True, port=port) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def _table_state(conn) -> tuple[int, str]:
    return conn.execute(f"SELECT count(*), coalesce(md5(string_agg(id || ':' || payload, ',' ORDER BY id)), '') "
                        f"FROM {DRILL_TABLE}").fetchone()


def postgres_drill(api: client.ApiClient, lab: Lab, *, rows: int = 100, later_rows: int = 10) -> Drill:
    """Write ``rows`` known rows, dump (a Job from the CronJob), write ``later_rows`` more, drop the
    table (the loss), restore the dump into a fresh database with pg_restore and compare row count
    and checksum with the state at dump time. The fresh database is dropped once compared. Its six
    connections share one port-forward (each opened its own: 25-70 ms apiece)."""
    with postgres.tunnel(api, lab) as port:
        return _postgres_drill(api, lab, port, rows, later_rows)


def _postgres_drill(api: client.ApiClient, lab: Lab, port: int, rows: int, later_rows: int) -> Drill:
    drop(api, lab, RESTORED, port=port)  # the drill's own database, left by an interrupted run
    with postgres.connect(api, lab, port=port) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {DRILL_TABLE}")  # the drill's own table, from a previous run
        conn.execute(f"CREATE TABLE {DRILL_TABLE} (id int PRIMARY KEY, payload text NOT NULL)")
        _write(conn, range(rows))
        at_dump = _table_state(conn)
    taken = dump(api, lab)
    backup_at = datetime.now(UTC)
    with postgres.connect(api, lab, port=port) as conn:
        _write(conn, range(rows, rows + later_rows))
        before_loss = _table_state(conn)
        conn.execute(f"DROP TABLE {DRILL_TABLE}")
        lost_at = datetime.now(UTC)
    restore(api, lab, taken.name, RESTORED, port=port)
    restored_at = datetime.now(UTC)
    with postgres.connect(api, lab, database=RESTORED, admin=True, port=port) as conn:
        after = _table_state(conn)
    verified_at = datetime.now(UTC)
    drop(api, lab, RESTORED, port=port)
    checks = [Check("postgres: rows and checksum after restore equal the dump's", after == at_dump,
                    f"{after[0]} rows, md5 {after[1][:12]}… (at dump: {at_dump[0]} rows, {at_dump[1][:12]}…) "
                    f"from {taken.path} into database {RESTORED}"),
              Check("postgres: rows written after the dump are the ones lost", before_loss[0] - after[0] == later_rows,
                    f"{before_loss[0]} rows before the loss, {after[0]} restored")]
    return Drill("postgres", backup_at, lost_at, restored_at, verified_at, before_loss[0] - after[0], checks)


def _write(conn, ids: range) -> None:
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {DRILL_TABLE} (id, payload) VALUES (%s, %s)",
                        [(i, hashlib.sha256(str(i).encode()).hexdigest()) for i in ids])


# -- etcd snapshots ---------------------------------------------------------------------------------


def etcd_snapshots(session: Session, lab: Lab) -> pd.DataFrame:
    """``k3s etcd-snapshot ls`` on the first server: name, time, size, location."""
    out = session.run(lab.master.name, "k3s etcd-snapshot ls", sudo=True).stdout
    rows = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 4:
            rows.append({"kind": "etcd", "name": parts[0], "location": parts[1], "size_bytes": int(parts[2]),
                         "time": datetime.fromisoformat(parts[3].replace("Z", "+00:00"))})
    return pd.DataFrame(rows, columns=["kind", "name", "time", "size_bytes", "location"])


def save_etcd_snapshot(session: Session, lab: Lab, name: str = SNAPSHOT_NAME) -> str:
    """An on-demand snapshot; returns its file path on the server."""
    before = set(etcd_snapshots(session, lab)["name"])
    session.run(lab.master.name, f"k3s etcd-snapshot save --name {name}", sudo=True, timeout=300)
    new = [n for n in etcd_snapshots(session, lab)["name"] if n not in before and n.startswith(f"{name}-")]
    if not new:
        raise BackupError(f"k3s etcd-snapshot save --name {name} made no snapshot on {lab.master.name}")
    return f"{SNAPSHOT_DIR}/{new[-1]}"


def inventory(session: Session, lab: Lab, api: client.ApiClient) -> pd.DataFrame:
    """Both kinds of backup: name, time, size, location."""
    return pd.concat([etcd_snapshots(session, lab), dumps(api, lab)], ignore_index=True)


def _drill_objects() -> list[tuple[str, dict]]:
    labels = {"app": "drill"}
    return [
        ("config_map", {"metadata": {"name": "drill"}, "data": {"answer": "42"}}),
        ("secret", {"metadata": {"name": "drill"}, "stringData": {"token": "drill-token-not-a-secret"}}),
        ("deployment", {"metadata": {"name": "drill", "labels": labels}, "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "sleep", "image": "busybox:1.36"}]}}}}),
    ]


def _fingerprint(api: client.ApiClient) -> dict[str, tuple[str, str]]:
    """Per object of the drill's namespace: uid and a hash of its content."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    found = {}
    for kind, reader in (("config_map", core.read_namespaced_config_map), ("secret", core.read_namespaced_secret),
                         ("deployment", apps.read_namespaced_deployment)):
        obj = api.sanitize_for_serialization(reader("drill", DRILL_NAMESPACE))
        content = {k: v for k, v in obj.items() if k in ("data", "spec")}
        found[kind] = (obj["metadata"]["uid"], hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest())
    return found


def etcd_drill(session: Session, lab: Lab, api: client.ApiClient, *, confirm: bool = False,
               timeout: float = 300) -> Drill:
    """Snapshot, delete the drill's namespace, restore the cluster from the snapshot (k3s'
    cluster-reset), verify the namespace's objects are back with the same uids and content."""
    if not confirm:
        raise BackupError("the etcd restore drill stops k3s on every server and resets the cluster to a snapshot; "
                          "set confirm=True to run it (nothing was stopped)")
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    _wait_gone(core, timeout)  # a previous drill's namespace, being deleted
    core.create_namespace({"metadata": {"name": DRILL_NAMESPACE}})
    for kind, body in _drill_objects():
        api_ = apps if kind == "deployment" else core
        getattr(api_, f"create_namespaced_{kind}")(DRILL_NAMESPACE, body)
    before = _fingerprint(api)
    path = save_etcd_snapshot(session, lab)
    backup_at = datetime.now(UTC)
    core.delete_namespace(DRILL_NAMESPACE)
    _wait_gone(core, timeout)
    lost_at = datetime.now(UTC)
    servers = [n.name for n in lab.servers]
    session.run_many({n: "systemctl stop k3s" for n in servers}, sudo=True, timeout=timeout)
    session.run(lab.master.name, f"k3s server --cluster-reset --cluster-reset-restore-path={path}", sudo=True,
                timeout=timeout)
    for other in servers[1:]:  # k3s' procedure: the other servers rejoin with an empty datastore
        session.run(other, "rm -rf /var/lib/rancher/k3s/server/db", sudo=True)
    session.run_many({n: "systemctl start k3s" for n in servers}, sudo=True, timeout=timeout)
    restored_at = datetime.now(UTC)
    after = _wait_back(api, timeout)
    rejoined = _rejoined(api, lab, timeout)
    verified_at = datetime.now(UTC)
    core.delete_namespace(DRILL_NAMESPACE)  # the drill's own namespace: gone again for the next run
    same = {k: before[k] == after.get(k) for k in before}
    seen = ", ".join(f"{k} {'same' if v else 'DIFFERS'}" for k, v in same.items())
    checks = [Check("etcd: the namespace's objects are back with the same uids and content", all(same.values()),
                    f"{seen} (restored from {path})"), rejoined]
    return Drill("etcd", backup_at, lost_at, restored_at, verified_at, 0, checks)


def _rejoined(api: client.ApiClient, lab: Lab, timeout: float) -> Check:
    """Every node of the lab Ready after the restore (the other servers and the agents rejoined)."""
    name, names = "etcd: every node Ready again (the agents rejoined the reset cluster)", \
        [n.name for n in (*lab.servers, *lab.agents)]
    try:
        kube.wait_nodes_ready(api, names, timeout=timeout)
    except KubeError as exc:
        return Check(name, False, str(exc))
    return Check(name, True, f"{len(names)} of {len(names)} Ready")


def _wait_gone(core: client.CoreV1Api, timeout: float) -> None:
    deadline, pause = time.monotonic() + timeout, polling.pauses()
    while time.monotonic() < deadline:
        try:
            core.read_namespace(DRILL_NAMESPACE)
        except client.ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(next(pause))
    raise BackupError(f"namespace {DRILL_NAMESPACE} still there after {timeout:.0f} s")


def _wait_back(api: client.ApiClient, timeout: float) -> dict[str, tuple[str, str]]:
    """The API server answers again and the drill's objects are there."""
    deadline, last, pause = time.monotonic() + timeout, "", polling.pauses()
    while time.monotonic() < deadline:
        try:
            return _fingerprint(api)
        except Exception as exc:  # the API server is restarting: refused connections, 404s until restored
            last = str(exc).splitlines()[0]
        time.sleep(next(pause))
    raise BackupError(f"the cluster did not come back with namespace {DRILL_NAMESPACE} in {timeout:.0f} s: {last}")


# -- both drills (notebook 07) ----------------------------------------------------------------------


def drills(session: Session, lab: Lab, api: client.ApiClient, *, confirm: bool = False,
           rows: int = 100, later_rows: int = 10, dry_run: bool = False) -> list[Drill]:
    """The PostgreSQL drill, then the etcd drill (refused without ``confirm``); none in a dry run."""
    if dry_run:
        return []
    if not confirm:  # refused before the PostgreSQL drill too: a run does both or neither
        etcd_drill(session, lab, api, confirm=False)
    return [postgres_drill(api, lab, rows=rows, later_rows=later_rows),
            etcd_drill(session, lab, api, confirm=confirm)]


def drill_checks(done: list[Drill], lab: Lab) -> list[Check]:
    """Each drill's own checks and its RPO/RTO against the targets."""
    return [c for d in done for c in (*d.checks, *target_checks(d, lab))]
