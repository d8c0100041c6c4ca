"""Follow-ups on the labsim Kubernetes API, over the wire with real kubectl: batch pods must
not restart Always (the Job validation refuses it), a k3s restart is not a reboot (pods keep
running; a VM reboot restarts them), and the default StorageClass is marked as kubectl shows it."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml
from kubernetes import client

from labsim.lab import running_lab
from tests.labfiles import sim_config, write_lab
from tests.labsim.k3s_lab import K3sLab
from tests.labsim.kube_fixtures import TOOLS, RunningCluster
from tests.labsim.pveclient import token_client, wait_task
from tests.polling import wait_until

REQUIRED = 'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"'


def _job(name: str, restart_policy: str | None) -> str:
    spec: dict = {"containers": [{"name": "task", "image": "busybox:1.36", "command": ["true"]}]}
    if restart_policy is not None:
        spec["restartPolicy"] = restart_policy
    return yaml.safe_dump({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                           "spec": {"template": {"spec": spec}}})


def _cronjob(name: str) -> str:
    template = {"spec": {"containers": [{"name": "task", "image": "busybox:1.36"}]}}
    return yaml.safe_dump({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
                           "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}}})


def test_jobs_must_say_on_failure_or_never(kube: RunningCluster) -> None:
    missing = kube.kubectl("apply", "-f", "-", input=_job("no-policy", None), check=False)
    assert missing.returncode == 1
    assert f'The Job "no-policy" is invalid: {REQUIRED}' in missing.stderr
    always = kube.kubectl("create", "-f", "-", input=_job("always", "Always"), check=False)
    assert always.returncode == 1 and f'The Job "always" is invalid: {REQUIRED}' in always.stderr
    bogus = kube.kubectl("create", "-f", "-", input=_job("bogus", "Sometimes"), check=False)
    assert bogus.returncode == 1
    assert 'Unsupported value: "Sometimes": supported values: "OnFailure", "Never"' in bogus.stderr
    cron = kube.kubectl("apply", "-f", "-", input=_cronjob("nightly"), check=False)
    assert cron.returncode == 1
    assert f'The CronJob "nightly" is invalid: spec.jobTemplate.{REQUIRED}' in cron.stderr
    assert kube.kubectl("get", "jobs,cronjobs", "-o", "name").stdout == ""

    kube.kubectl("apply", "-f", "-", input=_job("once", "Never"))
    kube.kubectl("create", "job", "made-by-kubectl", "--image=busybox:1.36", "--", "true")  # kubectl says Never
    kube.kubectl("wait", "--for=condition=complete", "job/once", "job/made-by-kubectl", "--timeout=30s")


# --- on k3s installed over SSH ---------------------------------------------------------------------

@dataclass
class K3sPair:
    lab: K3sLab
    env: dict[str, str]
    core: client.CoreV1Api

    def kubectl(self, *args: str, input: str | None = None) -> str:
        path = TOOLS / "kubectl-1.34"
        if not path.exists():
            pytest.skip(f"{path} is not installed (make tools)")
        done = subprocess.run([str(path), *args], env=self.env, input=input, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, f"kubectl {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K3sPair]:
    """A k3s server and one agent, installed as a user installs them, and kubectl for them."""
    tmp = tmp_path_factory.mktemp("k3s-followups")
    lab_file = write_lab(tmp, workers=1)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server(flags="--disable=traefik,metrics-server").exit_status == 0
        token = lab.ok(0, "sudo cat /var/lib/rancher/k3s/server/node-token").strip()
        assert lab.install_agent(1, token).exit_status == 0
        kubeconfig = lab.kubeconfig(tmp)
        (tmp / "home").mkdir()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp / "home")}
        yield K3sPair(lab, env, client.CoreV1Api(lab.kube(tmp)))


def test_kubectl_marks_the_default_storage_class(pair: K3sPair) -> None:
    pair.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "slow"},
        "provisioner": "rancher.io/local-path"}))
    rows = [line.split() for line in pair.kubectl("get", "storageclass").splitlines()]
    assert rows[0][:3] == ["NAME", "PROVISIONER", "RECLAIMPOLICY"]
    names = {" ".join(r[:2]) if r[1] == "(default)" else r[0]: r for r in rows[1:]}
    assert set(names) == {"local-path (default)", "slow"}
    assert names["local-path (default)"][2:5] == ["rancher.io/local-path", "Delete", "WaitForFirstConsumer"]
    assert pair.kubectl("get", "storageclass", "local-path", "-o", "name") == "storageclass.storage.k8s.io/local-path\n"


def _container(core: client.CoreV1Api, name: str) -> tuple[str, int] | None:
    """(containerID, restartCount) of a Running, Ready pod."""
    pod = core.read_namespaced_pod(name, "default")
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    if pod.status.phase != "Running" or not ready or not pod.status.container_statuses:
        return None
    status = pod.status.container_statuses[0]
    return status.container_id, status.restart_count


def _node(core: client.CoreV1Api, name: str) -> tuple[bool, str]:
    node = core.read_node(name)
    ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    return ready, node.status.node_info.boot_id


def test_restarting_k3s_agent_keeps_pods_a_reboot_restarts_them(pair: K3sPair) -> None:
    lab, core, worker = pair.lab, pair.core, pair.lab.name(1)
    core.create_namespaced_pod("default", client.V1Pod(
        metadata=client.V1ObjectMeta(name="steady"),
        spec=client.V1PodSpec(node_name=worker, containers=[client.V1Container(name="web", image="nginx:1.27")])))
    first = wait_until(lambda: _container(core, "steady"))
    boot = lab.ok(1, "cat /proc/sys/kernel/random/boot_id").strip()
    assert _node(core, worker) == (True, boot)  # the kubelet reports the machine's boot ID

    lab.ok(1, "sudo systemctl restart k3s-agent")
    assert lab.ok(1, "systemctl is-active k3s-agent") == "active\n"
    wait_until(lambda: _node(core, worker) == (True, boot))
    wait_until(lambda: _container(core, "steady"))
    time.sleep(0.5)  # room for a restart the kubelet should not make
    assert _container(core, "steady") == first

    api = token_client(lab.status)
    vmid = lab.doc["nodes"][1]["vmid"]
    assert wait_task(api, api.nodes("pve").qemu(vmid).status.reboot.post())["exitstatus"] == "OK"
    rebooted = wait_until(lambda: (n := _node(core, worker))[0] and n[1] != boot and n[1])
    after = wait_until(lambda: (c := _container(core, "steady")) and c != first and c)
    assert after[0] != first[0] and after[1] == first[1] + 1
    lab.status = lab.handle.status()
    assert lab.ok(1, "cat /proc/sys/kernel/random/boot_id").strip() == rebooted
