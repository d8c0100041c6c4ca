"""node-exporter (images ``prom/node-exporter``, ``quay.io/prometheus/node-exporter``) from
Debian's ``prometheus-node-exporter`` 1.5 (``goprogram`` says how flags are translated).

Every node of the twin is this machine: ``--path.procfs``, ``--path.sysfs`` and ``--path.rootfs``
(a DaemonSet's hostPath mounts of /proc, /sys and /) are this machine's, so each node reports
this machine's kernel, CPUs and memory. The textfile collector's folder is the container's.
"""

from __future__ import annotations

from labsim.runtime.programs.goprogram import GoProgram

IMAGES = ("node-exporter",)
TOOLS: tuple[str, ...] = ()
PROGRAM = GoProgram(
    package="prometheus-node-exporter", binary="prometheus-node-exporter",
    listen={"--web.listen-address": ":9100"},
    paths=("--collector.textfile.directory", "--web.config.file"),
    host_paths={"--path.procfs": "/proc", "--path.sysfs": "/sys", "--path.rootfs": "/"})
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
