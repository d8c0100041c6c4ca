"""Image -> runner: what a container's process is.

A *real program* where its software installs here (an adapter module in ``programs``), a
*plain container* (``images``: busybox, alpine, curl, ubuntu, debian) whose command runs in the
node shell model, else *modelled*: the kubelet reports it running, nothing runs.
"""

from __future__ import annotations

from types import ModuleType

from labsim.runtime import images
from labsim.runtime.programs import (
    alertmanager,
    blackbox_exporter,
    n8n,
    nginx,
    node_exporter,
    ollama,
    postgres,
    postgres_exporter,
    prometheus,
    traefik,
)
from labsim.runtime.programs.appmodel import AppModel

PROGRAMS: dict[str, ModuleType] = {name: adapter for adapter in (
    postgres, nginx, traefik, prometheus, alertmanager, node_exporter, postgres_exporter, blackbox_exporter)
    for name in adapter.IMAGES}
PROGRAMS.update({name: adapter for adapter in (ollama, n8n) for name in adapter.IMAGES})  # app models


def program_for(image: str) -> ModuleType | None:
    return PROGRAMS.get(images.repository(image))


def is_app_model(image: str) -> bool:
    """Whether the image runs an app model (a Python server of labsim.apps)."""
    return isinstance(getattr(program_for(image), "PROGRAM", None), AppModel)


def runner_for(image: str) -> str:
    """"program", "plain" or "modelled"."""
    if program_for(image) is not None:
        return "program"
    return "plain" if images.is_plain(image) else "modelled"
