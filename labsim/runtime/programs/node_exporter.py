"""node-exporter (images ``prom/node-exporter``, ``quay.io/prometheus/node-exporter``) as an app
model (labsim.apps.node_exporter: why not Debian's binary is said there), on port 9100."""

from __future__ import annotations

from labsim.runtime.programs.appmodel import AppModel

IMAGES = ("node-exporter",)
TOOLS: tuple[str, ...] = ()
PROGRAM = AppModel("labsim.apps.node_exporter", 9100)
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
