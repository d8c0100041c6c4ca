"""Addresses and ingress (notebook 03): MetalLB's pools, a LoadBalancer probe answered from the
operator's machine, Traefik's settings (HelmChartConfig), and probes of what Traefik serves: TLS
verified against the issuer's CA with SNI, and HTTP redirected to HTTPS.

Probes connect from the operator's machine to the addresses the cluster publishes, as a browser
on the home network would; nothing is resolved through DNS (the host name goes in SNI and Host).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from cryptography import x509
from kubernetes import client

from labkit import certs, kube, manifests, polling
from labkit.changes import Check
from labkit.charts import ChartConfig
from labkit.errors import KubeError, LabError
from labkit.infra import PROBE_NAMESPACE
from labkit.params import Lab

METALLB = "metallb.io/v1beta1"
WEB_IMAGE = "nginx:1.27"  # a real web server wherever the probe runs
TRAEFIK = ("kube-system", "traefik")  # k3s' bundled Traefik and its LoadBalancer Service
ANNOUNCE_SECONDS = 15  # how long a just-assigned address may take to answer (the speaker announces it)


class NetError(LabError):
    """An address was not handed out, or a probe of what the cluster serves failed."""


# -- MetalLB ------------------------------------------------------------------------------------------


def metallb_namespace(lab: Lab) -> str:
    chart = lab.charts.get("metallb")
    return chart.namespace if chart else "metallb-system"


def pool_objects(lab: Lab) -> list[dict]:
    """The lab file's pools as IPAddressPools (``default`` from metallb.addresses) and, with
    l2_advertisement, one L2Advertisement announcing them all."""
    ns = metallb_namespace(lab)
    pools = [("default", [lab.metallb.addresses], True)] + [(p.name, list(p.addresses), p.auto_assign)
                                                           for p in lab.metallb.pools]
    objects = [{"apiVersion": METALLB, "kind": "IPAddressPool", "metadata": {"name": name, "namespace": ns},
                "spec": {"addresses": addresses, "autoAssign": auto}} for name, addresses, auto in pools]
    if lab.metallb.l2_advertisement:
        objects.append({"apiVersion": METALLB, "kind": "L2Advertisement", "metadata": {"name": "default", "namespace": ns},
                        "spec": {"ipAddressPools": [name for name, _, _ in pools]}})
    return objects


def pool_usage(api: client.ApiClient, lab: Lab) -> pd.DataFrame:
    """Per pool: its size, the addresses Services hold from it, and which Services."""
    taken = load_balancers(api)
    rows = []
    for name, ranges in lab.metallb.pool_ranges().items():
        mine = taken[taken["address"].map(lambda ip, r=ranges: any(_within(ip, a, b) for a, b in r))]
        size = sum(int(last) - int(first) + 1 for first, last in ranges)
        rows.append({"pool": name, "range": ", ".join(f"{a}-{b}" for a, b in ranges), "size": size,
                     "used": len(mine), "free": size - len(mine), "services": ", ".join(mine["service"])})
    return pd.DataFrame(rows, columns=["pool", "range", "size", "used", "free", "services"])


def _within(ip: str, first: ipaddress.IPv4Address, last: ipaddress.IPv4Address) -> bool:
    try:
        return first <= ipaddress.IPv4Address(ip) <= last
    except ValueError:
        return False


def load_balancers(api: client.ApiClient) -> pd.DataFrame:
    """Services of type LoadBalancer: namespace/name and the address each got ('' while pending)."""
    services = kube.request("list services", lambda: client.CoreV1Api(api).list_service_for_all_namespaces()).items
    rows = []
    for svc in services:
        if svc.spec.type != "LoadBalancer":
            continue
        ips = [i.ip for i in (svc.status.load_balancer.ingress or []) if i.ip] if svc.status.load_balancer else []
        rows.append({"service": f"{svc.metadata.namespace}/{svc.metadata.name}", "address": ips[0] if ips else ""})
    return pd.DataFrame(rows, columns=["service", "address"])


def wait_address(api: client.ApiClient, namespace: str, name: str, *, timeout: float = 120) -> str:
    """The load-balancer address a Service gets; one left pending raises NetError with what the
    address allocator said (MetalLB's AllocationFailed when the pool is exhausted)."""
    core = client.CoreV1Api(api)

    def address(services) -> str | None:
        svc = next(iter(services.items), None)
        ingress = (svc.status.load_balancer.ingress or []) if svc and svc.status.load_balancer else []
        return next((i.ip for i in ingress if i.ip), None)

    try:
        return kube.until(core.list_namespaced_service, address, what=f"Service {namespace}/{name} to get an address",
                          timeout=timeout, namespace=namespace, field_selector=f"metadata.name={name}")
    except KubeError:
        said = kube.warnings(api, namespace, name) or ["no Warning event: is MetalLB's controller running?"]
        raise NetError(f"Service {namespace}/{name} got no load-balancer address within {timeout:.0f} s: {said[-1]}\n"
                       "Free an address (or widen metallb.addresses in the lab file) and run again") from None


@dataclass(frozen=True)
class LbProbe:
    service: str
    address: str = ""
    in_pool: bool = False
    status: int | None = None
    error: str = ""

    def checks(self) -> list[Check]:
        return [Check("LoadBalancer Service gets a pool address", self.in_pool,
                      f"{self.service}: {self.address or self.error}"),
                Check("the address answers from the operator's machine", self.status == 200,
                      f"HTTP {self.status}" if self.status else self.error)]


def probe_loadbalancer(api: client.ApiClient, lab: Lab, *, timeout: float = 180, dry_run: bool = False) -> LbProbe:
    """A web server behind a LoadBalancer Service: it gets an address from the pool and answers
    HTTP from here (a dry run probes nothing)."""
    name = "labkit-probe-web"
    if dry_run:
        return LbProbe(f"{PROBE_NAMESPACE}/{name}", error="not probed: dry run")
    kube.ensure_namespace(api, PROBE_NAMESPACE)
    apply_objects(api, web_app(name, PROBE_NAMESPACE) + [_lb_service(name)])
    wait_available(api, PROBE_NAMESPACE, name, timeout=timeout)
    address = wait_address(api, PROBE_NAMESPACE, name, timeout=timeout)
    in_pool = any(_within(address, first, last) for _, first, last in lab.metallb.ranges())
    deadline, pause = time.monotonic() + ANNOUNCE_SECONDS, polling.pauses()
    while True:  # a new address answers once a speaker announces it, a moment after it is assigned
        try:
            return LbProbe(f"{PROBE_NAMESPACE}/{name}", address, in_pool, http_get(address, 80, "probe.local").status)
        except OSError as exc:
            if time.monotonic() >= deadline:
                return LbProbe(f"{PROBE_NAMESPACE}/{name}", address, in_pool, error=f"no answer from {address}:80: {exc}")
            time.sleep(next(pause))  # from 0.05 s up to 1 s, as probe_site waits for Traefik


def _lb_service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": PROBE_NAMESPACE},
            "spec": {"type": "LoadBalancer", "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 80}]}}


def web_app(name: str, namespace: str) -> list[dict]:
    """A one-replica web server and its ClusterIP Service (port 80)."""
    labels = {"app": name}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"containers": [{"name": "web", "image": WEB_IMAGE,
                                                        "ports": [{"containerPort": 80, "name": "http"}]}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace, "labels": labels},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 80}]}},
    ]


def apply_objects(api: client.ApiClient, objects: list[dict]) -> None:
    """Server-side apply of probe objects (not labelled as a lab set: they are never pruned, but removed)."""
    dyn = manifests.dynamic(api)
    for obj in objects:
        manifests.server_side_apply(manifests.resource(dyn, obj["apiVersion"], obj["kind"]), obj)


def wait_available(api: client.ApiClient, namespace: str, name: str, *, timeout: float = 180) -> None:
    apps = client.AppsV1Api(api)

    def available(deployments) -> bool | None:
        found = next(iter(deployments.items), None)
        return True if found and (found.status.available_replicas or 0) >= 1 else None

    kube.until(apps.list_namespaced_deployment, available, what=f"Deployment {namespace}/{name} to be available",
               timeout=timeout, namespace=namespace, field_selector=f"metadata.name={name}")


# -- Traefik --------------------------------------------------------------------------------------------


def traefik_config(lab: Lab) -> ChartConfig:
    """k3s' Traefik as the lab file's ``ingress`` says: HTTP redirected to HTTPS, dashboard, access
    logs (value paths of the Traefik chart k3s 1.34 bundles)."""
    ingress = lab.ingress
    values: dict = {"api": {"dashboard": ingress.dashboard}, "ingressRoute": {"dashboard": {"enabled": ingress.dashboard}},
                    "logs": {"access": {"enabled": ingress.access_logs}}}
    if ingress.redirect_https:
        values["ports"] = {"web": {"redirections": {"entryPoint": {"to": "websecure", "scheme": "https",
                                                                     "permanent": True}}}}
    return ChartConfig("traefik", values)


def traefik_address(api: client.ApiClient, *, timeout: float = 120) -> str:
    return wait_address(api, *TRAEFIK, timeout=timeout)


def whoami(lab: Lab, secret: str) -> list[dict]:
    """The test site: a web server with an Ingress for whoami.<domain> whose TLS uses ``secret``."""
    host = f"whoami.{lab.ingress.domain}"
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "whoami", "namespace": PROBE_NAMESPACE},
               "spec": {"ingressClassName": "traefik", "tls": [{"hosts": [host], "secretName": secret}],
                        "rules": [{"host": host, "http": {"paths": [{
                            "path": "/", "pathType": "Prefix",
                            "backend": {"service": {"name": "whoami", "port": {"number": 80}}}}]}}]}}
    return [*web_app("whoami", PROBE_NAMESPACE), ingress]


# -- probes of what is served -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]


def http_get(address: str, port: int, host: str, *, tls: ssl.SSLContext | None = None,
             timeout: float = 10) -> HttpAnswer:
    """``GET /`` to address:port with ``Host: host`` (and SNI ``host`` over TLS); status and headers."""
    with socket.create_connection((address, port), timeout=timeout) as raw:
        sock = tls.wrap_socket(raw, server_hostname=host) if tls else raw
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: labkit\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("iso-8859-1").split("\r\n")
    parts = head[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"not an HTTP answer: {head[0][:80]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
    return HttpAnswer(int(parts[1]), headers)


@dataclass(frozen=True)
class TlsProbe:
    host: str
    address: str
    verified: bool
    error: str
    subject_names: list[str]
    issuer: str
    not_after: datetime | None
    serial: int | None
    status: int | None

    def checks(self, expected_serial: int | None = None) -> list[Check]:
        served = f"{self.issuer}, valid until {self.not_after:%Y-%m-%d}" if self.not_after else self.error
        checks = [Check(f"https://{self.host} verifies against the issuer's CA (SNI {self.host})", self.verified,
                        served),
                  Check(f"https://{self.host} answers through Traefik", self.status == 200,
                        f"HTTP {self.status} from {self.address}" if self.status else self.error)]
        if expected_serial is not None:
            checks.append(Check("Traefik serves the issued certificate", self.serial == expected_serial,
                                f"serial {self.serial:x}" if self.serial else self.error))
        return checks


def probe_tls(address: str, host: str, *, ca_file: Path | None = None, port: int = 443,
              timeout: float = 10) -> TlsProbe:
    """Connect to address:port with SNI ``host``, verify the chain against ``ca_file`` (None: the
    system's trust store) and the name, then ``GET /``. Verification stays on: a failure is reported."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as sock:
            der = sock.getpeercert(binary_form=True)
        answer = http_get(address, port, host, tls=context, timeout=timeout)
    except (OSError, ssl.SSLError) as exc:
        return TlsProbe(host, address, False, f"{type(exc).__name__}: {exc}", [], "", None, None, None)
    cert = x509.load_der_x509_certificate(der)
    names = [str(n.value) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
    return TlsProbe(host, address, True, "", names, cert.issuer.rfc4514_string(),
                    cert.not_valid_after_utc.astimezone(UTC), cert.serial_number, answer.status)


@dataclass(frozen=True)
class RedirectProbe:
    host: str
    status: int | None
    location: str
    error: str

    def checks(self) -> list[Check]:
        redirected = self.status in (301, 302, 307, 308) and self.location.startswith(f"https://{self.host}")
        return [Check(f"http://{self.host} redirects to HTTPS", redirected,
                      f"HTTP {self.status} -> {self.location}" if self.status else self.error)]


def probe_redirect(address: str, host: str, *, port: int = 80, timeout: float = 10) -> RedirectProbe:
    try:
        answer = http_get(address, port, host, timeout=timeout)
    except OSError as exc:
        return RedirectProbe(host, None, "", f"no answer from {address}:{port}: {exc}")
    return RedirectProbe(host, answer.status, answer.headers.get("location", ""), "")


NOT_ROUTED_YET = (404, 503)  # Traefik without the route, or with it and no ready endpoint yet


@dataclass(frozen=True)
class SiteProbe:
    """The test site whoami.<domain>: its certificate, what Traefik serves, and the redirect."""

    host: str
    issued: certs.Issued | None
    tls: TlsProbe | None
    redirect: RedirectProbe | None
    error: str = ""

    def checks(self) -> list[Check]:
        ready = Check(f"Certificate for {self.host} is Ready", self.issued is not None,
                      f"serial {self.issued.serial:x}, until {self.issued.not_after:%Y-%m-%d %H:%M}"
                      if self.issued else self.error)
        if self.tls is None:
            return [ready, Check(f"https://{self.host} serves it through Traefik", False, self.error)]
        return [ready, *self.tls.checks(self.issued.serial if self.issued else None),
                *(self.redirect.checks() if self.redirect else [])]


def probe_site(api: client.ApiClient, lab: Lab, *, redirect: bool = True, timeout: float = 300,
               dry_run: bool = False) -> SiteProbe:
    """whoami.<domain> behind Traefik with a Certificate from the lab's ingress issuer: wait until
    it is issued, then connect to Traefik's load-balancer address with SNI, verifying against the
    issuer's CA, and check that plain HTTP is redirected (a dry run probes nothing)."""
    host = f"whoami.{lab.ingress.domain}"
    if dry_run:
        return SiteProbe(host, None, None, None, "not probed: dry run")
    kube.ensure_namespace(api, PROBE_NAMESPACE)
    secret = "whoami-tls"
    apply_objects(api, [certs.certificate(lab, secret, PROBE_NAMESPACE, [host]), *whoami(lab, secret)])
    issued = certs.wait_certificate(api, PROBE_NAMESPACE, secret, timeout=timeout)
    wait_available(api, PROBE_NAMESPACE, "whoami", timeout=timeout)
    address = traefik_address(api, timeout=timeout)
    tls = probe_tls(address, host, ca_file=certs.issuer_ca(lab))
    deadline, pause = time.monotonic() + 30, polling.pauses()
    # Traefik loads the new Secret, and the Service's endpoints once the pod is ready (its provider
    # applies changes at most every 2 s): until then it serves the old certificate, or 404/503.
    while (tls.serial != issued.serial or tls.status in NOT_ROUTED_YET) and time.monotonic() < deadline:
        time.sleep(next(pause))  # from 0.05 s up to 1 s: a fixed 1 s poll cost 03 two whole seconds here
        tls = probe_tls(address, host, ca_file=certs.issuer_ca(lab))
    return SiteProbe(host, issued, tls, probe_redirect(address, host) if redirect else None)
