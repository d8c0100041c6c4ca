"""prometheus-operator (image ``quay.io/prometheus-operator/prometheus-operator``): the pod's
process is an app model of its web endpoint (labsim.apps.prometheus_operator_web) on the port
``--web.listen-address`` names; the operator itself is labsim.apps.prometheus_operator."""

from __future__ import annotations

import dataclasses

from labsim.runtime.filesystem import ContainerFS
from labsim.runtime.programs.appmodel import AppModel

IMAGES = ("prometheus-operator",)
TOOLS: tuple[str, ...] = ()
PROGRAM = AppModel("labsim.apps.prometheus_operator_web", 8080)
PACKAGE = PROGRAM.hint
bin_dir, prepare = PROGRAM.bin_dir, PROGRAM.prepare


def server(fs: ContainerFS, image: str, env: dict[str, str], pod_ip: str, args: list[str]) -> list[str]:
    port = next((a.rsplit(":", 1)[1] for a in args if a.startswith("--web.listen-address=")), str(PROGRAM.port))
    return dataclasses.replace(PROGRAM, port=int(port)).server(fs, image, env, pod_ip, args)
