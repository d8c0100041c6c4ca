"""TLS certificates through cert-manager (notebook 03): the lab file's ACME issuers as
ClusterIssuers (with the Cloudflare API token Secret for DNS-01), a Certificate waited for until
Ready (or failed with what the ACME server or the DNS provider said), and the certificates'
lifetimes for the expiry timeline.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from cryptography import x509
from kubernetes import client

from labkit import kube, secrets
from labkit.errors import KubeError, LabError
from labkit.params import Issuer, Lab

CERT_MANAGER = "cert-manager.io/v1"
ACME = "acme.cert-manager.io/v1"
TOKEN_SECRET, TOKEN_KEY = "cloudflare-api-token", "api-token"


class CertError(LabError):
    """An issuer is not ready, or a certificate was not issued."""


def namespace(lab: Lab) -> str:
    """cert-manager's namespace: where a ClusterIssuer's Secrets (account key, API token) live."""
    chart = lab.charts.get("cert-manager")
    return chart.namespace if chart else "cert-manager"


def issuer_objects(lab: Lab) -> list[dict]:
    """One ClusterIssuer per ``tls.issuers`` entry (ACME, the lab file's solver), and for DNS-01 the
    Secret holding the Cloudflare API token (resolved from its reference; registered for redaction)."""
    if lab.tls is None:
        return []
    ns, solver = namespace(lab), lab.tls.solver
    objects = []
    if solver.dns01 is not None:
        token = lab.secret(solver.dns01.api_token)
        secrets.register(base64.b64encode(token.encode()).decode())  # as the Secret's data shows it
        objects.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": TOKEN_SECRET, "namespace": ns},
                        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()}})
        how = {"dns01": {"cloudflare": {"apiTokenSecretRef": {"name": TOKEN_SECRET, "key": TOKEN_KEY}}},
               "selector": {"dnsZones": [lab.ingress.domain]}}
    else:
        how = {"http01": {"ingress": {"ingressClassName": solver.http01.ingress_class}}}
    objects += [_cluster_issuer(lab, issuer, how) for issuer in lab.tls.issuers]
    return objects


def _cluster_issuer(lab: Lab, issuer: Issuer, solver: dict) -> dict:
    acme = {"server": issuer.server, "email": lab.tls.email,
            "privateKeySecretRef": {"name": f"{issuer.name}-account-key"}, "solvers": [solver]}
    if issuer.server_ca_file is not None:  # a test CA (Pebble, a private ACME server): trust its HTTPS
        try:
            acme["caBundle"] = base64.b64encode(issuer.server_ca_file.read_bytes()).decode()
        except OSError as exc:
            raise CertError(f"tls.issuers ({issuer.name}).server_ca_file: cannot read {issuer.server_ca_file}: "
                            f"{exc.strerror}; give the PEM the ACME server's HTTPS is trusted with (the embedded "
                            "lab's Pebble writes it when it starts)") from None
    return {"apiVersion": CERT_MANAGER, "kind": "ClusterIssuer", "metadata": {"name": issuer.name}, "spec": {"acme": acme}}


def _ready(obj: dict) -> tuple[str, str]:
    """The Ready condition's status and message ('Unknown' while there is none)."""
    found = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
    return found.get("status", "Unknown"), found.get("message", "")


def wait_issuers(api: client.ApiClient, lab: Lab, *, timeout: float = 120, dry_run: bool = False) -> pd.DataFrame:
    """Wait until every ClusterIssuer of the lab is Ready (its ACME account registered); one that
    turns not Ready raises CertError with cert-manager's message. Returns a table of them."""
    if dry_run or lab.tls is None:
        return pd.DataFrame(columns=["issuer", "server", "ready", "message"])
    names = [i.name for i in lab.tls.issuers]
    custom = client.CustomObjectsApi(api)

    def all_ready(listing) -> list[dict] | None:
        mine = [i for i in listing["items"] if i["metadata"]["name"] in names]
        failed = [(i["metadata"]["name"], _ready(i)[1]) for i in mine if _ready(i)[0] == "False"]
        if failed:
            name, message = failed[0]
            raise CertError(f"ClusterIssuer {name} is not ready: {message}\nCheck tls.issuers (the ACME server "
                            "URL and that it answers) and tls.email, then run again")
        return mine if len(mine) == len(names) and all(_ready(i)[0] == "True" for i in mine) else None

    found = _until_custom(custom.list_cluster_custom_object, all_ready, "ClusterIssuers to be Ready", timeout,
                          group="cert-manager.io", version="v1", plural="clusterissuers")
    rows = [{"issuer": i["metadata"]["name"], "server": i["spec"]["acme"]["server"], "ready": _ready(i)[0] == "True",
             "message": _ready(i)[1]} for i in found]
    return pd.DataFrame(rows, columns=["issuer", "server", "ready", "message"])


class _Listing:
    """A custom-object list as ``kube.until`` needs it (``metadata.resource_version``)."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.metadata = SimpleNamespace(resource_version=doc["metadata"].get("resourceVersion"))

    def __getitem__(self, key: str):
        return self.doc[key]


def _until_custom(list_call, check, what: str, timeout: float, **selectors):
    def listing(**kw):
        if kw.get("watch"):
            return list_call(**kw)
        return _Listing(list_call(**kw))

    return kube.until(listing, check, what=what, timeout=timeout, **selectors)


# -- a certificate ---------------------------------------------------------------------------------


def certificate(lab: Lab, name: str, namespace_: str, hosts: list[str]) -> dict:
    return {"apiVersion": CERT_MANAGER, "kind": "Certificate", "metadata": {"name": name, "namespace": namespace_},
            "spec": {"secretName": name, "dnsNames": hosts,
                     "issuerRef": {"kind": "ClusterIssuer", "name": lab.ingress.issuer, "group": "cert-manager.io"}}}


@dataclass(frozen=True)
class Issued:
    name: str
    secret: str
    serial: int
    not_after: datetime
    dns_names: list[str]


def wait_certificate(api: client.ApiClient, namespace_: str, name: str, *, timeout: float = 300) -> Issued:
    """Wait until a Certificate is Ready; then read the issued certificate from its Secret. One
    that does not get there raises CertError with what its ACME Challenges say (a DNS provider
    refusing the token, the ACME server unreachable...)."""
    custom = client.CustomObjectsApi(api)

    def ready(listing) -> dict | None:
        cert = next(iter(listing["items"]), None)
        return cert if cert and _ready(cert)[0] == "True" else None

    try:
        cert = _until_custom(custom.list_namespaced_custom_object, ready, f"Certificate {namespace_}/{name} to be Ready",
                             timeout, group="cert-manager.io", version="v1", namespace=namespace_,
                             plural="certificates", field_selector=f"metadata.name={name}")
    except KubeError:
        raise CertError(f"Certificate {namespace_}/{name} is not Ready after {timeout:.0f} s: "
                        f"{why_not_issued(api, namespace_, name)}") from None
    secret = client.CoreV1Api(api).read_namespaced_secret(cert["spec"]["secretName"], namespace_)
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"]))
    return Issued(name, cert["spec"]["secretName"], leaf.serial_number, leaf.not_valid_after_utc,
                  list(cert["spec"].get("dnsNames") or []))


def why_not_issued(api: client.ApiClient, namespace_: str, name: str) -> str:
    """What stands in the way: the Challenges' reasons, else the Certificate's Ready message, else events."""
    custom = client.CustomObjectsApi(api)
    try:
        challenges = custom.list_namespaced_custom_object("acme.cert-manager.io", "v1", namespace_, "challenges")["items"]
    except client.ApiException:
        challenges = []
    reasons = [f"Challenge {c['metadata']['name']} ({c['spec'].get('dnsName', '')}) {c.get('status', {}).get('state', '')}: "
               f"{c.get('status', {}).get('reason', '')}" for c in challenges
               if c["metadata"]["name"].startswith(name) and (c.get("status") or {}).get("reason")]
    if reasons:
        return "; ".join(reasons)
    try:
        cert = custom.get_namespaced_custom_object("cert-manager.io", "v1", namespace_, "certificates", name)
        message = _ready(cert)[1]
    except client.ApiException:
        message = ""
    return message or "; ".join(kube.warnings(api, namespace_, name)) or "no condition or event yet"


def certificates(api: client.ApiClient) -> pd.DataFrame:
    """Every Certificate: namespace, name, DNS names, issuer, Ready, not before/after and renewal."""
    try:
        listing = client.CustomObjectsApi(api).list_cluster_custom_object("cert-manager.io", "v1", "certificates")
    except client.ApiException as exc:
        if exc.status != 404:  # 404: cert-manager's CRDs are not installed (yet)
            raise KubeError(f"list Certificates: API server answered {exc.status} {exc.reason}") from None
        listing = {"items": []}
    rows = []
    for cert in listing["items"]:
        status = cert.get("status") or {}
        rows.append({"certificate": f"{cert['metadata']['namespace']}/{cert['metadata']['name']}",
                     "dns_names": ", ".join(cert["spec"].get("dnsNames") or []),
                     "issuer": cert["spec"]["issuerRef"]["name"], "ready": _ready(cert)[0] == "True",
                     "not_before": _time(status.get("notBefore")), "not_after": _time(status.get("notAfter")),
                     "renewal": _time(status.get("renewalTime"))})
    return pd.DataFrame(rows, columns=["certificate", "dns_names", "issuer", "ready", "not_before", "not_after",
                                       "renewal"])


def _time(text: str | None) -> pd.Timestamp | None:
    return pd.Timestamp(text) if text else None


def issuer_ca(lab: Lab) -> Path | None:
    """The CA bundle the ingress issuer's certificates verify against (None: the system's trust store)."""
    if lab.tls is None:
        return None
    return next((i.ca_file for i in lab.tls.issuers if i.name == lab.ingress.issuer), None)


def remove_certificate(api: client.ApiClient, namespace_: str, name: str) -> None:
    """Delete a probe's Certificate and its Secret (cert-manager leaves the Secret behind)."""
    for call in (lambda: client.CustomObjectsApi(api).delete_namespaced_custom_object(
                     "cert-manager.io", "v1", namespace_, "certificates", name),
                 lambda: client.CoreV1Api(api).delete_namespaced_secret(name, namespace_)):
        try:
            call()
        except client.ApiException as exc:
            if exc.status != 404:
                raise KubeError(f"delete {namespace_}/{name}: API server answered {exc.status} {exc.reason}") from None

