"""blackbox-exporter (images ``prom/blackbox-exporter``, ``quay.io/prometheus/blackbox-exporter``)
from Debian's ``prometheus-blackbox-exporter`` 0.23 (``goprogram`` says how flags and its
modules file are translated). The image's default arguments and modules (http_2xx, tcp_connect...)
apply when the container gives none. ICMP probes need raw sockets: not modelled.
"""

from __future__ import annotations

from labsim.runtime.programs.goprogram import GoProgram

IMAGES = ("blackbox-exporter",)
TOOLS: tuple[str, ...] = ()
_CONFIG = """\
modules:
  http_2xx:
    prober: http
    http:
      preferred_ip_protocol: ip4
  http_post_2xx:
    prober: http
    http:
      method: POST
  tcp_connect:
    prober: tcp
"""
PROGRAM = GoProgram(
    package="prometheus-blackbox-exporter", binary="prometheus-blackbox-exporter",
    listen={"--web.listen-address": ":9115"}, defaults=("--config.file=/etc/blackbox_exporter/config.yml",),
    paths=("--web.config.file",), config="--config.file",
    image_files={"/etc/blackbox_exporter/config.yml": _CONFIG})
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
