"""The twin's cluster network over the wire: the kube-proxy forwards a Service's ClusterIP, NodePort
and load-balancer address to a program listening on a pod IP (the test's own, bound where the pod's
container would listen), refuses when no endpoint is ready, and stops listening when the lab goes
down; CoreDNS answers a real resolver over UDP and TCP on the cluster DNS address.

The tests share one lab (a k3s server installed over SSH, ServiceLB on) and run in order."""

from __future__ import annotations

import ipaddress
import json
import os
import pty
import select
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.resolver
import pytest
from kubernetes import client

from labsim.lab import running_lab
from labsim.runtime.programs import nginx
from tests.labfiles import sim_config, write_lab
from tests.labsim.k3s_lab import K3sLab
from tests.labsim.kube_fixtures import TOOLS, nginx_web
from tests.polling import wait_until

PORT = 8081  # Traefik's LoadBalancer holds 80 and 443 on the node (ServiceLB gives one port to one Service)


@pytest.fixture(scope="module")
def k3s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K3sLab]:
    tmp = tmp_path_factory.mktemp("net")
    lab_file = write_lab(tmp, workers=0)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server().exit_status == 0
        yield lab


@pytest.fixture(scope="module")
def core(k3s: K3sLab, tmp_path_factory: pytest.TempPathFactory) -> client.CoreV1Api:
    return client.CoreV1Api(k3s.kube(tmp_path_factory.mktemp("kubeconfig")))


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        prefix = self.server.prefix  # the first reply names the pod that answered
        while data := self.request.recv(65536):
            self.request.sendall(prefix + data)
            prefix = b""


def serve_echo(ip: str, port: int, prefix: bytes) -> socketserver.ThreadingTCPServer:
    """What a container of the pod would do: listen on the pod IP."""
    server = socketserver.ThreadingTCPServer((ip, port), _Echo)
    server.daemon_threads = True
    server.prefix = prefix
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def talk(ip: str, port: int, message: bytes = b"ping") -> bytes:
    with socket.create_connection((ip, port), timeout=5) as sock:
        sock.sendall(message)
        return sock.recv(65536)


def refused(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def echo_app(core: client.CoreV1Api, name: str, replicas: int, svc_type: str = "ClusterIP") -> None:
    apps = client.AppsV1Api(core.api_client)
    labels = {"app": name}
    apps.create_namespaced_deployment("default", client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name), spec=client.V1DeploymentSpec(
            replicas=replicas, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=client.V1PodSpec(
                containers=[client.V1Container(name="echo", image="busybox:1.36", ports=[
                    client.V1ContainerPort(name="echo", container_port=7000)])])))))
    core.create_namespaced_service("default", client.V1Service(
        metadata=client.V1ObjectMeta(name=name), spec=client.V1ServiceSpec(
            type=svc_type, selector=labels, ports=[client.V1ServicePort(name="tcp", port=PORT, target_port="echo")])))


def ready_pod_ips(core: client.CoreV1Api, name: str, count: int) -> list[str]:
    def probe():
        pods = core.list_namespaced_pod("default", label_selector=f"app={name}").items
        ips = [p.status.pod_ip for p in pods if p.status.pod_ip and p.metadata.deletion_timestamp is None
               and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
        return sorted(ips) if len(ips) == count else None

    return wait_until(probe, timeout=30)


def test_a_service_forwards_to_the_program_on_its_ready_pods_and_refuses_without_one(
        k3s: K3sLab, core: client.CoreV1Api) -> None:
    echo_app(core, "echo", 2, svc_type="LoadBalancer")
    ips = ready_pod_ips(core, "echo", 2)
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(k3s.doc["k3s"]["cluster_cidr"]) for ip in ips)
    servers = [serve_echo(ip, 7000, prefix=ip.encode() + b" ") for ip in ips]
    try:
        svc = wait_until(lambda: (s := core.read_namespaced_service("echo", "default")).status.load_balancer.ingress
                         and s)
        cluster_ip, node_port = svc.spec.cluster_ip, svc.spec.ports[0].node_port
        assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(k3s.doc["k3s"]["service_cidr"])
        answers = {wait_until(lambda: _try(cluster_ip, PORT)) for _ in range(40)}
        assert {a.split(b" ")[0].decode() for a in answers} == set(ips)  # both endpoints serve
        assert all(a.endswith(b" ping") for a in answers)
        assert talk(k3s.ip(0), node_port).endswith(b" ping")  # NodePort on the node's address
        (ingress,) = svc.status.load_balancer.ingress  # ServiceLB: the node's address
        assert ingress.ip == k3s.ip(0) and talk(ingress.ip, PORT).endswith(b" ping")
        big = bytes(range(256)) * 4096  # 1 MiB through the proxy both ways, intact
        assert _roundtrip(cluster_ip, PORT, big) == big

        client.AppsV1Api(core.api_client).patch_namespaced_deployment_scale("echo", "default",
                                                                            {"spec": {"replicas": 0}})
        wait_until(lambda: refused(cluster_ip, PORT), timeout=30)  # no ready endpoint: REJECT
        assert refused(k3s.ip(0), node_port)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_kubernetes_default_reaches_the_api_server_with_its_certificate(k3s: K3sLab, core: client.CoreV1Api) -> None:
    ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    assert ip == str(ipaddress.ip_network(k3s.doc["k3s"]["service_cidr"])[1])
    ca = k3s.ok(0, "sudo cat /var/lib/rancher/k3s/server/tls/server-ca.crt")
    context = ssl.create_default_context(cadata=ca)
    with socket.create_connection((ip, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="kubernetes.default.svc") as tls:
        tls.sendall(b"GET /version HTTP/1.1\r\nHost: kubernetes.default.svc\r\nConnection: close\r\n\r\n")
        reply = tls.recv(65536)
    assert reply.startswith(b"HTTP/1.1 401") or reply.startswith(b"HTTP/1.1 200")  # TLS verified end to end


def _try(ip: str, port: int) -> bytes | None:
    try:
        return talk(ip, port)
    except ConnectionRefusedError:
        return None  # the proxy does not listen until it has seen the ready endpoints


def _roundtrip(ip: str, port: int, payload: bytes) -> bytes:
    with socket.create_connection((ip, port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(1 << 20):
            chunks.append(data)
    return b"".join(chunks).split(b" ", 1)[1] if chunks else b""


def resolver(k3s: K3sLab) -> dns.resolver.Resolver:
    """A real stub resolver aimed at the cluster DNS address only (the kube-dns ClusterIP)."""
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [str(ipaddress.ip_network(k3s.doc["k3s"]["service_cidr"])[10])]
    res.lifetime = 5
    return res


def test_cluster_dns_answers_a_real_resolver_over_udp_and_tcp(k3s: K3sLab, core: client.CoreV1Api) -> None:
    res = resolver(k3s)
    assert core.read_namespaced_service("kube-dns", "kube-system").spec.cluster_ip == res.nameservers[0]
    echo_ip = core.read_namespaced_service("echo", "default").spec.cluster_ip
    api_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip

    def addresses(name: str, tcp: bool = False) -> set[str]:
        return {r.address for r in wait_until(lambda: _resolve(res, name, "A", tcp), timeout=20)}

    assert addresses("echo.default.svc.cluster.local") == {echo_ip}
    assert addresses("kubernetes.default.svc.cluster.local", tcp=True) == {api_ip}
    assert addresses(f"{k3s.name(0)}") == {k3s.ip(0)}  # NodeHosts

    srv = res.resolve("_tcp._tcp.echo.default.svc.cluster.local", "SRV")
    (record,) = srv
    assert (record.port, record.target.to_text()) == (PORT, "echo.default.svc.cluster.local.")
    assert [r.to_text() for r in srv.response.additional] == [
        f"echo.default.svc.cluster.local. 5 IN A {echo_ip}"]

    apps = client.AppsV1Api(core.api_client)
    labels = {"app": "db"}
    core.create_namespaced_service("default", client.V1Service(
        metadata=client.V1ObjectMeta(name="db"), spec=client.V1ServiceSpec(
            cluster_ip="None", selector=labels, ports=[client.V1ServicePort(name="pg", port=5432)])))
    apps.create_namespaced_stateful_set("default", client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name="db"), spec=client.V1StatefulSetSpec(
            service_name="db", replicas=2, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=client.V1PodSpec(
                containers=[client.V1Container(name="db", image="postgres:16")])))))
    ips = ready_pod_ips(core, "db", 2)
    assert wait_until(lambda: {r.address for r in _resolve(res, "db.default.svc.cluster.local", "A", tcp=True)
                               or []} == set(ips))  # headless: the ready pods themselves
    pod_ips = {name: core.read_namespaced_pod(name, "default").status.pod_ip for name in ("db-0", "db-1")}
    assert addresses("db-0.db.default.svc.cluster.local") == {pod_ips["db-0"]}
    srv = res.resolve("_pg._tcp.db.default.svc.cluster.local", "SRV")
    assert {(r.port, r.target.to_text()) for r in srv} == {
        (5432, "db-0.db.default.svc.cluster.local."), (5432, "db-1.db.default.svc.cluster.local.")}

    # 40 endpoints do not fit a 512-byte UDP answer: TC set over UDP, the whole set over TCP.
    core.create_namespaced_service("default", client.V1Service(
        metadata=client.V1ObjectMeta(name="many"), spec=client.V1ServiceSpec(
            cluster_ip="None", ports=[client.V1ServicePort(name="p", port=1)])))
    net = ipaddress.ip_network(k3s.doc["k3s"]["cluster_cidr"])
    many = [str(net[200 + i]) for i in range(40)]
    client.DiscoveryV1Api(core.api_client).create_namespaced_endpoint_slice("default", client.V1EndpointSlice(
        metadata=client.V1ObjectMeta(name="many-1", labels={"kubernetes.io/service-name": "many"}),
        address_type="IPv4", ports=[client.DiscoveryV1EndpointPort(name="p", port=1)],
        endpoints=[client.V1Endpoint(addresses=[ip], conditions=client.V1EndpointConditions(ready=True))
                   for ip in many]))
    query = dns.message.make_query("many.default.svc.cluster.local", "A")
    udp = dns.query.udp(query, res.nameservers[0], timeout=5)
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = dns.query.tcp(query, res.nameservers[0], timeout=5)
    assert sorted(r.address for r in tcp.answer[0]) == sorted(many)

    for missing in ("nope.default.svc.cluster.local", "echo.nowhere.svc.cluster.local", "example.com"):
        with pytest.raises(dns.resolver.NXDOMAIN):
            res.resolve(missing, "A")
    with pytest.raises(dns.resolver.NoAnswer):  # the name exists, without IPv6
        res.resolve("echo.default.svc.cluster.local", "AAAA")


def _resolve(res: dns.resolver.Resolver, name: str, rdtype: str, tcp: bool) -> dns.resolver.Answer | None:
    try:
        return res.resolve(name, rdtype, tcp=tcp)
    except (dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout, dns.resolver.NXDOMAIN):
        return None  # not served yet (CoreDNS pod starting) or not published yet


def test_lab_down_closes_every_listener(tmp_path: Path) -> None:
    lab_file = write_lab(tmp_path, workers=0)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server().exit_status == 0
        core = client.CoreV1Api(lab.kube(tmp_path))
        echo_app(core, "echo", 1)
        (ip,) = ready_pod_ips(core, "echo", 1)
        server = serve_echo(ip, 7000, prefix=b"pod ")
        cluster_ip = core.read_namespaced_service("echo", "default").spec.cluster_ip
        assert wait_until(lambda: _try(cluster_ip, PORT)) == b"pod ping"
        api_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
        assert not refused(api_ip, 443)
    try:
        assert refused(cluster_ip, PORT) and refused(api_ip, 443)
    finally:
        server.shutdown()
        server.server_close()


WEB = nginx_web(readiness=True)


@pytest.mark.skipif(nginx.bin_dir() is None, reason="nginx is not installed (make tools)")
@pytest.mark.parametrize("version", ["1.34", "1.32"])
def test_busybox_wget_reaches_services_by_name(k3s: K3sLab, tmp_path: Path, version: str) -> None:
    """`kubectl run … --image=busybox -- wget …`: the container resolves names through CoreDNS and
    connects through the kube-proxy, with busybox's messages and exit codes."""
    env = {**os.environ, "KUBECONFIG": str(k3s.kubeconfig(tmp_path)), "HOME": str(tmp_path)}

    def run(name: str, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(TOOLS / f"kubectl-{version}"), "run", "-i", "--rm", f"{name}{version[-2:]}",
                               "--image=busybox", "--restart=Never", "--", *argv], env=env, input="",
                              capture_output=True, text=True, timeout=120)

    subprocess.run([str(TOOLS / f"kubectl-{version}"), "apply", "-f", "-"], env=env, input=WEB, check=True,
                   capture_output=True, text=True)
    subprocess.run([str(TOOLS / f"kubectl-{version}"), "rollout", "status", "deploy/web", "--timeout=60s"],
                   env=env, check=True, capture_output=True, text=True)
    page = run("page", "wget", "-qO-", "http://web")  # search list: web.default.svc.cluster.local
    assert page.returncode == 0 and "<title>Welcome to nginx!</title>" in page.stdout, page
    code, screen = _on_a_terminal([str(TOOLS / f"kubectl-{version}"), "run", "-it", "--rm", f"tty{version[-2:]}",
                                   "--image=busybox", "--restart=Never", "--", "wget", "-qO-", "http://web"], env)
    assert code == 0 and "<title>Welcome to nginx!</title>\r\n" in screen, screen  # kubectl run -it
    loud = run("loud", "wget", "-O-", "http://web.default.svc/")
    ip = core_ip = json.loads(subprocess.run([str(TOOLS / f"kubectl-{version}"), "get", "svc", "web", "-o", "json"],
                                             env=env, capture_output=True, text=True).stdout)["spec"]["clusterIP"]
    assert f"Connecting to web.default.svc ({ip}:80)\nwriting to stdout\n" in loud.stdout + loud.stderr
    spider = run("spider", "wget", "--spider", "http://web.default.svc.cluster.local/nope.html")
    assert spider.returncode == 1
    assert "wget: server returned error: HTTP/1.1 404 Not Found" in spider.stdout + spider.stderr
    missing = run("missing", "wget", "-qO-", "http://nosuch.default.svc")
    assert missing.returncode == 1 and "wget: bad address 'nosuch.default.svc'" in missing.stdout + missing.stderr
    # The kubernetes Service has port 443 only: port 80 of its ClusterIP is routed nowhere (iptables), so
    # busybox waits; -T ends the wait. Over https the API server answers (busybox checks no certificate).
    api_ip = json.loads(subprocess.run([str(TOOLS / f"kubectl-{version}"), "get", "svc", "kubernetes", "-o", "json"],
                                       env=env, capture_output=True, text=True).stdout)["spec"]["clusterIP"]
    assert api_ip != core_ip
    plain = run("plain", "wget", "-T", "2", "-qO-", "http://kubernetes.default.svc")
    assert plain.returncode == 1 and "wget: download timed out" in plain.stdout + plain.stderr
    token = "$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)"
    version_doc = run("token", "sh", "-c", f'wget -qO- --header "Authorization: Bearer {token}" '
                                           "https://kubernetes.default.svc/version")
    assert version_doc.returncode == 0 and '"gitVersion":"v1.34' in version_doc.stdout, version_doc
    assert "wget: note: TLS certificate validation not implemented" in version_doc.stderr


def _on_a_terminal(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal (as `kubectl run -it` wants); its exit code and screen."""
    main, terminal = pty.openpty()
    process = subprocess.Popen(argv, env=env, stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True)
    os.close(terminal)
    screen, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([main], [], [], 0.5)[0]:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: the terminal's last user is gone
                    break
                if not chunk:
                    break
                screen += chunk
        return process.wait(10), screen.decode(errors="replace")
    finally:
        process.kill()
        os.close(main)
