"""etcd snapshots as k3s keeps them: files named `<name>-<node>-<unix time>` in the server's
snapshot folder, each holding the whole cluster state (`Cluster.snapshot()`), listed, deleted
and pruned to a retention count per name prefix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from labsim.k3s.logs import Logger, rfc3339
from labsim.k3s.manifests import delete_if_present
from labsim.kube.controllers.schedule import Schedule
from labsim.kube.controllers.workqueue import Controller, Key

SNAPSHOT_DIR = "/var/lib/rancher/k3s/server/db/snapshots"
DEFAULT_NAME = "on-demand"  # `k3s etcd-snapshot save` without --name
SCHEDULED_NAME = "etcd-snapshot"  # snapshots taken on the server's cron schedule
DEFAULT_RETENTION = 5
DEFAULT_SCHEDULE = "0 */12 * * *"


@dataclass(frozen=True)
class SnapshotFile:
    name: str
    path: str
    size: int
    created: float  # epoch seconds

    @property
    def location(self) -> str:
        return f"file://{self.path}"


def snapshot_name(prefix: str, node_name: str, epoch: float) -> str:
    return f"{prefix}-{node_name}-{int(epoch)}"


def created_from_name(name: str) -> float | None:
    """The unix time a snapshot's name ends with, if it does."""
    tail = name.rsplit("-", 1)[-1]
    return float(tail) if tail.isdigit() else None


def to_prune(files: list[SnapshotFile], prefix: str, node_name: str, retention: int) -> list[SnapshotFile]:
    """The snapshots of ``prefix`` on this node beyond the ``retention`` newest ones."""
    if retention < 1:
        return []
    mine = sorted((f for f in files if f.name.startswith(f"{prefix}-{node_name}-")),
                  key=lambda f: (f.created, f.name), reverse=True)
    return mine[retention:]


def format_table(files: list[SnapshotFile]) -> str:
    """`k3s etcd-snapshot ls`: Go tabwriter columns separated by one space at least."""
    rows = [("Name", "Location", "Size", "Created")]
    rows += [(f.name, f.location, str(f.size), rfc3339(f.created))
             for f in sorted(files, key=lambda f: (f.created, f.name))]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "".join(
        " ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + " " + row[3] + "\n" for row in rows
    )


def list_files(node, folder: str = SNAPSHOT_DIR) -> list[SnapshotFile]:
    """The snapshot files in ``folder`` on ``node`` (a NodeModel)."""
    if not node.is_dir(folder):
        return []
    files = []
    for name in node.listdir(folder):
        path = f"{folder}/{name}"
        if name.startswith(".") or node.is_dir(path):
            continue
        host = node.host_path(path)
        created = created_from_name(name) or host.stat().st_mtime
        files.append(SnapshotFile(name, path, host.stat().st_size, created))
    return files


async def save(node, cluster, folder: str, prefix: str, node_name: str, log: Logger) -> str:
    """Write the cluster's state to a new snapshot file; returns its name."""
    name = snapshot_name(prefix, node_name, node.lab.clock.now())
    path = f"{folder}/{name}"
    node.mkdir(folder, mode=0o700)
    node.write(path, cluster.snapshot(), mode=0o600)
    log.info(f"Saving etcd snapshot to {path}")
    log.info(f"Saving snapshot metadata to {folder.rsplit('/', 1)[0]}/.metadata/{name}")
    await _record(cluster, snapshot_record(list_files(node, folder), name, node_name))
    log.info("Reconciling ETCDSnapshotFile resources")
    log.info("Reconciliation of ETCDSnapshotFile resources complete")
    log.info(f"Snapshot {name} saved.")
    return name


async def _record(cluster, record: dict) -> None:
    """Create or update an ETCDSnapshotFile, its status too (a subresource)."""
    await cluster.apply_manifest(record)
    res = cluster.store.resource(record["apiVersion"], record["kind"])
    stored = cluster.store.get(res, None, record["metadata"]["name"])
    stored["status"] = record["status"]
    cluster.store.update(stored, subresource="status")


def snapshot_record(files: list[SnapshotFile], name: str, node_name: str) -> dict:
    """The ETCDSnapshotFile k3s keeps for a local snapshot."""
    entry = next(f for f in files if f.name == name)
    return {"apiVersion": "k3s.cattle.io/v1", "kind": "ETCDSnapshotFile",
            "metadata": {"name": _record_name(name)},
            "spec": {"snapshotName": name, "nodeName": node_name, "location": entry.location},
            "status": {"readyToUse": True, "size": str(entry.size),
                       "creationTime": rfc3339(entry.created)}}


def _record_name(name: str) -> str:
    return f"local-{name}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"


async def delete(node, cluster, folder: str, names: list[str], log: Logger) -> None:
    for name in names:
        path = f"{folder}/{name}"
        log.info(f"Removing local snapshot {path}")
        node.remove(path)
        await delete_if_present(cluster, _record_stub(name))
        log.info(f"Snapshot {name} deleted.")


async def prune(node, cluster, folder: str, prefix: str, node_name: str, retention: int, log: Logger) -> None:
    log.info(f"Applying snapshot retention={retention} to local snapshots with prefix {prefix} in {folder}")
    for old in to_prune(list_files(node, folder), prefix, node_name, retention):
        log.info(f"Removing local snapshot {old.path}")
        node.remove(old.path)
        await delete_if_present(cluster, _record_stub(old.name))


async def reconcile_records(node, cluster, folder: str, node_name: str, log: Logger) -> None:
    """At server start, as k3s: an ETCDSnapshotFile for every local snapshot file, none for a
    file that is gone (a restored cluster state knows nothing of later snapshots)."""
    log.info("Reconciling ETCDSnapshotFile resources")
    files = list_files(node, folder)
    res = cluster.store.resource("k3s.cattle.io/v1", "ETCDSnapshotFile")
    wanted = {_record_name(f.name): f for f in files}
    for record in cluster.store.list(res):
        if record["spec"].get("nodeName") == node_name and record["metadata"]["name"] not in wanted:
            await delete_if_present(cluster, record)
    for name, entry in wanted.items():
        if cluster.store.get(res, None, name) is None:
            await _record(cluster, snapshot_record(files, entry.name, node_name))
    log.info("Reconciliation of ETCDSnapshotFile resources complete")


def _record_stub(name: str) -> dict:
    return {"apiVersion": "k3s.cattle.io/v1", "kind": "ETCDSnapshotFile", "metadata": {"name": _record_name(name)}}


class SnapshotSchedule(Controller):
    """k3s' scheduled snapshots: `etcd-snapshot-<node>-<unix time>` at each time of the server's
    cron schedule (lab clock; a clock advanced past several runs takes one), pruned to the
    retention count, logged in the k3s journal."""

    name = "etcd-snapshot-schedule"
    KEY = (None, "schedule")

    def __init__(self, cluster, node, *, schedule: Schedule, retention: int, folder: str, node_name: str) -> None:
        super().__init__(cluster)
        self.node, self.schedule, self.retention = node, schedule, retention
        self.folder, self.node_name = folder, node_name
        self.due = schedule.next_after(self.clock.now())
        self.queue.add(self.KEY)

    def watches(self):
        return []

    async def reconcile(self, key: Key) -> None:
        now = self.clock.now()
        if now >= self.due:
            log = Logger(self.clock, self.node, "k3s")
            await save(self.node, self.cluster, self.folder, SCHEDULED_NAME, self.node_name, log)
            await prune(self.node, self.cluster, self.folder, SCHEDULED_NAME, self.node_name, self.retention, log)
            self.due = self.schedule.next_after(now)
        self.at(self.due, key)
