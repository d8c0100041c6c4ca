"""etcd snapshots as k3s keeps them: files named `<name>-<node>-<unix time>` in the server's
snapshot folder, each holding the whole cluster state (`Cluster.snapshot()`), listed, deleted
and pruned to a retention count per name prefix."""

from __future__ import annotations

from dataclasses import dataclass

from labsim.k3s.logs import rfc3339

SNAPSHOT_DIR = "/var/lib/rancher/k3s/server/db/snapshots"
DEFAULT_NAME = "on-demand"  # `k3s etcd-snapshot save` without --name
SCHEDULED_NAME = "etcd-snapshot"  # snapshots taken on the server's cron schedule
DEFAULT_RETENTION = 5


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
