"""node-exporter as an app model: ``node_*`` metrics of the pod's node, from the node's files.

Why not Debian's real binary: every node of the twin is this machine, so the real exporter would
report this machine's one disk, memory and CPUs for every node, and no fault could fill one
node's disk. This model reads what its DaemonSet mounts — the node's ``/proc``, ``/sys`` and
``/`` (``--path.procfs``, ``--path.sysfs``, ``--path.rootfs``; labsim.node.nodefiles writes
the node's kernel files there) — and reports the node's root filesystem (``/dev/sda1``, ext4,
``mountpoint="/"``) with the size and usage the node model's ``df`` shows, its memory, CPUs,
boot time and uname, in the exposition format and metric names of node-exporter 1.9. A pod
without those mounts reports what it can (CPUs of this machine, build info).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from aiohttp import web

from labsim.apps import serve
from labsim.node import nodefiles

VERSION = "1.9.1"
_FLAGS = {"--path.procfs": "/proc", "--path.sysfs": "/sys", "--path.rootfs": "/"}


def paths(args: list[str]) -> dict[str, Path]:
    """procfs/sysfs/rootfs as folders of the container (its cwd is the container's root)."""
    found = dict(_FLAGS)
    for arg in args:
        name, _, value = arg.partition("=")
        if name in found and value:
            found[name] = value
    return {name.rsplit(".", 1)[-1]: Path("." + value) if value != "/" else Path(".") for name, value in found.items()}


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def metrics(folders: dict[str, Path], started: float) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
        for labels, value in samples:
            text = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")

    proc, root = folders["procfs"], folders["rootfs"]
    stat = _read(proc / "stat") or ""
    cores = sum(1 for line in stat.splitlines() if line.startswith("cpu") and line[3:4].isdigit()) or os.cpu_count() or 1
    btime = next((float(line.split()[1]) for line in stat.splitlines() if line.startswith("btime")), started)
    now = time.time()
    up = max(0.0, now - btime)
    family("node_exporter_build_info", "gauge", "A metric with a constant '1' value labeled by version, revision, "
           "branch, goversion from which node_exporter was built, and the goos and goarch for the build.",
           [({"branch": "HEAD", "goarch": "amd64", "goos": "linux", "goversion": "go1.23.7", "revision": "labsim",
              "tags": "unknown", "version": VERSION}, 1)])
    family("node_cpu_seconds_total", "counter", "Seconds the CPUs spent in each mode.",
           [({"cpu": str(n), "mode": mode}, round(up * share, 2)) for n in range(cores)
            for mode, share in (("idle", 0.93), ("system", 0.02), ("user", 0.04), ("iowait", 0.01))])
    family("node_boot_time_seconds", "gauge", "Node boot time, in unixtime.", [({}, btime)])
    family("node_time_seconds", "gauge", "System time in seconds since epoch (1970).", [({}, round(now, 3))])
    family("node_load1", "gauge", "1m load average.", [({}, 0.08 * cores)])
    family("node_load5", "gauge", "5m load average.", [({}, 0.06 * cores)])
    family("node_load15", "gauge", "15m load average.", [({}, 0.05 * cores)])
    meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in (_read(proc / "meminfo") or "").splitlines()
               if ":" in line}
    for key, value in meminfo.items():
        family(f"node_memory_{key}_bytes", "gauge", f"Memory information field {key}_bytes.", [({}, value)])
    hostname = (_read(proc / "sys/kernel/hostname") or "").strip()
    if hostname:
        family("node_uname_info", "gauge", "Labeled system information as provided by the uname system call.",
               [({"domainname": "(none)", "machine": "x86_64", "nodename": hostname, "release": "6.8.0-60-generic",
                  "sysname": "Linux", "version": "#63-Ubuntu SMP PREEMPT_DYNAMIC"}, 1)])
    if (root / "sys/block/sda/size").exists():  # the node's folder: labsim.node.nodefiles
        family_fs(family, nodefiles.root_fs(root))
    return "\n".join(lines) + "\n"


def family_fs(family, fs: dict[str, int]) -> None:
    labels = {"device": "/dev/sda1", "device_error": "", "fstype": "ext4", "mountpoint": "/"}
    family("node_filesystem_size_bytes", "gauge", "Filesystem size in bytes.", [(labels, fs["size"])])
    family("node_filesystem_free_bytes", "gauge", "Filesystem free space in bytes.", [(labels, fs["free"])])
    family("node_filesystem_avail_bytes", "gauge", "Filesystem space available to non-root users in bytes.",
           [(labels, fs["avail"])])
    family("node_filesystem_files", "gauge", "Filesystem total file nodes.", [(labels, fs["size"] // 16384)])
    family("node_filesystem_files_free", "gauge", "Filesystem total free file nodes.",
           [(labels, fs["free"] // 16384)])
    family("node_filesystem_readonly", "gauge", "Filesystem read-only status.", [(labels, 0)])
    family("node_filesystem_device_error", "gauge", "Whether an error occurred while getting statistics for the "
           "given device.", [(labels, 0)])


def make_app(options) -> web.Application:
    folders, started = paths(options.args), time.time()

    async def serve_metrics(request: web.Request) -> web.Response:
        return web.Response(text=metrics(folders, started), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def landing(request: web.Request) -> web.Response:
        return web.Response(text="<html><head><title>Node Exporter</title></head><body><h1>Node Exporter</h1>"
                                 "<p><a href=\"/metrics\">Metrics</a></p></body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/", landing)
    return app


if __name__ == "__main__":
    serve.main(make_app)
