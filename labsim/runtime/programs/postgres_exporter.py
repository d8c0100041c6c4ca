"""postgres-exporter (images ``prometheuscommunity/postgres-exporter``, ``bitnami/postgres-exporter``)
from Debian's ``prometheus-postgres-exporter`` 0.11 (``goprogram`` says how flags are translated).

The server to watch comes from the container's environment as the image reads it
(``DATA_SOURCE_NAME``, or ``DATA_SOURCE_URI`` with ``DATA_SOURCE_USER``/``DATA_SOURCE_PASS``).
The exporter resolves host names with this machine's resolver, not the cluster DNS: a DSN naming
a Service by its DNS name does not resolve here; its ClusterIP does.
"""

from __future__ import annotations

from labsim.runtime.programs.goprogram import GoProgram

IMAGES = ("postgres-exporter",)
TOOLS: tuple[str, ...] = ()
PROGRAM = GoProgram(
    package="prometheus-postgres-exporter", binary="prometheus-postgres-exporter",
    listen={"--web.listen-address": ":9187"}, paths=("--extend.query-path", "--web.config.file"))
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
