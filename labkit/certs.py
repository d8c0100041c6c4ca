"""TLS certificates through cert-manager (notebook 03): the lab file's ACME issuers as
ClusterIssuers (with the Cloudflare API token Secret for DNS-01), a Certificate waited for until
Ready (or failed with what the ACME server or the DNS provider said), and the certificates'
lifetimes for the expiry timeline.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from cryptography import x509
from kubernetes import client

from labkit import kube, polling, secrets
from labkit.errors import KubeError, LabError
from labkit.params import Issuer, Lab
from labkit.progress import progress

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


def wait_certificate(api: client.ApiClient, namespace_: str, name: str, *, timeout: float = 300,
                     poll: float = 1.0) -> Issued:
    """Wait until a Certificate is Ready, printing each step of its issuance as cert-manager moves
    (request, Order, Challenges); then read the issued certificate from its Secret. One that does
    not get there raises CertError naming the Certificate, its Order's and Challenges' states and
    cert-manager's reason (a DNS provider refusing the token, the ACME server unreachable...):
    at ``timeout``, or at once when the request has failed (cert-manager then waits an hour)."""
    # Polled from 0.05 s up to ``poll``: an issuance that takes a moment is seen at once (a fixed
    # 1 s poll cost 03 most of a second per certificate), a slow one is asked about every ``poll``.
    deadline, pause = time.monotonic() + timeout, polling.pauses(most=poll)
    with progress(f"Certificate {namespace_}/{name}") as bar:
        while True:
            now = issuance(api, namespace_, name)
            bar.update(note=now.step)
            if now.ready:
                break
            if now.failed or time.monotonic() >= deadline:
                when = "its request failed" if now.failed else f"after {timeout:.0f} s"
                raise CertError(f"Certificate {namespace_}/{name} is not Ready {when}: {now.why}\ncert-manager keeps "
                                "trying on its own; once the cause is fixed (the ACME server answers, the DNS token is "
                                "right...), run again")
            time.sleep(next(pause))
    cert = now.certificate
    secret = client.CoreV1Api(api).read_namespaced_secret(cert["spec"]["secretName"], namespace_)
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"]))
    return Issued(name, cert["spec"]["secretName"], leaf.serial_number, leaf.not_valid_after_utc,
                  list(cert["spec"].get("dnsNames") or []))


@dataclass(frozen=True)
class Issuance:
    """Where a Certificate's issuance stands: ``step`` for progress, ``why`` for an error."""

    certificate: dict
    ready: bool
    failed: bool  # its CertificateRequest failed: cert-manager retries only after its back-off
    step: str
    why: str


def issuance(api: client.ApiClient, namespace_: str, name: str) -> Issuance:
    """The Certificate, its newest CertificateRequest, that request's Orders and their Challenges
    (followed by owner), each with its state and cert-manager's reason or last Warning event."""
    custom = client.CustomObjectsApi(api)

    def owned(group: str, plural: str, owners: list[dict]) -> list[dict]:
        uids = {o["metadata"]["uid"] for o in owners}
        items = kube.request(f"list {plural}", lambda: custom.list_namespaced_custom_object(
            group, "v1", namespace_, plural)["items"])
        return [i for i in items if any(r.get("uid") in uids for r in i["metadata"].get("ownerReferences") or ())]

    cert = kube.request(f"read Certificate {namespace_}/{name}", lambda: custom.get_namespaced_custom_object(
        "cert-manager.io", "v1", namespace_, "certificates", name))
    ready, message = _ready(cert)
    issuing = next((c for c in (cert.get("status") or {}).get("conditions") or [] if c.get("type") == "Issuing"), {})
    steps = [f"Ready {ready}" + (f", issuing ({issuing.get('reason')})" if issuing else "")]
    requests = sorted(owned("cert-manager.io", "certificaterequests", [cert]),
                      key=lambda r: r["metadata"].get("creationTimestamp") or "")[-1:]
    failed = False
    for request in requests:
        status, reason = _condition(request, "Ready")
        failed = reason == "Failed"
        steps.append(f"CertificateRequest {request['metadata']['name']} {reason or status}")
    orders = owned("acme.cert-manager.io", "orders", requests) if requests else []
    order_lines = []
    for order in orders:
        status = order.get("status") or {}
        state = status.get("state") or ("pending" if status.get("url") else "not created at the ACME server yet")
        said = status.get("reason") or next(iter(kube.warnings(api, namespace_, order["metadata"]["name"])[-1:]), "")
        order_lines.append(f"Order {namespace_}/{order['metadata']['name']} {state}" + (f": {said}" if said else ""))
        steps.append(f"Order {order['metadata']['name']} {state}")
    challenge_lines = []
    for challenge in owned("acme.cert-manager.io", "challenges", orders) if orders else []:
        status = challenge.get("status") or {}
        line = f"Challenge {challenge['metadata']['name']} ({challenge['spec'].get('dnsName', '')}) {status.get('state', '')}"
        challenge_lines.append(line + (f": {status['reason']}" if status.get("reason") else ""))
        steps.append(challenge_lines[-1])
    if requests and failed:
        request_message = _condition(requests[0], "Ready", "message")[1]
        why = "; ".join([*challenge_lines, *order_lines, f"CertificateRequest {requests[0]['metadata']['name']} "
                         f"failed: {request_message}"])
    else:
        why = "; ".join([*challenge_lines, *order_lines]) or message or "; ".join(
            kube.warnings(api, namespace_, name)) or "no condition or event yet"
    return Issuance(cert, ready == "True", failed, " · ".join(steps), why)


def _condition(obj: dict, type_: str, field: str = "reason") -> tuple[str, str]:
    found = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})
    return found.get("status", "Unknown"), found.get(field, "")


def why_not_issued(api: client.ApiClient, namespace_: str, name: str) -> str:
    """What stands in the way of a Certificate: its Challenges' and Order's states and reasons."""
    return issuance(api, namespace_, name).why


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

