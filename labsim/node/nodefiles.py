"""The node's kernel files as its pods' hostPath mounts see them, and its disk filling up.

A node's hostPath root is the cluster's folder ``nodes/<node>`` (labsim.runtime.filesystem):
when a node joins, labsim writes there what a DaemonSet mounting the node's ``/proc`` and
``/sys`` reads of the machine — ``proc/meminfo``, ``proc/stat`` (CPUs, boot time),
``proc/sys/kernel/hostname``, ``sys/block/sda/size`` (the disk's 512-byte sectors) — from the
VM's cores, memory and disk. The root filesystem's size and usage follow the node model's
``df`` (labsim.node.image.root_fs): the disk minus boot partitions and ext4 metadata, used =
the image's base plus the files under the node's folder. The ``disk_full`` fault writes one
sparse file there (``var/lib/labsim/disk-fill``) so that a given share of the disk is used.
"""

from __future__ import annotations

from pathlib import Path

from labsim.node.image import BASE_DISK_USED, MIB

FILL = "var/lib/labsim/disk-fill"
_SKIP = ("proc", "sys")


def write(folder: Path, *, cores: int, memory_mib: int, disk_bytes: int, boot_time: float, hostname: str) -> None:
    total_kib = (memory_mib * MIB - memory_mib * 24 * 1024) // 1024
    files = {
        "proc/meminfo": f"MemTotal:       {total_kib} kB\nMemFree:        {total_kib * 6 // 10} kB\n"
                        f"MemAvailable:   {total_kib * 8 // 10} kB\nBuffers:        {total_kib // 50} kB\n"
                        f"Cached:         {total_kib // 8} kB\n",
        "proc/stat": "".join(f"cpu{n} 0 0 0 0 0 0 0 0 0 0\n" for n in range(cores)) + f"btime {int(boot_time)}\n",
        "proc/sys/kernel/hostname": f"{hostname}\n",
        "sys/block/sda/size": f"{disk_bytes // 512}\n",
    }
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def root_fs(folder: Path) -> dict[str, int]:
    """size/used/avail bytes of the node's ``/`` (ext4, 5 % reserved for root), as ``df`` has them."""
    disk = int((folder / "sys/block/sda/size").read_text()) * 512
    size = int((disk - 117 * MIB) * 0.984) // 4096 * 4096
    used = min(size, BASE_DISK_USED + files_size(folder))
    return {"size": size, "used": used, "avail": max(0, size - used - size // 20), "free": size - used}


def files_size(folder: Path, skip: tuple[str, ...] = _SKIP) -> int:
    """Bytes of the files under the node's folder (its kernel files aside)."""
    total = 0
    for entry in folder.iterdir():
        if entry.name in skip or entry.is_symlink():
            continue
        if entry.is_dir():
            total += files_size(entry, ())
        elif entry.is_file():
            total += entry.stat().st_size
    return total


def fill_disk(folder: Path, used_share: float) -> int:
    """Make ``used_share`` (0-1) of the node's root filesystem used; returns the fill's bytes."""
    fill = folder / FILL
    fill.parent.mkdir(parents=True, exist_ok=True)
    fill.unlink(missing_ok=True)
    fs = root_fs(folder)
    wanted = max(0, int(fs["size"] * used_share) - fs["used"])
    with fill.open("wb") as handle:
        handle.truncate(wanted)  # sparse: the twin's disk is a model, this machine's stays free
    return wanted


def clear_disk(folder: Path) -> None:
    (folder / FILL).unlink(missing_ok=True)
