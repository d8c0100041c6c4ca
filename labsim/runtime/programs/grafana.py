"""Grafana as an app model (``labsim.apps.grafana``): Grafana does not install here."""

from labsim.runtime.programs.appmodel import AppModel

IMAGES = ("grafana",)
TOOLS: tuple[str, ...] = ()
PROGRAM = AppModel("labsim.apps.grafana", 3000)
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
