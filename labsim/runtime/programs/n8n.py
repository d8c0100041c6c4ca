"""n8n (image ``n8nio/n8n``): the app model ``labsim.apps.n8n`` (health, public API, tables in PostgreSQL)."""

from labsim.runtime.programs.appmodel import AppModel

IMAGES = ("n8n",)
TOOLS: tuple[str, ...] = ()
PROGRAM = AppModel("labsim.apps.n8n", 5678)
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
