"""Prometheus (images ``prom/prometheus``, ``quay.io/prometheus/prometheus``, ``bitnami/prometheus``)
from Debian's ``prometheus`` 2.42 (``goprogram`` says how flags and files are translated).

The image's default arguments and ``prometheus.yml`` apply when the container gives none; the TSDB
lives at ``--storage.tsdb.path`` in the container (a PVC or emptyDir mounted there keeps it).
Debian's build has no Kubernetes service discovery: targets come from ``static_configs``,
``file_sd_configs`` or ``http_sd_configs``. A pod's ``localhost`` is this machine's, so the image's
default self-scrape of ``localhost:9090`` finds nothing (not modelled).
"""

from __future__ import annotations

from labsim.runtime.filesystem import ContainerFS
from labsim.runtime.programs import labclock
from labsim.runtime.programs.goprogram import GoProgram, unpack_operator_config

IMAGES = ("prometheus",)
TOOLS: tuple[str, ...] = ()
_CONFIG = """\
global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["localhost:9090"]
"""
PROGRAM = GoProgram(
    package="prometheus", binary="prometheus", listen={"--web.listen-address": ":9090"},
    defaults=("--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"),
    paths=("--storage.tsdb.path", "--storage.agent.path", "--web.console.libraries", "--web.console.templates",
           "--web.config.file", "--query.active-query-tracker-dir"),
    config="--config.file", lab_clock=labclock.prometheus, clock_flags={"--rules.alert.resend-delay": "1m"},
    image_files={"/etc/prometheus/prometheus.yml": _CONFIG})
PACKAGE = PROGRAM.hint
bin_dir, server = PROGRAM.bin_dir, PROGRAM.server


def prepare(fs: ContainerFS, image: str, env: dict[str, str]) -> list[tuple[list[str], bytes]]:
    unpack_operator_config(fs, "/etc/prometheus/config/prometheus.yaml.gz", "/etc/prometheus/config_out/prometheus.env.yaml")
    return PROGRAM.prepare(fs, image, env)
