"""kiwigrid's k8s-sidecar as an app model (``labsim.apps.k8s_sidecar``): Grafana's dashboard and
datasource collector."""

from labsim.runtime.programs.appmodel import AppModel

IMAGES = ("k8s-sidecar",)
TOOLS: tuple[str, ...] = ()
PROGRAM = AppModel("labsim.apps.k8s_sidecar", 8080)
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
