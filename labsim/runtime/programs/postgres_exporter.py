"""postgres-exporter (images ``prometheuscommunity/postgres-exporter``, ``bitnami/postgres-exporter``)
from Debian's ``prometheus-postgres-exporter`` 0.11 (``goprogram`` says how flags are translated).

The server to watch comes from the container's environment as the image reads it
(``DATA_SOURCE_NAME``, or ``DATA_SOURCE_URI`` with ``DATA_SOURCE_USER``/``DATA_SOURCE_PASS``).
A pod's containers share its network namespace, so a sidecar reaches its neighbour on localhost
(Bitnami's chart points the exporter at ``127.0.0.1:5432``): here localhost in those variables
becomes the pod IP, where the neighbour listens. The exporter resolves other host names with this
machine's resolver, not the cluster DNS: a DSN naming a Service by its DNS name does not resolve
here; its ClusterIP does.
"""

from __future__ import annotations

import re

from labsim.runtime.programs.goprogram import GoProgram

IMAGES = ("postgres-exporter",)
TOOLS: tuple[str, ...] = ()
PROGRAM = GoProgram(
    package="prometheus-postgres-exporter", binary="prometheus-postgres-exporter",
    listen={"--web.listen-address": ":9187"}, paths=("--extend.query-path", "--web.config.file"))
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
_SOURCES = ("DATA_SOURCE_NAME", "DATA_SOURCE_URI")
_LOCALHOST = re.compile(r"(?<![\w.-])(?:127\.0\.0\.1|localhost)(?=[:/?]|$)")


def environment(env: dict[str, str], pod_ip: str) -> dict[str, str]:
    """The container's variables with the pod's localhost in its data source made the pod IP."""
    if not pod_ip:
        return env
    return {k: _LOCALHOST.sub(pod_ip, v) if k in _SOURCES else v for k, v in env.items()}
