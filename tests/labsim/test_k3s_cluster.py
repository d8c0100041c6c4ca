"""k3s installed over SSH on simulated VMs exactly as a user installs it, then checked over the
wire: files and modes on the nodes, the API with the fetched kubeconfig (TLS verified), Nodes,
what k3s deploys by itself, failing agents, stop/start, etcd snapshot and restore, upgrade,
uninstall. The tests share one lab and run in order, each leaving the cluster usable."""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509
from kubernetes import client

from labsim.lab import running_lab
from tests.labfiles import free_port, sim_config, unique_subnet, write_lab
from tests.labsim.k3s_lab import VERSION, K3sLab, nodes
from tests.labsim.test_net import _resolve, resolver
from tests.polling import wait_until

TOKEN = "lab-test-token-5f1e"
CONFIG = f"""token: {TOKEN}
tls-san: [k3s-master, k3s-master.home.example.com]
disable: servicelb
write-kubeconfig-mode: "0644"
cluster-init: true
etcd-snapshot-schedule-cron: "0 */6 * * *"
etcd-snapshot-retention: 2
"""


@pytest.fixture(scope="module")
def k3s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K3sLab]:
    tmp = tmp_path_factory.mktemp("k3s")
    lab_file = write_lab(tmp)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        lab.ok(0, f"sudo mkdir -p /etc/rancher/k3s && printf '%s' '{CONFIG}' | sudo tee /etc/rancher/k3s/config.yaml")
        lab.server_install = lab.install_server(flags="--disable=metrics-server --node-label tier=control",
                                                env="K3S_KUBECONFIG_MODE=0600")
        yield lab


@pytest.fixture(scope="module")
def kube(k3s: K3sLab, tmp_path_factory: pytest.TempPathFactory) -> client.ApiClient:
    return k3s.kube(tmp_path_factory.mktemp("kubeconfig"))


def node_token(k3s: K3sLab) -> str:
    return k3s.ok(0, "sudo cat /var/lib/rancher/k3s/server/node-token").strip()


def test_server_install_prints_the_installer_steps_and_starts_k3s(k3s: K3sLab) -> None:
    result = k3s.server_install
    assert result.exit_status == 0, result
    for line in (f"[INFO]  Using {VERSION} as release", "[INFO]  Installing k3s to /usr/local/bin/k3s",
                 "[INFO]  Creating uninstall script /usr/local/bin/k3s-uninstall.sh",
                 "[INFO]  systemd: Starting k3s"):
        assert line in result.stdout
    assert k3s.ok(0, "systemctl is-active k3s") == "active\n"
    assert k3s.ok(0, "k3s --version") == f"{VERSION.join(['k3s version ', ' (48ffa7b6)'])}\ngo version go1.24.11\n"
    assert "k3s is up and running" in k3s.ok(0, "journalctl -u k3s --no-pager")


def test_server_writes_kubeconfig_and_node_token_as_k3s(k3s: K3sLab) -> None:
    # config.yaml's write-kubeconfig-mode beats K3S_KUBECONFIG_MODE from the environment
    assert k3s.ok(0, "stat -c %a /etc/rancher/k3s/k3s.yaml").strip() == "644"
    assert k3s.ok(0, "sudo stat -c %a /var/lib/rancher/k3s/server/node-token").strip() == "600"
    kubeconfig = yaml.safe_load(k3s.ok(0, "cat /etc/rancher/k3s/k3s.yaml"))
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    token = node_token(k3s)
    prefix, _, creds = token.partition("::")
    assert prefix.startswith("K10") and len(prefix) == 3 + 64 and creds == f"server:{TOKEN}"


def test_the_twins_kubernetes_store_holding_secrets_is_owner_only(k3s: K3sLab) -> None:
    stores = list(k3s.handle.lab.state_dir.glob("kube/*/store.json"))
    assert stores and all(p.stat().st_mode & 0o777 == 0o600 for p in stores), stores


def test_api_certificate_covers_the_node_ip_loopback_and_tls_sans(k3s: K3sLab) -> None:
    pem = ssl.get_server_certificate((k3s.ip(0), 6443))
    sans = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    names = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} | set(sans.get_values_for_type(x509.DNSName))
    assert {k3s.ip(0), "127.0.0.1", "k3s-master", "k3s-master.home.example.com"} <= names


def test_curl_on_a_node_reaches_the_api_with_tls_verified(k3s: K3sLab) -> None:
    api = f"https://{k3s.ip(0)}:6443/version"
    assert k3s.ssh(1, f"curl -s {api}").exit_status == 60 and not k3s.ssh(1, f"curl -s {api}").stderr
    assert "curl: (60) SSL certificate problem" in k3s.ssh(1, f"curl -sS {api}").stderr
    ca = "/var/lib/rancher/k3s/server/tls/server-ca.crt"
    assert k3s.ssh(0, f"sudo curl -sS --cacert {ca} -o /tmp/version {api}").exit_status == 0
    assert k3s.ssh(0, "test -s /tmp/version").exit_status == 0
    assert k3s.ssh(1, "curl -sS http://example.com/").stderr == "curl: (6) Could not resolve host: example.com\n"
    assert k3s.ssh(1, f"curl -sS https://{k3s.ip(2)}:6443/").exit_status == 7


@contextlib.contextmanager
def http_server(ip: str, body: bytes = b"", redirect: str | None = None) -> Iterator[int]:
    """An HTTP server of the host on ``ip`` (a free port): answers ``body``, or redirects."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302 if redirect else 200)
            if redirect:
                self.send_header("Location", redirect)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer((ip, free_port(ip)), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_node_reaches_its_lab_only_and_localhost_is_the_node_itself(k3s: K3sLab) -> None:
    secret = b"the host's own service"
    outside = f"{unique_subnet()}.5"  # loopback, but no address of this lab
    with http_server("127.0.0.1", secret) as host_port, http_server(outside, secret) as outside_port:
        for url in (f"http://127.0.0.1:{host_port}/", f"http://localhost:{host_port}/",
                    f"http://[::1]:{host_port}/", f"http://{outside}:{outside_port}/"):
            result = k3s.ssh(1, f"curl -sS {url}")
            assert result.exit_status == 7 and secret.decode() not in result.stdout, (url, result)
        unreachable = k3s.ssh(1, "curl -sS http://192.0.2.1/")
        assert unreachable.stderr == "curl: (7) Failed to connect to 192.0.2.1 port 80 after 0 ms: " \
                                     "Network is unreachable\n"
        lb = k3s.doc["metallb"]["addresses"].split("-")[0]  # a lab address: reached, and its redirects fenced
        with http_server(lb, b"from the lab") as lab_port, \
                http_server(lb, redirect=f"http://127.0.0.1:{host_port}/") as redirect_port:
            assert k3s.ok(1, f"curl -sS http://{lb}:{lab_port}/") == "from the lab"
            followed = k3s.ssh(1, f"curl -sSL http://{lb}:{redirect_port}/")
            assert followed.exit_status == 7 and secret.decode() not in followed.stdout
    ca = "/var/lib/rancher/k3s/server/tls/server-ca.crt"  # the master's own API, as its k3s.yaml says
    assert '"gitVersion"' in k3s.ok(0, f"sudo curl -sS --cacert {ca} https://localhost:6443/version")
    assert k3s.ssh(0, "curl -sS file:///etc/shadow").exit_status == 1


def test_agent_joins_and_nodes_are_ready_with_the_pinned_version(k3s: K3sLab, kube: client.ApiClient) -> None:
    result = k3s.install_agent(1, node_token(k3s), flags="--node-label tier=worker --node-taint dedicated=apps:NoSchedule")
    assert result.exit_status == 0, result
    assert "[INFO]  systemd: Starting k3s-agent" in result.stdout
    found = nodes(kube)
    assert set(found) == {k3s.name(0), k3s.name(1)}
    assert all(n["ready"] and n["version"] == VERSION for n in found.values())
    server, agent = found[k3s.name(0)]["labels"], found[k3s.name(1)]["labels"]
    assert server["node-role.kubernetes.io/control-plane"] == "true"
    assert server["node-role.kubernetes.io/etcd"] == "true" and server["tier"] == "control"
    assert agent["tier"] == "worker" and "node-role.kubernetes.io/control-plane" not in agent
    taints = client.CoreV1Api(kube).read_node(k3s.name(1)).spec.taints
    assert [(t.key, t.value, t.effect) for t in taints] == [("dedicated", "apps", "NoSchedule")]
    assert client.VersionApi(kube).get_code().git_version == VERSION


def test_k3s_kubectl_on_the_server(k3s: K3sLab) -> None:
    lines = k3s.ok(0, "sudo k3s kubectl get nodes").splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[k3s.name(0)][1:3] == ["Ready", "control-plane,etcd,master"]
    assert rows[k3s.name(1)][1:3] == ["Ready", "<none>"] and rows[k3s.name(1)][-1] == VERSION
    workers = k3s.ok(0, "sudo k3s kubectl get nodes -l tier=worker --no-headers --show-labels").splitlines()
    assert len(workers) == 1 and workers[0].startswith(k3s.name(1)) and "tier=worker" in workers[0]
    wide = k3s.ok(0, "kubectl get nodes -o wide")  # the kubectl link, k3s.yaml readable (0644)
    assert k3s.ip(1) in wide and "INTERNAL-IP" in wide
    agent = k3s.ssh(1, "sudo k3s kubectl get nodes")
    assert agent.exit_status == 1 and "localhost:8080 was refused" in agent.stderr


def test_crictl_lists_the_containers_of_its_node(k3s: K3sLab) -> None:
    pods = k3s.ok(0, "sudo crictl pods").splitlines()
    assert pods[0].split()[:4] == ["POD", "ID", "CREATED", "STATE"]
    assert any(" coredns-" in row and "kube-system" in row for row in pods[1:])
    containers = k3s.ok(0, "sudo crictl ps").splitlines()
    assert any({"Running", "coredns", "kube-system"} <= set(row.split()) for row in containers[1:])
    assert "coredns" not in k3s.ok(1, "sudo crictl ps")  # the agent's containers only
    denied = k3s.ssh(0, "crictl ps")
    assert denied.exit_status == 1 and "permission denied" in denied.stderr


def test_packaged_components_are_deployed_and_disabled_ones_are_not(k3s: K3sLab, kube: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube)
    deployments = {d.metadata.name for d in apps.list_namespaced_deployment("kube-system").items}
    assert {"coredns", "local-path-provisioner"} <= deployments and "metrics-server" not in deployments
    classes = client.StorageV1Api(kube).list_storage_class().items
    default = [c.metadata.name for c in classes
               if (c.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true"]
    assert default == ["local-path"]
    charts = client.CustomObjectsApi(kube).list_namespaced_custom_object("helm.cattle.io", "v1", "kube-system",
                                                                         "helmcharts")
    assert {c["metadata"]["name"] for c in charts["items"]} == {"traefik", "traefik-crd"}
    # config.yaml sets no service-cidr: the twin's k3s takes the lab file's (its loopback default).
    service_cidr = ipaddress.ip_network(k3s.doc["k3s"]["service_cidr"])
    assert client.CoreV1Api(kube).read_namespaced_service("kube-dns", "kube-system").spec.cluster_ip == str(
        service_cidr[10])
    manifests = k3s.ok(0, "sudo ls /var/lib/rancher/k3s/server/manifests").split()
    assert {"coredns.yaml", "local-storage.yaml", "traefik.yaml"} <= set(manifests)
    assert "metrics-server" not in manifests


def test_manifests_dropped_in_the_auto_deploy_folder_are_applied(k3s: K3sLab, kube: client.ApiClient) -> None:
    folder = "/var/lib/rancher/k3s/server/manifests"
    core = client.CoreV1Api(kube)

    def drop(name: str, text: str) -> None:
        k3s.ok(0, f"sudo tee {folder}/{name} >/dev/null", input=text)

    drop("greeting.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: greeting, namespace: default}\n"
                          "data: {text: hello}\n")
    assert wait_until(lambda: _config_text(core, "greeting")) == "hello"
    drop("greeting.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: greeting, namespace: default}\n"
                          "data: {text: again}\n")
    assert wait_until(lambda: _config_text(core, "greeting") == "again")
    addon = client.CustomObjectsApi(kube).get_namespaced_custom_object("k3s.cattle.io", "v1", "kube-system",
                                                                       "addons", "greeting")
    assert addon["spec"]["source"] == f"{folder}/greeting.yaml"
    drop("broken.yaml", "kind: [unclosed\n")
    wait_until(lambda: "Failed to process config: failed to process " + f"{folder}/broken.yaml" in
          k3s.ok(0, "journalctl -u k3s --no-pager"))


def _config_text(core: client.CoreV1Api, name: str) -> str | None:
    found = [c for c in core.list_namespaced_config_map("default").items if c.metadata.name == name]
    return found[0].data["text"] if found else None


def test_agent_with_a_wrong_token_fails_and_the_journal_says_why(k3s: K3sLab) -> None:
    result = k3s.install_agent(2, "not-the-token")
    assert result.exit_status == 1
    assert "Job for k3s-agent.service failed" in result.stderr
    assert k3s.ssh(2, "systemctl is-active k3s-agent").stdout == "failed\n"
    assert "401 Unauthorized" in k3s.ok(2, "journalctl -u k3s-agent --no-pager")
    wrong_ca = "K10" + "0" * 64 + "::server:" + TOKEN
    assert k3s.install_agent(2, wrong_ca).exit_status == 1
    assert "token CA hash does not match" in k3s.ok(2, "journalctl -u k3s-agent -n 5 --no-pager")


def test_agent_with_an_unreachable_url_or_a_newer_version_fails(k3s: K3sLab) -> None:
    token = node_token(k3s)
    assert k3s.install_agent(2, token, url=f"https://{k3s.ip(2)}:6443").exit_status == 1
    assert "connection refused" in k3s.ok(2, "journalctl -u k3s-agent -n 5 --no-pager")
    pve_port = urlsplit(k3s.status["pve"]["url"]).port  # the host's 127.0.0.1: the node itself for the node
    assert k3s.install_agent(2, token, url=f"https://127.0.0.1:{pve_port}").exit_status == 1
    assert f"dial tcp 127.0.0.1:{pve_port}: connect: connection refused" in \
        k3s.ok(2, "journalctl -u k3s-agent -n 5 --no-pager")
    assert k3s.install_agent(2, token, url="https://192.0.2.1:6443").exit_status == 1
    assert "dial tcp 192.0.2.1:6443: connect: network is unreachable" in \
        k3s.ok(2, "journalctl -u k3s-agent -n 5 --no-pager")
    assert k3s.install_agent(2, token, version="v1.35.0+k3s1").exit_status == 1
    assert "newer than the API server" in k3s.ok(2, "journalctl -u k3s-agent -n 5 --no-pager")
    assert k3s.ssh(2, "systemctl is-active k3s-agent").exit_status == 3


def test_third_node_joins_after_fixing_the_token(k3s: K3sLab, kube: client.ApiClient) -> None:
    assert k3s.install_agent(2, node_token(k3s)).exit_status == 0
    assert all(n["ready"] for n in nodes(kube).values()) and len(nodes(kube)) == 3


def test_stopping_k3s_agent_marks_the_node_not_ready(k3s: K3sLab, kube: client.ApiClient) -> None:
    k3s.ok(2, "sudo systemctl stop k3s-agent")
    assert not nodes(kube)[k3s.name(2)]["ready"]
    k3s.ok(2, "sudo systemctl start k3s-agent")
    assert nodes(kube)[k3s.name(2)]["ready"]


def test_snapshot_save_delete_namespace_restore(k3s: K3sLab, kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="precious")))
    saved = k3s.ssh(0, "sudo k3s etcd-snapshot save --name before-drill")
    assert saved.exit_status == 0 and "saved." in saved.stderr
    listing = k3s.ok(0, "sudo k3s etcd-snapshot ls").splitlines()
    assert listing[0].split() == ["Name", "Location", "Size", "Created"]
    name = next(line.split()[0] for line in listing[1:] if line.startswith(f"before-drill-{k3s.name(0)}-"))
    path = f"/var/lib/rancher/k3s/server/db/snapshots/{name}"
    core.delete_namespace("precious")
    wait_until(lambda: "precious" not in {n.metadata.name for n in core.list_namespace().items})
    refused = k3s.ssh(0, f"sudo k3s server --cluster-reset --cluster-reset-restore-path={path}")
    assert refused.exit_status == 1 and "address already in use" in refused.stderr  # k3s still running
    k3s.ok(0, "sudo systemctl stop k3s")
    reset = k3s.ssh(0, f"sudo k3s server --cluster-reset --cluster-reset-restore-path={path}")
    assert reset.exit_status == 0 and "restart without --cluster-reset flag now" in reset.stderr
    k3s.ok(0, "sudo systemctl start k3s")
    assert "precious" in {n.metadata.name for n in core.list_namespace().items}
    records = client.CustomObjectsApi(kube).list_cluster_custom_object("k3s.cattle.io", "v1", "etcdsnapshotfiles")
    assert name in {r["spec"]["snapshotName"] for r in records["items"]}  # reconciled from the files at start


def test_pods_and_services_run_on_while_k3s_restarts_and_pods_a_restored_snapshot_lacks_are_swept(
        k3s: K3sLab, kube: client.ApiClient) -> None:
    """k3s' unit has KillMode=process: `systemctl stop k3s` leaves the containers running (the
    same nginx processes serve throughout, on the server and on an agent, CoreDNS answers) and
    kube-proxy's rules in place (a NodePort on the server's address answers throughout); a restored etcd snapshot
    that lacks a pod (created after it) has that pod's containers stopped when k3s starts again."""
    core = client.CoreV1Api(kube)
    _nginx_pod(core, "kept", k3s.name(0))
    _nginx_pod(core, "front", k3s.name(1))
    core.create_namespaced_service("default", client.V1Service(
        metadata=client.V1ObjectMeta(name="front"), spec=client.V1ServiceSpec(
            type="NodePort", selector={"app": "front"}, ports=[client.V1ServicePort(port=80)])))
    pods = {name: wait_until(lambda name=name: _serving(core, name), timeout=30) for name in ("kept", "front")}
    node_port = core.read_namespaced_service("front", "default").spec.ports[0].node_port
    urls = [f"http://{pods['kept'].status.pod_ip}/", f"http://{k3s.ip(0)}:{node_port}/"]
    wait_until(lambda: _answer(urls[1]) == 200)
    dns_names = resolver(k3s)
    front_ip = core.read_namespaced_service("front", "default").spec.cluster_ip

    def resolved() -> set[str]:
        return {r.address for r in dns_names.resolve("front.default.svc.cluster.local", "A")}

    assert wait_until(lambda: _resolve(dns_names, "front.default.svc.cluster.local", "A", False)) and \
        resolved() == {front_ip}
    path = _snapshot_path(k3s, "before-later")
    _nginx_pod(core, "later", k3s.name(1))
    pods["later"] = wait_until(lambda: _serving(core, "later"), timeout=30)
    pids = {name: wait_until(lambda pod=pod: _pid(k3s, pod.metadata.uid, "nginx")) for name, pod in pods.items()}
    answers: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(urls, answers, stop))
    watcher.start()
    try:
        k3s.ok(0, "sudo systemctl stop k3s")
        assert all(_alive(pid) for pid in pids.values())  # no API, no kubelet: the containers run on
        assert [_answer(url) for url in urls] == [200, 200] and resolved() == {front_ip}  # CoreDNS too
        k3s.ok(0, f"sudo k3s server --cluster-reset --cluster-reset-restore-path={path}")
        assert [_answer(url) for url in urls] == [200, 200] and resolved() == {front_ip}
        k3s.ok(0, "sudo systemctl start k3s")
        wait_until(lambda: all(n["ready"] for n in nodes(kube).values()), timeout=30)
        wait_until(lambda: not _alive(pids["later"]), timeout=30)  # swept: the restored cluster has no such pod
        assert "later" not in {p.metadata.name for p in core.list_namespaced_pod("default").items}
        again = {name: wait_until(lambda name=name: _serving(core, name), timeout=30) for name in ("kept", "front")}
    finally:
        stop.set()
        watcher.join()
    for name in ("kept", "front"):
        assert _alive(pids[name]) and _pid(k3s, pods[name].metadata.uid, "nginx") == pids[name]
        status, before = again[name].status.container_statuses[0], pods[name].status.container_statuses[0]
        assert (status.container_id, status.restart_count) == (before.container_id, 0)
    assert answers and set(answers) == {200}  # served throughout: the stop, the reset, the start
    core.delete_namespaced_service("front", "default")
    for name in ("kept", "front"):
        core.delete_namespaced_pod(name, "default")
    wait_until(lambda: not any(_alive(pid) for pid in pids.values()), timeout=30)


def _nginx_pod(core: client.CoreV1Api, name: str, node: str) -> None:
    core.create_namespaced_pod("default", client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}), spec=client.V1PodSpec(
            node_name=node, tolerations=[client.V1Toleration(key="dedicated", operator="Exists")],
            containers=[client.V1Container(name="nginx", image="nginx:1.27")])))


def _serving(core: client.CoreV1Api, name: str) -> client.V1Pod | None:
    """The pod once it is Running, Ready and its nginx answers on the pod IP."""
    pod = core.read_namespaced_pod(name, "default")
    ready = pod.status.phase == "Running" and all(c.ready for c in pod.status.container_statuses or [False])
    return pod if ready and _answer(f"http://{pod.status.pod_ip}/") == 200 else None


def _answer(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status
    except OSError:
        return 0


def _watch(urls: list[str], answers: list[int], stop: threading.Event) -> None:
    while not stop.wait(0.01):
        answers += [_answer(url) for url in urls]


def _pid(k3s: K3sLab, uid: str, container: str) -> int | None:
    """The PID of a pod's container process, from the twin's runtime's PID files."""
    found = list(Path(k3s.doc["embedded"]["state_dir"]).rglob(f"run/{uid}.{container}.pid"))
    return json.loads(found[0].read_text())["pid"] if found else None


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _snapshot_path(k3s: K3sLab, name: str) -> str:
    k3s.ok(0, f"sudo k3s etcd-snapshot save --name {name}")
    listing = k3s.ok(0, "sudo k3s etcd-snapshot ls").splitlines()[1:]
    file = next(line.split()[0] for line in listing if line.startswith(f"{name}-{k3s.name(0)}-"))
    return f"/var/lib/rancher/k3s/server/db/snapshots/{file}"


def test_snapshot_delete_and_prune_keep_the_newest(k3s: K3sLab) -> None:
    for _ in range(3):
        k3s.ok(0, "sudo k3s etcd-snapshot save --name nightly")
        k3s.handle.advance(61)
    names = [line.split()[0] for line in k3s.ok(0, "sudo k3s etcd-snapshot list").splitlines()[1:]]
    nightly = sorted(n for n in names if n.startswith("nightly-"))
    assert len(nightly) == 3
    pruned = k3s.ssh(0, "sudo k3s etcd-snapshot prune --name nightly --snapshot-retention 1")
    assert pruned.exit_status == 0
    left = k3s.ok(0, "sudo k3s etcd-snapshot ls")
    assert nightly[-1] in left and nightly[0] not in left and nightly[1] not in left
    k3s.ok(0, f"sudo k3s etcd-snapshot delete {nightly[-1]}")
    assert nightly[-1] not in k3s.ok(0, "sudo k3s etcd-snapshot ls")
    assert "no such file or directory" in k3s.ssh(0, "k3s etcd-snapshot save").stderr  # needs root, as k3s


def test_scheduled_snapshots_follow_the_cron_schedule_and_retention(k3s: K3sLab) -> None:
    def scheduled() -> list[str]:
        listing = k3s.ok(0, "sudo k3s etcd-snapshot ls").splitlines()[1:]
        return sorted(line.split()[0] for line in listing if line.startswith(f"etcd-snapshot-{k3s.name(0)}-"))

    assert scheduled() == []
    for count in (1, 2, 2):
        k3s.handle.advance(6 * 3600)
        wait_until(lambda count=count: len(scheduled()) == count)
    assert "etcd-snapshot-" in k3s.ok(0, "journalctl -u k3s -n 20 --no-pager")


def test_no_servicelb_when_disabled(k3s: K3sLab, kube: client.ApiClient) -> None:
    _load_balancer(kube, "web")
    time.sleep(0.5)
    daemonsets = client.AppsV1Api(kube).list_namespaced_daemon_set("kube-system").items
    assert not [d for d in daemonsets if d.metadata.name.startswith("svclb-")]


def _load_balancer(kube: client.ApiClient, name: str) -> None:
    client.CoreV1Api(kube).create_namespaced_service("default", client.V1Service(
        metadata=client.V1ObjectMeta(name=name), spec=client.V1ServiceSpec(
            type="LoadBalancer", selector={"app": name}, ports=[client.V1ServicePort(port=8080, target_port=80)])))


def test_upgrading_a_node_changes_its_version_and_its_pods_run_on(k3s: K3sLab, kube: client.ApiClient) -> None:
    """A new k3s binary restarts k3s only: the containers (containerd's shims) run on, as with
    any stop of k3s' unit (KillMode=process)."""
    core = client.CoreV1Api(kube)
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="probe"), spec=client.V1PodSpec(
        node_name=k3s.name(1), tolerations=[client.V1Toleration(key="dedicated", operator="Exists")],
        containers=[client.V1Container(name="probe", image="nginx:1.27")]))
    core.create_namespaced_pod("default", pod)
    before = wait_until(lambda: _running(core, "probe"))
    pid = wait_until(lambda: _pid(k3s, before[0], "probe"))
    newer = "v1.34.4+k3s1"
    k3s.ok(0, f"curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION={newer} sh -s - server")
    result = k3s.install_agent(1, node_token(k3s), version=newer)
    assert result.exit_status == 0, result
    assert nodes(kube)[k3s.name(1)] | {"labels": {}} == {"ready": True, "version": newer, "labels": {}}
    assert client.VersionApi(kube).get_code().git_version == newer
    assert _running(core, "probe") == before and _pid(k3s, before[0], "probe") == pid and _alive(pid)


def test_an_unreleased_version_is_refused_and_a_node_can_be_kept_from_coming_back(k3s: K3sLab) -> None:
    """The installer downloads only published releases; the admin endpoint's fault makes one
    version of an agent start without its Node ever turning Ready (a failed upgrade), until cleared."""
    import requests

    installed = k3s.ok(1, "k3s --version")
    refused = k3s.install_agent(1, node_token(k3s), version="v1.34.99+k3s1")
    assert refused.exit_status == 1 and "[ERROR]  Download failed" in refused.stderr
    assert k3s.ok(1, "k3s --version") == installed  # nothing replaced, still running
    assert k3s.ssh(1, "systemctl is-active k3s-agent").stdout == "active\n"

    status, vmid, newer = k3s.status, k3s.doc["nodes"][1]["vmid"], "v1.35.0+k3s1"
    base, ca = status["pve"]["url"] + "/labsim/faults", status["pve"]["ca_file"]
    token = {"Authorization": f"PVEAPIToken={status['pve']['token_id']}={status['pve']['token_secret']}"}
    answer = requests.post(base, json={"fault": "ssh_k3s_never_ready", "vmid": vmid, "version": newer},
                           headers=token, verify=ca, timeout=10)
    assert answer.status_code == 200 and answer.json()["data"]["ssh"][str(vmid)]["never_ready"] == newer
    k3s.ok(0, f"curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION={newer} sh -s - server")
    assert k3s.install_agent(1, node_token(k3s), version=newer).exit_status == 0  # the unit starts...
    kube = k3s.kube(k3s.handle.lab.state_dir)
    assert not nodes(kube)[k3s.name(1)]["ready"]  # ...its Node never comes back
    assert "Failed to start ContainerManager" in k3s.ok(1, "journalctl -u k3s-agent -n 3 --no-pager")
    assert requests.delete(base, headers=token, verify=ca, timeout=10).status_code == 200
    k3s.ok(1, "sudo systemctl restart k3s-agent")
    assert nodes(kube)[k3s.name(1)] | {"labels": {}} == {"ready": True, "version": newer, "labels": {}}


def test_the_admin_endpoint_fills_a_nodes_disk_until_cleared(k3s: K3sLab) -> None:
    """``disk_full`` fills the node's root filesystem as its node-exporter reports it (the node's
    folder of the cluster: labsim.node.nodefiles); an unknown node is named; DELETE empties it."""
    import requests

    from labsim.node import nodefiles

    status, node = k3s.status, k3s.name(1)
    base, ca = status["pve"]["url"] + "/labsim/faults", status["pve"]["ca_file"]
    token = {"Authorization": f"PVEAPIToken={status['pve']['token_id']}={status['pve']['token_secret']}"}
    folder = Path(k3s.handle.lab.state_dir) / "kube" / k3s.name(0) / "nodes" / node
    before = nodefiles.root_fs(folder)
    answer = requests.post(base, json={"fault": "disk_full", "node": node, "percent": 96, "cluster": k3s.name(0)},
                           headers=token, verify=ca, timeout=10)
    assert answer.status_code == 200 and answer.json()["data"]["disk_full"] == [node]
    full = nodefiles.root_fs(folder)
    assert full["size"] == before["size"] and full["avail"] / full["size"] < 0.01 < before["avail"] / before["size"]
    unknown = requests.post(base, json={"fault": "disk_full", "node": "k3s-nowhere"}, headers=token, verify=ca,
                            timeout=10)
    assert unknown.status_code == 400 and 'nodes "k3s-nowhere" not found' in unknown.json()["message"]
    assert requests.delete(base, headers=token, verify=ca, timeout=10).status_code == 200
    assert nodefiles.root_fs(folder) == before
    assert requests.get(base, headers=token, verify=ca, timeout=10).json()["data"]["disk_full"] == []


def test_sqlite_server_refuses_etcd_snapshots(k3s: K3sLab) -> None:
    k3s.ok(2, "sudo /usr/local/bin/k3s-agent-uninstall.sh")
    assert k3s.ssh(2, "test -e /usr/local/bin/k3s").exit_status == 1
    assert k3s.ssh(2, "k3s --version").exit_status == 127
    assert k3s.install_server(2).exit_status == 0
    refused = k3s.ssh(2, "sudo k3s etcd-snapshot save")
    assert refused.exit_status == 1 and "etcd datastore disabled" in refused.stderr


def _running(core: client.CoreV1Api, name: str) -> tuple | None:
    """(uid, restarts, startedAt) of a Running pod."""
    pod = core.read_namespaced_pod(name, "default")
    if pod.status.phase != "Running" or not pod.status.container_statuses:
        return None
    status = pod.status.container_statuses[0]
    started = status.state.running.started_at if status.state and status.state.running else None
    return pod.metadata.uid, status.restart_count, started


