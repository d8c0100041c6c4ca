"""cert-manager's HTTP-01 solver (image ``cert-manager-acmesolver``): the app model
``labsim.apps.acmesolver`` on port 8089 (cert-manager always passes ``--listen-port=8089``)."""

from labsim.runtime.programs.appmodel import AppModel

IMAGES = ("cert-manager-acmesolver",)
TOOLS: tuple[str, ...] = ()
PROGRAM = AppModel("labsim.apps.acmesolver", 8089)
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
