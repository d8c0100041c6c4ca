"""Alertmanager (images ``prom/alertmanager``, ``quay.io/prometheus/alertmanager``) from Debian's
``prometheus-alertmanager`` 0.25 (``goprogram`` says how flags and files are translated).

The image's default arguments and ``alertmanager.yml`` apply when the container gives none; its
silences and notification log live at ``--storage.path``. The cluster (gossip) port is bound to
the pod IP like the web port; ``--cluster.listen-address=`` (empty) turns it off, as charts do for
one replica. Debian's build reads its default notification templates from a path that
``make programs`` makes relative: the container's root holds them (linked from the package).
"""

from __future__ import annotations

from labsim.runtime.filesystem import ContainerFS
from labsim.runtime.programs import labclock
from labsim.runtime.programs.goprogram import GoProgram, tools_dir, unpack_operator_config

IMAGES = ("alertmanager",)
TOOLS: tuple[str, ...] = ()
_CONFIG = """\
route:
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
  receiver: web.hook
receivers:
  - name: web.hook
    webhook_configs:
      - url: http://127.0.0.1:5001/
"""
PROGRAM = GoProgram(
    package="prometheus-alertmanager", binary="prometheus-alertmanager",
    listen={"--web.listen-address": ":9093", "--cluster.listen-address": ":9094"},
    defaults=("--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"),
    paths=("--storage.path", "--web.config.file"),
    config="--config.file", lab_clock=labclock.alertmanager, image_files={"/etc/alertmanager/alertmanager.yml": _CONFIG})
PACKAGE = PROGRAM.hint
bin_dir, server = PROGRAM.bin_dir, PROGRAM.server
TEMPLATES = "/usr/share/prometheus/alertmanager"


def prepare(fs: ContainerFS, image: str, env: dict[str, str]) -> list[tuple[list[str], bytes]]:
    link = fs.host_path(TEMPLATES)
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(tools_dir() / PROGRAM.package / TEMPLATES.lstrip("/"))
    unpack_operator_config(fs, "/etc/alertmanager/config/alertmanager.yaml.gz",
                           "/etc/alertmanager/config_out/alertmanager.env.yaml")
    return PROGRAM.prepare(fs, image, env)
