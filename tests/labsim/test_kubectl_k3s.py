"""End to end: k3s installed over SSH on three simulated VMs as a user installs it, then real
kubectl (1.34 and 1.32) and helm 4 with the kubeconfig fetched from the server."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from labsim.lab import running_lab
from tests.labfiles import sim_config, write_lab
from tests.labsim.k3s_lab import K3sLab
from tests.labsim.kube_fixtures import TOOLS
from tests.labsim.test_helm import CHART
from tests.labsim.test_kubectl import APP


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[K3sLab, dict]]:
    tmp = tmp_path_factory.mktemp("k3s-kubectl")
    lab_file = write_lab(tmp)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server(flags="--disable=servicelb --tls-san k3s-master").exit_status == 0
        token = lab.ok(0, "sudo cat /var/lib/rancher/k3s/server/node-token").strip()
        for index in (1, 2):
            assert lab.install_agent(index, token).exit_status == 0
        kubeconfig = lab.kubeconfig(tmp)
        (tmp / "home").mkdir()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp / "home"),
               "HELM_CACHE_HOME": str(tmp / "helm"), "HELM_CONFIG_HOME": str(tmp / "helm"),
               "HELM_DATA_HOME": str(tmp / "helm")}
        yield lab, env


def _run(env: dict, binary: str, *args: str, input: str | None = None, check: bool = True):
    path = TOOLS / binary
    if not path.exists():
        pytest.skip(f"{path} is not installed (make tools)")
    done = subprocess.run([str(path), *args], env=env, input=input, capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"{binary} {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.parametrize("version", ["1.34", "1.32"])
def test_kubectl_on_k3s_installed_over_ssh(cluster, version: str) -> None:
    lab, env = cluster
    kubectl = f"kubectl-{version}"
    rows = _run(env, kubectl, "get", "nodes", "-o", "wide").stdout.splitlines()[1:]
    assert sorted(r.split()[0] for r in rows) == ["k3s-master", "k3s-worker-01", "k3s-worker-02"]
    assert all(r.split()[1] == "Ready" and r.split()[4] == "v1.34.3+k3s1" for r in rows)
    ns = f"app-{version.replace('.', '')}"
    _run(env, kubectl, "create", "namespace", ns)
    _run(env, kubectl, "-n", ns, "apply", "-f", "-", input=APP)
    _run(env, kubectl, "-n", ns, "rollout", "status", "deploy/web", "--timeout=60s")
    _run(env, kubectl, "-n", ns, "wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=60s")
    system = _run(env, kubectl, "get", "pods", "-A", "-o", "wide").stdout
    assert "coredns" in system and ns in system
    pods = json.loads(_run(env, kubectl, "-n", ns, "get", "pods", "-o", "json").stdout)["items"]
    assert {p["status"]["phase"] for p in pods} == {"Running"}
    _run(env, kubectl, "-n", ns, "delete", "-f", "-", input=APP)
    _run(env, kubectl, "delete", "namespace", ns)


def test_helm_on_k3s_installed_over_ssh(cluster, tmp_path: Path) -> None:
    _, env = cluster
    for name, text in CHART.items():
        (tmp_path / "hello" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "hello" / name).write_text(text)
    _run(env, "helm4", "install", "hello", str(tmp_path / "hello"), "--wait", "--timeout", "60s")
    releases = json.loads(_run(env, "helm4", "list", "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("hello", "deployed")]
    _run(env, "helm4", "uninstall", "hello", "--wait")
