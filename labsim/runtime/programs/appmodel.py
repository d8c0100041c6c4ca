"""App models as pods: software that does not install here (Ollama, n8n, Grafana, Loki, ntfy,
kube-state-metrics...) runs as a real process of its own, a small Python server
``labsim.apps.<app>`` speaking the real app's API on the pod IP (``labsim.apps.serve``).

Being a process like the real programs, an app model writes the container's log, dies with
``kill -9``, is restarted by the kubelet, is probed for real and keeps its data in the
container's volumes: it runs in the container's root folder (its cwd), where the container
path ``/x`` is ``./x``, volumes included. Its environment is the container's, plus the lab's time
scale (``TIME_SCALE_ENV``) so that what it models as taking time (a pull, an inference) is spent
on the lab's clock like every other modelled duration.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from labsim.apps.serve import TIME_SCALE_ENV
from labsim.runtime.filesystem import ContainerFS

__all__ = ["TIME_SCALE_ENV", "AppModel"]


@dataclass(frozen=True)
class AppModel:
    module: str  # run as `python -m module --host POD_IP --port PORT [container args]`
    port: int  # the real image's default port (the model may read an override from its env)

    hint = "labsim itself (an app model: nothing to install)"

    def bin_dir(self) -> Path:
        return Path(sys.executable).parent

    def prepare(self, fs: ContainerFS, image: str, env: dict[str, str]) -> list[tuple[list[str], bytes]]:
        return []

    def server(self, fs: ContainerFS, image: str, env: dict[str, str], pod_ip: str, args: list[str]) -> list[str]:
        return [sys.executable, "-m", self.module, "--host", pod_ip, "--port", str(self.port), "--", *args]
