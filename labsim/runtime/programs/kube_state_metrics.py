"""kube-state-metrics (image ``registry.k8s.io/kube-state-metrics/kube-state-metrics``) as an app
model (labsim.apps.kube_state_metrics), on port 8080."""

from __future__ import annotations

from labsim.runtime.programs.appmodel import AppModel

IMAGES = ("kube-state-metrics",)
TOOLS: tuple[str, ...] = ()
PROGRAM = AppModel("labsim.apps.kube_state_metrics", 8080)
PACKAGE = PROGRAM.hint
bin_dir, prepare, server = PROGRAM.bin_dir, PROGRAM.prepare, PROGRAM.server
