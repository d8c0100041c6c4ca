"""Backups and restore drills: PostgreSQL dumps and k3s' etcd snapshots.

Each drill is destructive only to what it creates itself (a table, a namespace), measures its
recovery point (what was written after the backup and is lost) and recovery time (from the loss
to the data verified back), and compares both with the lab file's ``backup`` targets.

- PostgreSQL: the real ``pg_dump`` runs inside ``postgresql-0`` (``kubectl exec``); the dump
  (plain SQL with INSERTs) is kept in a local folder under a dated name and pruned to the
  retention; the restore replays it through psycopg.
- etcd: ``k3s etcd-snapshot save --name`` on the first server; the restore is k3s' documented
  one (stop k3s on the servers, ``k3s server --cluster-reset --cluster-reset-restore-path=...``
  on the first, start it again), which needs ``confirm=True``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from kubernetes import client

from labkit import postgres
from labkit.changes import Check
from labkit.errors import LabError
from labkit.params import Backup, Lab
from labkit.ssh import Session

DRILL_TABLE = "labkit_drill"
DRILL_NAMESPACE = "labkit-drill-etcd"
SNAPSHOT_NAME = "labkit-drill"
SNAPSHOT_DIR = "/var/lib/rancher/k3s/server/db/snapshots"


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


# -- PostgreSQL dumps -----------------------------------------------------------------------------


def dump(api: client.ApiClient, lab: Lab, folder: Path, *, tables: list[str] | None = None,
         database: str | None = None) -> Path:
    """The real pg_dump inside postgresql-0, kept as ``<database>-<UTC time>.sql`` in ``folder``;
    older dumps beyond the retention are deleted. A failed dump names the database and the reason."""
    pg = postgres.settings(lab)
    database = database or pg.database
    args = ["pg_dump", "-U", pg.user, "-d", database, "--inserts", "--no-owner"]
    for table in tables or []:
        args += ["-t", table]
    out = postgres.exec_tool(api, lab, args)
    if not out.ok:
        raise BackupError(f"pg_dump of database {database!r} failed: {out.stderr.strip()}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{database}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}.sql"
    path.write_text(out.stdout)
    prune(folder, database, settings(lab).pg_dump.retention)
    return path


def prune(folder: Path, database: str, keep: int) -> list[Path]:
    dumps = sorted(folder.glob(f"{database}-*.sql"))
    gone = dumps[:-keep]
    for path in gone:
        path.unlink()
    return gone


def restore(api: client.ApiClient, lab: Lab, path: Path) -> None:
    """Replay a dump in one transaction: a corrupt file fails naming it and changes nothing."""
    if not path.is_file():
        raise BackupError(f"dump {path} not found; `backup.inventory` lists the dumps there are")
    text = path.read_text(errors="replace")
    if "PostgreSQL database dump complete" not in text:
        raise BackupError(f"dump {path} is incomplete or corrupt (no end marker); the database was not touched")
    # pg_dump 17.6+/18 wraps a plain dump in psql's \restrict/\unrestrict meta-commands (which
    # stop a hostile server injecting meta-commands into psql); they are not SQL: left out here.
    sql = "\n".join(line for line in text.splitlines() if not line.startswith(("\\restrict ", "\\unrestrict ")))
    with postgres.connect(api, lab) as conn:
        try:
            with conn.transaction():
                conn.execute(sql)
        except Exception as exc:
            raise BackupError(f"restoring {path} failed, rolled back: {exc}") from None


def dumps(folder: Path) -> pd.DataFrame:
    rows = [{"kind": "pg_dump", "name": p.name, "time": datetime.fromtimestamp(p.stat().st_mtime, UTC),
             "size_bytes": p.stat().st_size, "location": str(p)} for p in sorted(folder.glob("*.sql"))]
    return pd.DataFrame(rows, columns=["kind", "name", "time", "size_bytes", "location"])


def _table_state(conn) -> tuple[int, str]:
    return conn.execute(f"SELECT count(*), coalesce(md5(string_agg(id || ':' || payload, ',' ORDER BY id)), '') "
                        f"FROM {DRILL_TABLE}").fetchone()


def postgres_drill(api: client.ApiClient, lab: Lab, folder: Path, *, rows: int = 100, later_rows: int = 10) -> Drill:
    """Write ``rows`` known rows, dump, write ``later_rows`` more, drop the table, restore the dump,
    and compare row count and checksum with the state at dump time."""
    with postgres.connect(api, lab) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {DRILL_TABLE}")  # the drill's own table, from a previous run
        conn.execute(f"CREATE TABLE {DRILL_TABLE} (id int PRIMARY KEY, payload text NOT NULL)")
        _write(conn, range(rows))
        at_dump = _table_state(conn)
    path = dump(api, lab, folder, tables=[DRILL_TABLE])
    backup_at = datetime.now(UTC)
    with postgres.connect(api, lab) as conn:
        _write(conn, range(rows, rows + later_rows))
        before_loss = _table_state(conn)
        conn.execute(f"DROP TABLE {DRILL_TABLE}")
        lost_at = datetime.now(UTC)
    restore(api, lab, path)
    restored_at = datetime.now(UTC)
    with postgres.connect(api, lab) as conn:
        after = _table_state(conn)
    verified_at = datetime.now(UTC)
    checks = [Check("postgres: rows and checksum after restore equal the dump's", after == at_dump,
                    f"{after[0]} rows, md5 {after[1][:12]}… (at dump: {at_dump[0]} rows, {at_dump[1][:12]}…)"),
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


def inventory(session: Session, lab: Lab, folder: Path) -> pd.DataFrame:
    """Both kinds of backup: name, time, size, location."""
    return pd.concat([etcd_snapshots(session, lab), dumps(folder)], ignore_index=True)


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
    verified_at = datetime.now(UTC)
    core.delete_namespace(DRILL_NAMESPACE)  # the drill's own namespace: gone again for the next run
    same = {k: before[k] == after.get(k) for k in before}
    checks = [Check("etcd: the namespace's objects are back with the same uids and content", all(same.values()),
                    ", ".join(f"{k} {'same' if v else 'DIFFERS'}" for k, v in same.items())),
              Check("etcd: restored from the on-demand snapshot", True, path)]
    return Drill("etcd", backup_at, lost_at, restored_at, verified_at, 0, checks)


def _wait_gone(core: client.CoreV1Api, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(DRILL_NAMESPACE)
        except client.ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.5)
    raise BackupError(f"namespace {DRILL_NAMESPACE} still there after {timeout:.0f} s")


def _wait_back(api: client.ApiClient, timeout: float) -> dict[str, tuple[str, str]]:
    """The API server answers again and the drill's objects are there."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            return _fingerprint(api)
        except Exception as exc:  # the API server is restarting: refused connections, 404s until restored
            last = str(exc).splitlines()[0]
        time.sleep(1)
    raise BackupError(f"the cluster did not come back with namespace {DRILL_NAMESPACE} in {timeout:.0f} s: {last}")


# -- both drills (notebook 07) ----------------------------------------------------------------------


def dump_folder(lab: Lab) -> Path:
    """Where the PostgreSQL dumps are kept: the embedded lab's state folder, else beside the lab file."""
    base = lab.embedded.state_dir if lab.embedded is not None else lab.base_dir
    return base / "backups" / lab.name / "postgres"


def drills(session: Session, lab: Lab, api: client.ApiClient, folder: Path, *, confirm: bool = False,
           rows: int = 100, later_rows: int = 10, dry_run: bool = False) -> list[Drill]:
    """The PostgreSQL drill, then the etcd drill (refused without ``confirm``); none in a dry run."""
    if dry_run:
        return []
    if not confirm:  # refused before the PostgreSQL drill too: a run does both or neither
        etcd_drill(session, lab, api, confirm=False)
    return [postgres_drill(api, lab, folder, rows=rows, later_rows=later_rows),
            etcd_drill(session, lab, api, confirm=confirm)]


def drill_checks(done: list[Drill], lab: Lab) -> list[Check]:
    """Each drill's own checks and its RPO/RTO against the targets."""
    return [c for d in done for c in (*d.checks, *target_checks(d, lab))]
