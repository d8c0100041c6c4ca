"""Ollama (image ``ollama/ollama``): the app model ``labsim.apps.ollama`` (Ollama's API on port 11434)."""

from labsim.runtime.programs.appmodel import AppModel

IMAGES = ("ollama",)
TOOLS: tuple[str, ...] = ()
PROGRAM = AppModel("labsim.apps.ollama", 11434)
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
