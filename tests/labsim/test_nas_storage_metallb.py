"""The NAS, the NFS provisioner and MetalLB over the wire: the NAS over SSH (as the operator
reaches a Synology) and over real NFSv4 (nfs-ganesha, listed with libnfs' nfs-ls); the charts
installed through k3s' HelmChart; a PVC on nfs-client binds to a folder of the NAS export that
pods on two nodes share; release archives (or deletes) it; a NAS that does not answer fails
provisioning with the provisioner's event; MetalLB hands out pool addresses (requested one,
exhausted pool) and the address answers from this machine; its webhook refuses a bad pool.

The tests share one lab (server + one agent, ServiceLB off) and run in order."""

from __future__ import annotations

import asyncio
import os
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
import requests
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from labsim.lab import running_lab
from labsim.nas import ganesha
from tests.labfiles import sim_config, write_lab
from tests.labsim.k3s_lab import K3sLab
from tests.polling import wait_until

NFS_VALUES = {"nfs": {"server": None, "path": "/volume1/k8s-data", "mountOptions": ["nfsvers=4.1"]},
              "storageClass": {"name": "nfs-client", "defaultClass": True, "reclaimPolicy": "Delete",
                               "archiveOnDelete": True}}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K3sLab]:
    tmp = tmp_path_factory.mktemp("nas")
    lab_file = write_lab(tmp, workers=1)
    with running_lab(sim_config(lab_file)) as handle:
        k3s = K3sLab.boot(handle, lab_file)
        assert k3s.install_server(flags="--disable servicelb").exit_status == 0
        token = k3s.ok(0, "sudo cat /var/lib/rancher/k3s/server/node-token").strip()
        assert k3s.install_agent(1, token).exit_status == 0
        yield k3s


@pytest.fixture(scope="module")
def api(lab: K3sLab, tmp_path_factory: pytest.TempPathFactory) -> client.ApiClient:
    api = lab.kube(tmp_path_factory.mktemp("kubeconfig"))
    core = client.CoreV1Api(api)
    wait_until(lambda: len([n for n in core.list_node().items
                            if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)]) == 2, 60)
    return api


def nas_ssh(lab: K3sLab, command: str) -> asyncssh.SSHCompletedProcess:
    nas, key = lab.handle.status()["nas"], lab.status["ssh"]["private_key"]

    async def run() -> asyncssh.SSHCompletedProcess:
        async with asyncssh.connect(nas["ip"], port=nas["ssh_port"], username=nas["user"], client_keys=[key],
                                    known_hosts=None) as conn:
            return await conn.run(command, check=False)
    return asyncio.run(run())


def nfs_ls(lab: K3sLab, folder: str = "") -> str:
    nas, root = lab.handle.status()["nas"], ganesha.install_dir()
    libs = f"{root}/usr/lib/x86_64-linux-gnu:{root}/lib/x86_64-linux-gnu"
    done = subprocess.run([str(root / "usr/bin/nfs-ls"), f"nfs://{nas['ip']}{nas['export']}{folder}?version=4"],
                          env={**os.environ, "LD_LIBRARY_PATH": libs}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def install_chart(api: client.ApiClient, name: str, namespace: str, version: str, values: dict) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object("helm.cattle.io", "v1", "kube-system", "helmcharts", {
        "apiVersion": "helm.cattle.io/v1", "kind": "HelmChart", "metadata": {"name": name, "namespace": "kube-system"},
        "spec": {"chart": name, "version": version, "targetNamespace": namespace, "createNamespace": True,
                 "valuesContent": yaml.safe_dump(values)}})


def rolled_out(api: client.ApiClient, namespace: str, name: str, kind: str = "Deployment") -> bool:
    apps = client.AppsV1Api(api)
    try:
        if kind == "Deployment":
            status = apps.read_namespaced_deployment(name, namespace).status
            return bool(status and status.available_replicas)
        status = apps.read_namespaced_daemon_set(name, namespace).status
        return bool(status and status.number_ready)
    except ApiException:
        return False


def events(core: client.CoreV1Api, namespace: str, name: str) -> list[tuple[str, str]]:
    found = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [(e.reason, e.message) for e in found]


# -- the NAS --------------------------------------------------------------------------------------

def test_the_nas_answers_ssh_with_its_export_and_serves_it_over_nfs(lab: K3sLab) -> None:
    assert ganesha.missing() is None, f"the NAS's real NFS server cannot run: {ganesha.missing()} (run `make programs`)"
    nas = lab.handle.status()["nas"]
    assert nas["nfs"] == f"{nas['ip']}:2049"
    done = nas_ssh(lab, f"ls -ld {nas['export']} && cat /etc.defaults/VERSION && echo hello > {nas['export']}/hello.txt")
    assert done.exit_status == 0, done.stderr
    assert done.stdout.startswith("drwxrwxrwx") and 'productversion="7.2.2"' in done.stdout
    listing = nfs_ls(lab)
    assert "hello.txt" in listing
    # The host key is the NAS's own and stays the same: clients pin it like the nodes'.
    keys = {asyncio.run(asyncssh.get_server_host_key(nas["ip"], nas["ssh_port"])).export_public_key() for _ in range(2)}
    assert len(keys) == 1


def test_the_admin_endpoint_takes_the_nas_down_and_back(lab: K3sLab) -> None:
    """A detached lab's NAS fault, through labsim's admin endpoint; OpenSSH and nfs-ls see it."""
    status, nas = lab.handle.status(), lab.handle.status()["nas"]
    base, ca = status["pve"]["url"] + "/labsim/faults", status["pve"]["ca_file"]
    token = {"Authorization": f"PVEAPIToken={status['pve']['token_id']}={status['pve']['token_secret']}"}

    def ssh() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-i", status["ssh"]["private_key"], "-p", str(nas["ssh_port"]), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
             f"{nas['user']}@{nas['ip']}", "ls /volume1"], capture_output=True, text=True, timeout=30)
    answer = requests.post(base, json={"fault": "nas_down"}, headers=token, verify=ca, timeout=10)
    assert answer.status_code == 200 and answer.json()["data"]["nas_down"] is True
    refused = ssh()
    assert refused.returncode == 255 and "Connection refused" in refused.stderr
    with pytest.raises(AssertionError):
        nfs_ls(lab)  # nfs-ganesha is down too
    assert requests.delete(base, headers=token, verify=ca, timeout=10).status_code == 200
    assert wait_until(lambda: ssh().stdout, 30) == "k8s-data\n"
    assert "hello.txt" in wait_until(lambda: _listing_or_empty(lab), 30)


def _listing_or_empty(lab: K3sLab) -> str:
    try:
        return nfs_ls(lab)
    except AssertionError:
        return ""


def test_a_node_with_nfs_common_lists_the_nas_exports(lab: K3sLab) -> None:
    nas = lab.handle.status()["nas"]
    before = lab.ssh(1, f"showmount -e {nas['ip']}")
    assert before.exit_status == 127 and "showmount: command not found" in before.stderr
    lab.ok(1, "sudo apt-get install -y nfs-common")
    assert lab.ok(1, "which showmount").strip() == "/usr/sbin/showmount"
    assert lab.ok(1, f"showmount -e {nas['ip']}") == f"Export list for {nas['ip']}:\n/volume1/k8s-data *\n"


# -- the NFS provisioner --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nfs(lab: K3sLab, api: client.ApiClient) -> client.CoreV1Api:
    values = {**NFS_VALUES, "nfs": {**NFS_VALUES["nfs"], "server": lab.handle.status()["nas"]["ip"]}}
    install_chart(api, "nfs-subdir-external-provisioner", "infra", "4.0.18", values)
    wait_until(lambda: rolled_out(api, "infra", "nfs-subdir-external-provisioner"), 60)
    return client.CoreV1Api(api)


def claim(core: client.CoreV1Api, name: str, namespace: str = "default") -> None:
    core.create_namespaced_persistent_volume_claim(namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})


def bound(core: client.CoreV1Api, name: str) -> client.V1PersistentVolumeClaim | None:
    pvc = core.read_namespaced_persistent_volume_claim(name, "default")
    return pvc if pvc.status.phase == "Bound" else None


def pod_on(core: client.CoreV1Api, name: str, node: str, claim_name: str, command: str) -> None:
    core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "restartPolicy": "Never",
                 "containers": [{"name": "sh", "image": "busybox", "command": ["sh", "-c", command],
                                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}]}})


def succeeded(core: client.CoreV1Api, name: str) -> bool:
    return core.read_namespaced_pod(name, "default").status.phase == "Succeeded"


def test_the_chart_gives_the_default_class_and_the_provisioner_pod(lab: K3sLab, nfs: client.CoreV1Api) -> None:
    sc = client.StorageV1Api(nfs.api_client).read_storage_class("nfs-client")
    assert sc.metadata.annotations["storageclass.kubernetes.io/is-default-class"] == "true"
    assert sc.provisioner == "cluster.local/nfs-subdir-external-provisioner"
    assert sc.parameters == {"archiveOnDelete": "true"} and sc.reclaim_policy == "Delete"
    assert sc.mount_options == ["nfsvers=4.1"]
    pods = nfs.list_namespaced_pod("infra", label_selector="app=nfs-subdir-external-provisioner,"
                                                           "release=nfs-subdir-external-provisioner").items
    assert [p.status.phase for p in pods] == ["Running"]
    assert client.StorageV1Api(nfs.api_client).read_storage_class("local-path").provisioner == "rancher.io/local-path"


def test_kubectl_shows_the_default_class_and_the_provisioner_pod(lab: K3sLab, nfs: client.CoreV1Api,
                                                                  tmp_path: Path) -> None:
    kubeconfig = lab.kubeconfig(tmp_path)

    def kubectl(*args: str) -> str:
        done = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout
    classes = {line.split()[0]: line for line in kubectl("get", "sc").splitlines()[1:]}
    assert classes["nfs-client"].split()[:3] == ["nfs-client", "(default)", "cluster.local/nfs-subdir-external-provisioner"]
    # k3s' local-path keeps its own default annotation (k3s re-applies its manifest): two defaults, as on a real
    # k3s, until k3s runs with `--disable local-storage`; a claim without a class gets the newest, nfs-client.
    assert classes["local-path"].split()[:2] == ["local-path", "(default)"]
    pods = [line.split()[:2] for line in kubectl("get", "pods", "-A").splitlines()[1:]]
    assert any(ns == "infra" and name.startswith("nfs-subdir-external-provisioner-") for ns, name in pods)


def test_a_claim_binds_to_a_nas_folder_shared_by_pods_on_two_nodes(lab: K3sLab, nfs: client.CoreV1Api) -> None:
    claim(nfs, "shared")
    pvc = wait_until(lambda: bound(nfs, "shared"), 30)
    assert pvc.spec.storage_class_name == "nfs-client"
    pv = nfs.read_persistent_volume(pvc.spec.volume_name)
    folder = f"default-shared-{pv.metadata.name}"
    assert pv.spec.nfs.server == lab.handle.status()["nas"]["ip"]
    assert pv.spec.nfs.path == f"/volume1/k8s-data/{folder}"
    assert pv.spec.mount_options == ["nfsvers=4.1"] and pv.spec.persistent_volume_reclaim_policy == "Delete"
    assert ("ProvisioningSucceeded", f"Successfully provisioned volume {pv.metadata.name}") in events(nfs, "default", "shared")
    pod_on(nfs, "writer", lab.name(1), "shared", "echo written-on-worker > /data/note.txt")
    wait_until(lambda: succeeded(nfs, "writer"), 30)
    pod_on(nfs, "reader", lab.name(0), "shared", "cat /data/note.txt")
    wait_until(lambda: succeeded(nfs, "reader"), 30)
    assert nfs.read_namespaced_pod_log("reader", "default").strip() == "written-on-worker"
    seen = nas_ssh(lab, f"ls /volume1/k8s-data && cat /volume1/k8s-data/{folder}/note.txt")
    assert folder in seen.stdout.split() and "written-on-worker" in seen.stdout
    usage = nas_ssh(lab, f"du -sb /volume1/k8s-data/{folder}").stdout  # the export's usage, from the NAS
    assert usage.endswith(f"\t/volume1/k8s-data/{folder}\n") and int(usage.split()[0]) >= len("written-on-worker\n")
    assert "note.txt" in nfs_ls(lab, f"/{folder}")


def test_a_full_nas_fails_what_pods_write_into_the_export(lab: K3sLab, nfs: client.CoreV1Api) -> None:
    """The admin endpoint's nas_full: a pod's write into its NFS volume fails with ENOSPC (the file
    is created, nothing lands in it), as on a NAS out of space; cleared, the same write works."""
    status = lab.handle.status()
    base, ca = status["pve"]["url"] + "/labsim/faults", status["pve"]["ca_file"]
    token = {"Authorization": f"PVEAPIToken={status['pve']['token_id']}={status['pve']['token_secret']}"}
    answer = requests.post(base, json={"fault": "nas_full"}, headers=token, verify=ca, timeout=10)
    assert answer.status_code == 200 and answer.json()["data"]["nas_full"] is True
    try:
        pod_on(nfs, "filler", lab.name(1), "shared", "echo more > /data/full.txt; echo status $?")
        wait_until(lambda: succeeded(nfs, "filler"), 30)
        log = nfs.read_namespaced_pod_log("filler", "default")
        assert "/data/full.txt: No space left on device" in log and "status 1" in log
        assert nas_ssh(lab, "cat /volume1/k8s-data/default-shared-*/full.txt").stdout == ""
    finally:
        assert requests.delete(base, headers=token, verify=ca, timeout=10).status_code == 200
    pod_on(nfs, "refiller", lab.name(1), "shared", "echo more > /data/full.txt")
    wait_until(lambda: succeeded(nfs, "refiller"), 30)
    assert nas_ssh(lab, "cat /volume1/k8s-data/default-shared-*/full.txt").stdout == "more\n"
    for name in ("filler", "refiller"):
        nfs.delete_namespaced_pod(name, "default", grace_period_seconds=0)


def test_releasing_the_claim_archives_its_folder(lab: K3sLab, nfs: client.CoreV1Api) -> None:
    pv_name = nfs.read_namespaced_persistent_volume_claim("shared", "default").spec.volume_name
    for pod in ("writer", "reader"):
        nfs.delete_namespaced_pod(pod, "default", grace_period_seconds=0)
    nfs.delete_namespaced_persistent_volume_claim("shared", "default")

    def pv_gone() -> bool:
        try:
            nfs.read_persistent_volume(pv_name)
        except ApiException as error:
            return error.status == 404
        return False
    wait_until(pv_gone, 30)
    listing = nas_ssh(lab, "ls /volume1/k8s-data").stdout.split()
    assert f"archived-default-shared-{pv_name}" in listing and f"default-shared-{pv_name}" not in listing


def test_a_class_with_archive_on_delete_false_deletes_the_folder(lab: K3sLab, nfs: client.CoreV1Api) -> None:
    storage = client.StorageV1Api(nfs.api_client)
    storage.create_storage_class({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                                  "metadata": {"name": "nfs-scratch"},
                                  "provisioner": "cluster.local/nfs-subdir-external-provisioner",
                                  "reclaimPolicy": "Delete", "parameters": {"archiveOnDelete": "false"}})
    nfs.create_namespaced_persistent_volume_claim("default", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "scratch"},
        "spec": {"storageClassName": "nfs-scratch", "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "100Mi"}}}})
    pv_name = wait_until(lambda: bound(nfs, "scratch"), 30).spec.volume_name
    assert f"default-scratch-{pv_name}" in nas_ssh(lab, "ls /volume1/k8s-data").stdout.split()
    nfs.delete_namespaced_persistent_volume_claim("scratch", "default")
    wait_until(lambda: f"default-scratch-{pv_name}" not in nas_ssh(lab, "ls /volume1/k8s-data").stdout, 30)
    assert f"archived-default-scratch-{pv_name}" not in nas_ssh(lab, "ls /volume1/k8s-data").stdout


def test_a_nas_that_does_not_answer_fails_provisioning_with_the_provisioners_event(
        lab: K3sLab, nfs: client.CoreV1Api) -> None:
    nas = lab.handle.lab.nas
    lab.handle.run(nas.set_reachable(False))
    try:
        with pytest.raises((OSError, asyncssh.Error)):
            nas_ssh(lab, "true")
        down = lab.ssh(1, f"showmount -e {lab.handle.status()['nas']['ip']}")
        assert (down.exit_status, down.stderr) == (1, "clnt_create: RPC: Timed out\n")
        assert lab.handle.status()["nas"]["nfs"] is None  # nfs-ganesha is down with it
        claim(nfs, "while-down")

        def failed() -> list[str]:
            return [m for r, m in events(nfs, "default", "while-down") if r == "ProvisioningFailed"]
        message = wait_until(failed, 30)[0]
        uid = nfs.read_namespaced_persistent_volume_claim("while-down", "default").metadata.uid
        assert message == ('failed to provision volume with StorageClass "nfs-client": unable to create directory to '
                           f"provision new pv: mkdir /persistentvolumes/default-while-down-pvc-{uid}: "
                           "connection timed out")
        assert nfs.read_namespaced_persistent_volume_claim("while-down", "default").status.phase == "Pending"
    finally:
        lab.handle.run(nas.set_reachable(True))
    wait_until(lambda: bound(nfs, "while-down"), 30)  # the provisioner retries once the NAS answers


# -- MetalLB ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def metallb(lab: K3sLab, api: client.ApiClient) -> client.CustomObjectsApi:
    install_chart(api, "metallb", "metallb-system", "0.15.2", {"speaker": {"frr": {"enabled": False}}})
    wait_until(lambda: rolled_out(api, "metallb-system", "metallb-controller"), 60)
    wait_until(lambda: rolled_out(api, "metallb-system", "metallb-speaker", "DaemonSet"), 60)
    return client.CustomObjectsApi(api)


def pool(objects: client.CustomObjectsApi, name: str, addresses: list[str], auto_assign: bool = True) -> None:
    objects.create_namespaced_custom_object("metallb.io", "v1beta1", "metallb-system", "ipaddresspools", {
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": name},
        "spec": {"addresses": addresses, "autoAssign": auto_assign}})


def lb_service(core: client.CoreV1Api, name: str, annotations: dict | None = None, port: int = 8080) -> None:
    core.create_namespaced_service("default", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": port, "targetPort": port}]}})


def lb_ip(core: client.CoreV1Api, name: str) -> str | None:
    ingress = core.read_namespaced_service(name, "default").status.load_balancer.ingress or []
    return ingress[0].ip if ingress else None


def test_the_chart_runs_controller_and_speakers_with_the_real_names(lab: K3sLab, metallb: client.CustomObjectsApi) -> None:
    core = client.CoreV1Api(metallb.api_client)

    def running() -> list:
        found = core.list_namespaced_pod("metallb-system", label_selector="app.kubernetes.io/name=metallb").items
        return [p for p in found if p.status.phase == "Running"]
    wait_until(lambda: len(running()) == 3, 30)
    pods = running()
    components = sorted(p.metadata.labels["app.kubernetes.io/component"] for p in pods)
    assert components == ["controller", "speaker", "speaker"]  # one speaker per node
    assert all(p.metadata.name.startswith(("metallb-controller-", "metallb-speaker-")) for p in pods)


def test_the_webhook_refuses_a_reversed_range_and_an_overlapping_pool(lab: K3sLab, metallb: client.CustomObjectsApi) -> None:
    net = lab.doc["network"]["subnet"].rsplit(".", 1)[0]
    with pytest.raises(ApiException) as refused:
        pool(metallb, "reversed", [f"{net}.110-{net}.100"])
    assert refused.value.status == 403
    assert (f'admission webhook \\"ipaddresspoolvalidationwebhook.metallb.io\\" denied the request: parsing address '
            f'pool reversed: invalid CIDR \\"{net}.110-{net}.100\\" in pool \\"reversed\\": invalid IP range') in refused.value.body
    pool(metallb, "small", [f"{net}.100-{net}.102"])
    with pytest.raises(ApiException) as overlap:
        pool(metallb, "overlapping", [f"{net}.100/31"])
    assert "overlaps with already defined CIDR" in overlap.value.body


def test_services_get_pool_addresses_a_requested_one_and_a_full_pool_leaves_one_pending(
        lab: K3sLab, metallb: client.CustomObjectsApi) -> None:
    core = client.CoreV1Api(metallb.api_client)
    net = lab.doc["network"]["subnet"].rsplit(".", 1)[0]
    metallb.create_namespaced_custom_object("metallb.io", "v1beta1", "metallb-system", "l2advertisements", {
        "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "l2"}, "spec": {}})
    # k3s' Traefik, the oldest LoadBalancer Service, gets the pool's first address.
    traefik = core.read_namespaced_service("traefik", "kube-system").status.load_balancer.ingress
    assert [i.ip for i in traefik] == [f"{net}.100"]
    lb_service(core, "web-a", {"metallb.io/loadBalancerIPs": f"{net}.102"})
    assert wait_until(lambda: lb_ip(core, "web-a"), 30) == f"{net}.102"
    lb_service(core, "web-b")
    assert wait_until(lambda: lb_ip(core, "web-b"), 30) == f"{net}.101"
    svc = core.read_namespaced_service("web-b", "default")
    assert svc.metadata.annotations["metallb.io/ip-allocated-from-pool"] == "small"
    assert ("IPAllocated", f'Assigned IP ["{net}.101"]') in events(core, "default", "web-b")
    assert any(r == "nodeAssigned" and m.endswith('with protocol "layer2"') for r, m in events(core, "default", "web-b"))
    lb_service(core, "web-c")

    def failed() -> list[str]:
        return [m for r, m in events(core, "default", "web-c") if r == "AllocationFailed"]
    assert wait_until(failed, 30) == ['Failed to allocate IP for "default/web-c": no available IPs']
    assert lb_ip(core, "web-c") is None
    core.delete_namespaced_service("web-b", "default")  # a freed address goes to the pending Service
    assert wait_until(lambda: lb_ip(core, "web-c"), 30) == f"{net}.101"


class _Hello(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"hello from the pod\n")


def test_the_load_balancer_address_answers_from_this_machine(lab: K3sLab, metallb: client.CustomObjectsApi) -> None:
    core = client.CoreV1Api(metallb.api_client)
    core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-a", "labels": {"app": "web-a"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1", "ports": [{"containerPort": 8080}]}]}})
    pod_ip = wait_until(lambda: core.read_namespaced_pod("web-a", "default").status.pod_ip, 30)
    wait_until(lambda: core.read_namespaced_pod("web-a", "default").status.phase == "Running", 30)
    server = socketserver.TCPServer((pod_ip, 8080), _Hello)  # what the pod's program would do
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = lb_ip(core, "web-a")

        def answer() -> bytes:
            try:
                with socket.create_connection((address, 8080), timeout=5) as sock:
                    return sock.recv(100)
            except OSError:
                return b""
        assert wait_until(answer, 30) == b"hello from the pod\n"
        statuses = metallb.list_namespaced_custom_object("metallb.io", "v1beta1", "metallb-system", "servicel2statuses")
        announced = [i["status"] for i in statuses["items"] if i["status"]["serviceName"] == "web-a"]
        assert len(announced) == 1 and announced[0]["node"] in (lab.name(0), lab.name(1))
        # Without an L2Advertisement nobody answers ARP for the address: allocated, but unreachable.
        metallb.delete_namespaced_custom_object("metallb.io", "v1beta1", "metallb-system", "l2advertisements", "l2")
        wait_until(lambda: answer() == b"", 30)
        assert lb_ip(core, "web-a") == address
        metallb.create_namespaced_custom_object("metallb.io", "v1beta1", "metallb-system", "l2advertisements", {
            "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "l2"},
            "spec": {"ipAddressPools": ["small"]}})
        assert wait_until(answer, 30) == b"hello from the pod\n"
    finally:
        server.shutdown()
        server.server_close()


def test_pools_are_refused_while_no_controller_serves_the_webhook(lab: K3sLab, metallb: client.CustomObjectsApi) -> None:
    """As on a real cluster right after the chart is applied: failurePolicy Fail, nobody to call."""
    apps, core = client.AppsV1Api(metallb.api_client), client.CoreV1Api(metallb.api_client)
    apps.patch_namespaced_deployment_scale("metallb-controller", "metallb-system", {"spec": {"replicas": 0}})
    wait_until(lambda: not core.list_namespaced_pod(
        "metallb-system", label_selector="app.kubernetes.io/component=controller").items, 30)
    try:
        with pytest.raises(ApiException) as refused:
            pool(metallb, "late", ["10.9.9.0/30"])
        assert refused.value.status == 500
        assert ('failed calling webhook \\"ipaddresspoolvalidationwebhook.metallb.io\\": failed to call webhook: Post '
                '\\"https://metallb-webhook-service.metallb-system.svc:443/validate-metallb-io-v1beta1-ipaddresspool'
                '?timeout=10s\\": no endpoints available for service \\"metallb-webhook-service\\"') in refused.value.body
    finally:
        apps.patch_namespaced_deployment_scale("metallb-controller", "metallb-system", {"spec": {"replicas": 1}})
    wait_until(lambda: rolled_out(metallb.api_client, "metallb-system", "metallb-controller"), 60)
