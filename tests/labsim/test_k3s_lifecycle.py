"""k3s across the lab's life: a lab restart resumes the server (the enabled unit starts at boot
and serves the same cluster), and k3s-uninstall.sh takes the cluster away so that a new install
starts a fresh one."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client

from labsim.lab import running_lab
from tests.labfiles import sim_config, write_lab
from tests.labsim.k3s_lab import K3sLab, nodes
from tests.labsim.test_k3s_cluster import _alive, _answer, _load_balancer, _nginx_pod, _pid, _serving
from tests.polling import wait_until


def _configmaps(kube: client.ApiClient) -> set[str]:
    return {c.metadata.name for c in client.CoreV1Api(kube).list_namespaced_config_map("default").items}


def test_lab_restart_resumes_the_k3s_server(tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, workers=0)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server(flags="--cluster-init").exit_status == 0
        kube = lab.kube(tmp_path)
        client.CoreV1Api(kube).create_namespaced_config_map("default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="survivor"), data={"k": "v"}))
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab(handle, lab.doc, handle.status())
        assert lab.ok(0, "systemctl is-active k3s") == "active\n"
        assert lab.ok(0, "journalctl -u k3s --no-pager").count("Starting k3s v") == 2
        unreadable = lab.ssh(0, "kubectl get nodes")  # k3s.yaml is 0600 by default: root only
        assert unreadable.exit_status == 1 and "k3s.yaml: permission denied" in unreadable.stderr
        kube = lab.kube(tmp_path)
        assert "survivor" in _configmaps(kube)
        assert nodes(kube)[lab.name(0)]["ready"]


def test_uninstalling_the_server_removes_k3s_and_its_cluster(tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, workers=0)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server().exit_status == 0
        client.CoreV1Api(lab.kube(tmp_path)).create_namespaced_config_map("default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="old-cluster")))
        removed = lab.ssh(0, "k3s-uninstall.sh")  # re-runs itself with sudo, as k3s' script does
        assert removed.exit_status == 0
        assert "Removed /etc/systemd/system/multi-user.target.wants/k3s.service." in removed.stderr
        for path in ("/usr/local/bin/k3s", "/usr/local/bin/kubectl", "/etc/rancher/k3s", "/var/lib/rancher/k3s",
                     "/etc/systemd/system/k3s.service"):
            assert lab.ssh(0, f"test -e {path}").exit_status == 1, path
        with pytest.raises(OSError):
            ssl.get_server_certificate((lab.ip(0), 6443), timeout=2)
        assert lab.install_server().exit_status == 0
        assert "old-cluster" not in _configmaps(lab.kube(tmp_path))


def test_servicelb_gives_load_balancers_the_node_addresses(tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, workers=0)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server().exit_status == 0
        kube = lab.kube(tmp_path)
        _load_balancer(kube, "web")
        core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
        uid = core.read_namespaced_service("web", "default").metadata.uid
        daemonset = wait_until(lambda: apps.list_namespaced_daemon_set(
            "kube-system", label_selector="svccontroller.k3s.cattle.io/svcname=web").items)[0]
        assert daemonset.metadata.name == f"svclb-web-{uid[:8]}"
        ports = daemonset.spec.template.spec.containers[0].ports
        assert [(p.container_port, p.host_port) for p in ports] == [(8080, 8080)]
        ingress = wait_until(lambda: core.read_namespaced_service("web", "default").status.load_balancer.ingress)
        assert [i.ip for i in ingress] == [lab.ip(0)]
        core.delete_namespaced_service("web", "default")
        wait_until(lambda: not apps.list_namespaced_daemon_set(
            "kube-system", label_selector="svccontroller.k3s.cattle.io/svcname=web").items)


def test_installer_from_a_file_with_install_k3s_exec_and_its_refusals(tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, workers=0)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        no_token = lab.ssh(0, "curl -sfL https://get.k3s.io | K3S_URL=https://10.0.0.1:6443 sh -")
        assert no_token.exit_status == 1 and "K3S_TOKEN or K3S_TOKEN_FILE is not defined" in no_token.stderr
        plain = lab.ssh(0, "curl -sfL https://get.k3s.io | K3S_URL=http://10.0.0.1:6443 K3S_TOKEN=x sh -")
        assert plain.exit_status == 1 and "Only https:// URLs are supported for K3S_URL" in plain.stderr
        bad = lab.ssh(0, "curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION=v1.34 sh -")
        assert bad.exit_status == 1 and "[ERROR]  Download failed" in bad.stderr
        lab.ok(0, "curl -sfL https://get.k3s.io -o /tmp/k3s-install.sh")
        done = lab.ssh(0, "INSTALL_K3S_EXEC='server --cluster-init' sudo -E sh /tmp/k3s-install.sh --disable traefik")
        assert done.exit_status == 0, done
        assert "ExecStart=/usr/local/bin/k3s \\\n\tserver \\\n\t--cluster-init \\\n\t--disable \\\n\ttraefik" in \
            lab.ok(0, "cat /etc/systemd/system/k3s.service")
        assert "traefik.yaml" not in lab.ok(0, "sudo ls /var/lib/rancher/k3s/server/manifests")
        assert "saved." in lab.ssh(0, "sudo k3s etcd-snapshot save").stderr  # --cluster-init: embedded etcd


def test_a_restart_reads_the_configuration_again(tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, workers=0)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server(env="K3S_KUBECONFIG_MODE=644").exit_status == 0
        assert lab.ok(0, "stat -c %a /etc/rancher/k3s/k3s.yaml").strip() == "644"  # kept in k3s.service.env
        lab.ok(0, "printf 'token: another-token\\nfoo-bar: 1\\n' | sudo tee /etc/rancher/k3s/config.yaml")
        failed = lab.ssh(0, "sudo systemctl restart k3s")
        assert failed.exit_status == 1 and "Job for k3s.service failed" in failed.stderr
        journal = lab.ok(0, "journalctl -u k3s -n 20 --no-pager")
        assert "Unknown flag --foo-bar found in config.yaml, skipping" in journal
        assert "level=fatal" in journal and "bootstrap data already found and encrypted with different token" in journal
        with pytest.raises(OSError):  # the failed unit serves nothing
            ssl.get_server_certificate((lab.ip(0), 6443), timeout=2)
        lab.ok(0, "sudo rm /etc/rancher/k3s/config.yaml")
        lab.ok(0, "sudo systemctl restart k3s")  # the token k3s made at the first start is kept
        assert nodes(lab.kube(tmp_path))[lab.name(0)]["ready"]


def test_k3s_takes_its_pod_and_service_networks_from_its_flags_and_refuses_what_the_twin_cannot_bind(
        tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, workers=0)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        refused = lab.install_server(flags="--cluster-cidr=10.42.0.0/16")
        assert refused.exit_status != 0
        journal = lab.ok(0, "journalctl -u k3s -n 5 --no-pager")
        assert "level=fatal" in journal and "cluster-cidr 10.42.0.0/16 is not inside 127.0.0.0/8" in journal
        pods, services = ipaddress.ip_network(lab.doc["k3s"]["cluster_cidr"]), ipaddress.ip_network(
            lab.doc["k3s"]["service_cidr"])
        # Other networks than the lab file's (its defaults for the twin): halves of the same ranges.
        pod_half, service_half = next(pods.subnets()), list(services.subnets())[1]
        assert lab.install_server(flags=f"--cluster-cidr={pod_half} --service-cidr={service_half}").exit_status == 0
        core = client.CoreV1Api(lab.kube(tmp_path))
        (node,) = core.list_node().items
        assert ipaddress.ip_network(node.spec.pod_cidr) == next(pod_half.subnets(new_prefix=24))
        assert core.read_namespaced_service("kubernetes", "default").spec.cluster_ip == str(service_half[1])
        assert core.read_namespaced_service("kube-dns", "kube-system").spec.cluster_ip == str(service_half[10])


def test_a_snapshot_restores_onto_a_fresh_server(tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, workers=1)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server(flags="--cluster-init").exit_status == 0
        client.CoreV1Api(lab.kube(tmp_path)).create_namespaced_config_map("default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="from-production")))
        lab.ok(0, "sudo k3s etcd-snapshot save --name drill")
        path = lab.ok(0, "sudo k3s etcd-snapshot ls").splitlines()[1].split()[1].removeprefix("file://")
        copy = lab.ok(0, f"sudo base64 {path}")
        lab.ok(1, "base64 -d | sudo tee /tmp/drill >/dev/null", input=copy)
        assert lab.ssh(1, "curl -sfL https://get.k3s.io | INSTALL_K3S_SKIP_START=true sh -s - server "
                          "--cluster-init").exit_status == 0
        assert lab.ssh(1, "systemctl is-active k3s").stdout == "inactive\n"
        reset = lab.ssh(1, "sudo k3s server --cluster-reset --cluster-reset-restore-path=/tmp/drill")
        assert reset.exit_status == 0, reset
        lab.ok(1, "sudo systemctl start k3s")
        scratch = lab.kube(tmp_path, index=1)
        assert "from-production" in _configmaps(scratch)
        assert lab.name(1) in nodes(scratch)


@contextmanager
def _server_and_agent(tmp_path: Path) -> Iterator[tuple[K3sLab, str]]:
    """A one-agent lab, k3s installed on its server and the agent joined; and the join token."""
    lab_file = write_lab(tmp_path, workers=1)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server().exit_status == 0
        token = lab.ok(0, "sudo cat /var/lib/rancher/k3s/server/node-token").strip()
        assert lab.install_agent(1, token).exit_status == 0
        yield lab, token


def test_a_reinstalled_agent_is_rejected_until_its_node_is_deleted(tmp_path: Path) -> None:
    with _server_and_agent(tmp_path) as (lab, token):
        lab.ok(1, "sudo k3s-agent-uninstall.sh")  # /etc/rancher/node/password goes with it
        kube = lab.kube(tmp_path)
        assert not nodes(kube)[lab.name(1)]["ready"]  # the Node stays behind, as on k3s
        assert lab.install_agent(1, token).exit_status == 1
        assert "Node password rejected" in lab.ok(1, "journalctl -u k3s-agent -n 3 --no-pager")
        client.CoreV1Api(kube).delete_node(lab.name(1))
        wait_until(lambda: lab.install_agent(1, token).exit_status == 0)
        assert nodes(kube)[lab.name(1)]["ready"]
        client.CoreV1Api(kube).delete_node(lab.name(1))
        lab.ok(1, "sudo systemctl stop k3s-agent")  # a running unit whose Node is gone still stops cleanly


def test_an_agent_waits_for_its_server_to_come_up(tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, workers=1)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server().exit_status == 0
        token = lab.ok(0, "sudo cat /var/lib/rancher/k3s/server/node-token").strip()
        lab.ok(0, "sudo systemctl stop k3s")

        async def join_while_the_server_starts() -> int:
            agent = asyncio.create_task(lab.ssh_async(1, f"curl -sfL https://get.k3s.io | K3S_URL=https://"
                                                         f"{lab.ip(0)}:6443 K3S_TOKEN={token} sh -s - agent"))
            while "connection refused" not in (await lab.ssh_async(1, "journalctl -u k3s-agent")).stdout:
                await asyncio.sleep(0.01)
            assert (await lab.ssh_async(0, "sudo systemctl start k3s")).exit_status == 0
            return (await agent).exit_status

        assert asyncio.run(join_while_the_server_starts()) == 0
        assert nodes(lab.kube(tmp_path))[lab.name(1)]["ready"]


def test_killall_stops_its_nodes_containers_and_a_lab_stop_all_of_them_with_k3s_stopped(tmp_path: Path) -> None:
    """Stopping k3s leaves the containers running (KillMode=process); k3s-killall.sh stops those of
    its node only, and the lab stopping stops the rest, though k3s is stopped: no process is left."""
    with _server_and_agent(tmp_path) as (lab, _):
        core = client.CoreV1Api(lab.kube(tmp_path))
        for index in (0, 1):
            _nginx_pod(core, f"web-{index}", lab.name(index))
        pods = [wait_until(lambda index=index: _serving(core, f"web-{index}"), timeout=30) for index in (0, 1)]
        server, agent = (wait_until(lambda pod=pod: _pid(lab, pod.metadata.uid, "nginx")) for pod in pods)
        lab.ok(1, "sudo k3s-killall.sh")
        assert lab.ok(1, "systemctl is-active k3s-agent || true") == "inactive\n"
        wait_until(lambda: not _alive(agent), timeout=30)
        assert _alive(server) and _answer(f"http://{pods[0].status.pod_ip}/") == 200
        lab.ok(0, "sudo systemctl stop k3s")
        assert _alive(server)
    assert not _alive(server)
    assert not list(Path(lab.doc["embedded"]["state_dir"]).rglob("run/*.pid"))
