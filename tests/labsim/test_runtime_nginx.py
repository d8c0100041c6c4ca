"""An nginx pod is Debian's real nginx (.tools/nginx): the image's default page, a site from a
ConfigMap serving files written through `kubectl exec`, on the pod IP; its access log is the
container's log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from labsim.runtime import programs
from labsim.runtime.programs import nginx
from tests.labsim.kube_fixtures import TOOLS, RunningCluster
from tests.polling import wait_until

pytestmark = pytest.mark.skipif(nginx.bin_dir() is None, reason="nginx is not installed (make tools)")

DOC = """
apiVersion: v1
kind: ConfigMap
metadata: {name: site}
data:
  default.conf: |
    server {
      listen 8080;
      location / { root /srv/www; }
      location /health { return 200 "ok\\n"; }
    }
---
apiVersion: v1
kind: Pod
metadata: {name: site}
spec:
  containers:
  - name: nginx
    image: nginx:1.27
    volumeMounts: [{name: site, mountPath: /etc/nginx/conf.d}, {name: www, mountPath: /srv/www}]
  volumes: [{name: site, configMap: {name: site}}, {name: www, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: stock}
spec:
  containers: [{name: nginx, image: nginx}]
"""


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except OSError as exc:
        return 0, str(exc)


def test_nginx_pods_serve_on_their_pod_ips(shared_kube: RunningCluster) -> None:
    kube = shared_kube
    kube.kubectl("apply", "-f", "-", input=DOC)
    ips = wait_until(lambda: (found := {p["metadata"]["name"]: p["status"].get("podIP") for p in json.loads(
        kube.kubectl("get", "pods", "-o", "json").stdout)["items"]}) and all(found.values()) and found, timeout=30)
    assert wait_until(lambda: _get(f"http://{ips['site']}:8080/health"), timeout=30) == (200, "ok\n")
    kube.kubectl("exec", "site", "--", "sh", "-c", "echo '<h1>from exec</h1>' > /srv/www/index.html")
    assert _get(f"http://{ips['site']}:8080/") == (200, "<h1>from exec</h1>\n")
    status, page = wait_until(lambda: (answer := _get(f"http://{ips['stock']}/"))[0] and answer, timeout=30)
    assert status == 200 and "Welcome to nginx!" in page
    assert '"GET /health HTTP/1.1" 200' in kube.kubectl("logs", "site").stdout

    # kill -9 of the master: its workers go with it, as a container's processes do with its cgroup.
    uid = json.loads(kube.kubectl("get", "pod", "site", "-o", "json").stdout)["metadata"]["uid"]
    master = json.loads((kube.cluster.state_dir / "run" / f"{uid}.nginx.pid").read_text())["pid"]
    assert _group(master) != [master]  # the workers, in the container's process group
    os.kill(master, signal.SIGKILL)
    assert wait_until(lambda: not _group(master), timeout=10) is True


def _group(pgid: int) -> list[int]:
    """The processes of a process group (a container's)."""
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(p) == pgid]


def _pgid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: front}
spec:
  replicas: 1
  selector: {matchLabels: {app: front}}
  template:
    metadata: {labels: {app: front}}
    spec:
      containers: [{name: nginx, image: nginx:1.27, ports: [{containerPort: 80}]}]
"""


@pytest.mark.parametrize("version", ["1.32", "1.34"])
def test_kubectl_port_forward_to_a_deployment(shared_kube: RunningCluster, version: str) -> None:
    kube = shared_kube
    kube.kubectl("apply", "-f", "-", input=DEPLOYMENT)
    kube.kubectl("rollout", "status", "deploy/front", "--timeout=60s")
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "HOME": str(kube.home)}
    forward = subprocess.Popen([str(TOOLS / f"kubectl-{version}"), "port-forward", "deploy/front", ":80"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert forward.stdout is not None
        local = forward.stdout.readline().split(":")[1].split()[0]
        status, page = wait_until(lambda: (answer := _get(f"http://127.0.0.1:{local}/"))[0] and answer, timeout=30)
        assert status == 200 and "Welcome to nginx!" in page
    finally:
        forward.terminate()
        forward.wait(10)


def test_privileged_port_without_root_fails_only_that_pod(shared_kube: RunningCluster,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """labsim not root and net.ipv4.ip_unprivileged_port_start at 1024: nginx's `listen 80` cannot
    bind, so the pod fails with the fix in its event; the pods already running run on."""
    kube = shared_kube
    kube.kubectl("apply", "-f", "-", input=DOC)
    stock_ip = wait_until(lambda: json.loads(kube.kubectl("get", "pod", "stock", "-o", "json").stdout)["status"]
                          .get("podIP"), timeout=30)
    monkeypatch.setattr(programs, "lowest_bindable_port", lambda: 1024)
    kube.kubectl("run", "low", "--image=nginx:1.27")

    def waiting() -> dict:
        pod = json.loads(kube.kubectl("get", "pod", "low", "-o", "json").stdout)
        return ((pod["status"].get("containerStatuses") or [{}])[0].get("state") or {}).get("waiting") or {}

    state = wait_until(lambda: (w := waiting()).get("reason") == "CreateContainerError" and w, timeout=30)
    fix = ("nginx:1.27 listens on port 80, below net.ipv4.ip_unprivileged_port_start (1024), and labsim does not run "
           "as root: run labsim as root, or set sysctl net.ipv4.ip_unprivileged_port_start=80")
    assert state["message"] == fix
    events = json.loads(kube.kubectl("get", "events", "--field-selector", "involvedObject.name=low", "-o",
                                     "json").stdout)["items"]
    assert ("Warning", "Failed", f"Error: {fix}") in [(e["type"], e["reason"], e["message"]) for e in events]
    assert kube.cluster.api_running
    assert wait_until(lambda: _get(f"http://{stock_ip}/"), timeout=30)[0] == 200  # the lab runs on
    kube.kubectl("delete", "pod", "low", "--wait=false")
