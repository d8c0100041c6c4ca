"""Promtail as an app model (``labsim.apps.promtail``): it ships the node's pods' logs to Loki."""

from labsim.runtime.programs.appmodel import AppModel

IMAGES = ("promtail",)
TOOLS: tuple[str, ...] = ()
PROGRAM = AppModel("labsim.apps.promtail", 3101)
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
