"""Grafana Loki as an app model (``labsim.apps.loki``): Loki does not install here."""

from labsim.runtime.programs.appmodel import AppModel

IMAGES = ("loki",)
TOOLS: tuple[str, ...] = ()
PROGRAM = AppModel("labsim.apps.loki", 3100)
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
