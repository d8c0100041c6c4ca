"""Image -> runner: what a container's process is.

A *real program* where its software installs here (an adapter module in ``programs``), a
*plain container* (``images``: busybox, alpine, curl, ubuntu, debian) whose command runs in the
node shell model, else *modelled*: the kubelet reports it running, nothing runs.
"""

from __future__ import annotations

from types import ModuleType

from labsim.runtime import images
from labsim.runtime.programs import (
    acmesolver,
    alertmanager,
    blackbox_exporter,
    grafana,
    k8s_sidecar,
    kube_state_metrics,
    loki,
    n8n,
    nginx,
    node_exporter,
    ollama,
    postgres,
    postgres_exporter,
    prometheus,
    prometheus_operator,
    promtail,
    traefik,
)

PROGRAMS: dict[str, ModuleType] = {name: adapter for adapter in (
    postgres, nginx, traefik, prometheus, alertmanager, node_exporter, postgres_exporter, blackbox_exporter,
    kube_state_metrics, prometheus_operator)
    for name in adapter.IMAGES}
PROGRAMS |= {name: adapter for adapter in (acmesolver, ollama, n8n, grafana, k8s_sidecar, loki, promtail)
              for name in adapter.IMAGES}  # app models


def program_for(image: str) -> ModuleType | None:
    return PROGRAMS.get(images.repository(image))


def runner_for(image: str) -> str:
    """"program", "plain" or "modelled"."""
    if program_for(image) is not None:
        return "program"
    return "plain" if images.is_plain(image) else "modelled"
