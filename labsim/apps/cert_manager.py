"""cert-manager's controller, as its pod would run it against the twin's API server: ACME
Issuers and ClusterIssuers (account registration, the account key in ``privateKeySecretRef``),
and Certificate -> CertificateRequest -> Order -> Challenge over real ACME (certbot's ``acme``
library) against the lab's Pebble (labsim.pebble), DNS-01 through the Cloudflare API model
(labsim.apps.cloudflare), HTTP-01 through the lab's ingress: the solver pod (labsim.apps.acmesolver
on its pod IP) behind its Service and Ingress, which the real Traefik routes; cert-manager's
self-check must get the key through it before Pebble is asked to validate, which Pebble does on
port 80 of the name's address. Conditions, events and messages are cert-manager's (v1.19) wording.

It works only while a cert-manager controller pod (the chart's labels) is Running, in that
pod's namespace as its ``--cluster-resource-namespace`` (where a ClusterIssuer's Secrets live).
Renewal falls due on the lab clock at 2/3 of a certificate's lifetime, or ``renewBefore``
before its end. ACME calls block, so each runs in a thread; one object at a time, as
cert-manager's workqueues do per key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import logging
import secrets
import socket
import ssl
import time
import urllib.parse
import zlib
from pathlib import Path

import dns.exception
import dns.resolver
import josepy as jose
import requests
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from labsim.kube.controllers.events import WARNING, EventRecorder
from labsim.kube.controllers.pods import condition, controller_ref, set_condition
from labsim.kube.controllers.times import parse_rfc3339, rfc3339
from labsim.kube.controllers.workqueue import Controller, Key

log = logging.getLogger("labsim.apps.cert_manager")
CM, ACME = "cert-manager.io/v1", "acme.cert-manager.io/v1"
KINDS = {"Certificate": CM, "CertificateRequest": CM, "Issuer": CM, "ClusterIssuer": CM, "Order": ACME,
         "Challenge": ACME}
CHALLENGE_FINALIZER = "finalizer.acme.cert-manager.io"
ACME_SOLVER_PORT = 8089  # acmesolver's --listen-port
SHIM_ANNOTATIONS = {"cert-manager.io/cluster-issuer": "ClusterIssuer", "cert-manager.io/issuer": "Issuer"}
CONTROLLER_POD = {"app.kubernetes.io/name": "cert-manager", "app.kubernetes.io/component": "controller"}
RETRY_SECONDS = (2.0, 5.0, 10.0, 30.0)  # real seconds between attempts after an ACME or DNS error
# Polling an authorization or an order: the first looks come fast (Pebble validates and issues
# within milliseconds here), then each pause 1.5 times the last, up to POLL_MOST; POLL_LIMIT in all.
POLL_FIRST, POLL_MOST, POLL_LIMIT = 0.02, 1.0, 30.0


class AcmeFailure(Exception):
    """An error in cert-manager's words, for a condition or an event; ``code`` is the ACME problem
    type (``accountDoesNotExist``, ``malformed``...) when the server answered with one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class CertManager(Controller):
    name = "cert-manager"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.events = EventRecorder(self.store, self.clock, "cert-manager")
        self.accounts: dict[tuple, tuple[acme_client.ClientV2, jose.JWK]] = {}  # (server, key hash) -> client
        self.attempts: dict[Key, int] = {}

    # -- wiring --------------------------------------------------------------------------------------
    async def run(self) -> None:
        subscription = self.store.subscribe(self.res("apiextensions.k8s.io/v1", "CustomResourceDefinition"))
        try:  # the chart brings the CRDs; nothing to do before they are served
            while not all(self.store.catalog.by_kind(v, k) for k, v in KINDS.items()):
                await subscription.next_event()
        finally:
            subscription.close()
        self.kinds = {kind: self.res(api, kind) for kind, api in KINDS.items()}
        self.secrets, self.pods = self.res("v1", "Secret"), self.res("v1", "Pod")
        self.ingresses = self.res("networking.k8s.io/v1", "Ingress")
        await super().run()

    def watches(self):
        def own(kind: str):
            def mapper(event_type: str, obj: dict) -> list[Key]:
                meta = obj["metadata"]
                keys = [(kind, meta.get("namespace"), meta["name"])]
                keys += [(ref["kind"], meta.get("namespace"), ref["name"]) for ref in meta.get("ownerReferences") or ()
                         if ref.get("controller") and ref.get("kind") in KINDS]
                return keys
            return mapper

        def pod(event_type: str, obj: dict) -> list[Key]:
            labels = obj["metadata"].get("labels") or {}
            return [("all",)] if all(labels.get(k) == v for k, v in CONTROLLER_POD.items()) else []

        def ingress(event_type: str, obj: dict) -> list[Key]:
            annotations = obj["metadata"].get("annotations") or {}
            if not any(a in annotations for a in SHIM_ANNOTATIONS):
                return []
            return [("Ingress", obj["metadata"]["namespace"], obj["metadata"]["name"])]

        def secret(event_type: str, obj: dict) -> list[Key]:  # a Certificate's Secret changed or went
            name = (obj["metadata"].get("annotations") or {}).get("cert-manager.io/certificate-name")
            return [("Certificate", obj["metadata"]["namespace"], name)] if name else []

        return [*[(res, own(kind)) for kind, res in self.kinds.items()], (self.pods, pod), (self.ingresses, ingress),
                (self.secrets, secret)]

    def namespace(self) -> str | None:
        """The namespace of a Running cert-manager controller pod: none, and nothing is done."""
        for found in self.store.list(self.pods, labels=CONTROLLER_POD):
            if (found.get("status") or {}).get("phase") == "Running":
                return found["metadata"]["namespace"]
        return None

    async def reconcile(self, key: Key) -> None:
        if key == ("all",):
            for kind, res in [*self.kinds.items(), ("Ingress", self.ingresses)]:
                for obj in self.store.list(res):
                    self.queue.add((kind, obj["metadata"].get("namespace"), obj["metadata"]["name"]))
            return
        if self.namespace() is None:
            return
        kind, ns, name = key
        if kind == "Ingress":
            self.ingress_shim(ns, name)
            return
        obj = self.store.get(self.kinds[kind], ns, name)
        if obj is None:
            return
        if obj["metadata"].get("deletionTimestamp"):
            await self.finalize(obj)
            return
        step = {"Issuer": self.issuer, "ClusterIssuer": self.issuer, "Certificate": self.certificate,
                "CertificateRequest": self.request, "Order": self.order, "Challenge": self.challenge}[kind]
        await step(obj)

    async def finalize(self, obj: dict) -> None:
        """A deleted Challenge: what it presented (TXT record, HTTP-01 solver) is gone once it was
        validated or failed, else now; then its finalizer goes."""
        finalizers = obj["metadata"].get("finalizers") or []
        if CHALLENGE_FINALIZER not in finalizers:
            return
        if (obj.get("status") or {}).get("presented"):
            issuer = self.issuer_of(obj)
            with contextlib.suppress(AcmeFailure):
                if obj["spec"]["type"] == "HTTP-01":
                    await self.clean_up_http01(obj)
                elif issuer is not None and self.cloudflare_ready():
                    await asyncio.to_thread(_clean_up, self.cloudflare, obj, self.cloudflare_token(obj, issuer))
        obj["metadata"]["finalizers"] = [f for f in finalizers if f != CHALLENGE_FINALIZER]
        self.store.update(obj)

    def cloudflare_ready(self) -> bool:
        return getattr(self.cluster, "cloudflare", None) is not None

    def retry(self, key: Key, *, recovered: bool = False) -> None:
        """Try ``key`` again later, backing off (an unreachable ACME server, a refused DNS token).
        ``recovered``: the failure was mended (an account registered again): soon, not counted."""
        n = 1 if recovered else self.attempts.setdefault(key, 0) + 1
        if not recovered:
            self.attempts[key] = n
        asyncio.get_running_loop().call_later(RETRY_SECONDS[min(n, len(RETRY_SECONDS)) - 1], self.queue.add, key)

    def key_of(self, obj: dict) -> Key:
        return (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])

    def set_status(self, obj: dict, **fields) -> dict:
        obj = {**obj, "status": {**(obj.get("status") or {}), **fields}}
        return self.store.update(obj, subresource="status")

    def set_cond(self, obj: dict, type_: str, status: str, reason: str, message: str) -> dict:
        conditions = set_condition(list((obj.get("status") or {}).get("conditions") or []), type_, status,
                                   self.clock.now(), reason, message)
        for cond in conditions:
            if cond["type"] == type_:
                cond["observedGeneration"] = obj["metadata"].get("generation", 1)
        return self.set_status(obj, conditions=conditions)

    # -- issuers -------------------------------------------------------------------------------------
    def issuer_of(self, obj: dict) -> dict | None:
        ref = obj["spec"].get("issuerRef") or {}
        if ref.get("kind") == "ClusterIssuer":
            return self.store.get(self.kinds["ClusterIssuer"], None, ref.get("name", ""))
        return self.store.get(self.kinds["Issuer"], obj["metadata"]["namespace"], ref.get("name", ""))

    def resource_namespace(self, issuer: dict) -> str:
        return issuer["metadata"].get("namespace") or self.namespace() or "cert-manager"

    async def issuer(self, issuer: dict) -> None:
        acme = issuer["spec"].get("acme")
        if not acme:
            return  # only ACME issuers are modelled
        try:
            await self.account(issuer)
        except AcmeFailure as failure:
            self.set_cond(issuer, "Ready", "False", "ErrRegisterACMEAccount", f"Failed to register ACME account: {failure}")
            self.retry(self.key_of(issuer))
            return
        self.attempts.pop(self.key_of(issuer), None)

    def ca_bundle_file(self, ca_bundle: str) -> Path:
        """The bundle as a file in the cluster's state (named by its content: rewriting it changes nothing)."""
        path = self.cluster.state_dir / "cert-manager" / f"acme-ca-{hashlib.sha256(ca_bundle.encode()).hexdigest()[:16]}.pem"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(ca_bundle))
        return path

    async def account(self, issuer: dict) -> tuple[acme_client.ClientV2, jose.JWK]:
        """The issuer's registered ACME client: its key from (or generated into) the Secret named by
        privateKeySecretRef, registered (or found again: Pebble forgets accounts when it restarts)."""
        acme = issuer["spec"]["acme"]
        key = self.account_key(issuer)
        digest = hashlib.sha256(key.key.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
        cached = self.accounts.get((acme["server"], digest))
        if cached is not None:
            return cached
        pebble = getattr(self.cluster, "pebble", None)  # set by the lab (labsim.kube.registry)
        trust = str(pebble.tls_ca_file) if pebble is not None else requests.certs.where()
        if acme.get("caBundle"):  # spec.acme.caBundle: base64 PEM the issuer trusts the ACME server with
            trust = str(self.ca_bundle_file(acme["caBundle"]))
        uri = await asyncio.to_thread(_register, acme["server"], key, acme.get("email", ""), trust)
        client = await asyncio.to_thread(_client, acme["server"], key, uri, trust)
        self.accounts[(acme["server"], digest)] = (client, key)
        fresh = self.store.get(self.kinds[issuer["kind"]], issuer["metadata"].get("namespace"), issuer["metadata"]["name"])
        fresh = self.set_status(fresh, acme={"uri": uri, "lastRegisteredEmail": acme.get("email", ""),
                                             "lastPrivateKeyHash": base64.b64encode(bytes.fromhex(digest)).decode()})
        self.set_cond(fresh, "Ready", "True", "ACMEAccountRegistered", "The ACME account was registered with the ACME server")
        return client, key

    def account_gone(self, issuer: dict, failure: AcmeFailure) -> bool:
        """The ACME server no longer knows the account (Pebble restarted): register it again."""
        if failure.code != "accountDoesNotExist":
            return False
        server = issuer["spec"]["acme"]["server"]
        for cached in [k for k in self.accounts if k[0] == server]:
            del self.accounts[cached]
        return True

    def account_key(self, issuer: dict) -> jose.JWK:
        ref = issuer["spec"]["acme"]["privateKeySecretRef"]
        ns, item = self.resource_namespace(issuer), ref.get("key") or "tls.key"
        secret = self.store.get(self.secrets, ns, ref["name"])
        if secret is not None and item in (secret.get("data") or {}):
            pem = base64.b64decode(secret["data"][item])
            return jose.JWKRSA(key=serialization.load_pem_private_key(pem, password=None))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # cert-manager's account keys: RSA 2048
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        self.store.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": ref["name"], "namespace": ns},
                           "data": {item: base64.b64encode(pem).decode()}})
        return jose.JWKRSA(key=key)

    # -- ingress-shim ----------------------------------------------------------------------------------
    def ingress_shim(self, ns: str, name: str) -> None:
        """An Ingress annotated with an issuer gets a Certificate per TLS block (named after its
        secretName, owned by the Ingress), kept in step with the block's hosts."""
        ingress = self.store.get(self.ingresses, ns, name)
        if ingress is None or ingress["metadata"].get("deletionTimestamp"):
            return
        annotations = ingress["metadata"].get("annotations") or {}
        kind = next((k for a, k in SHIM_ANNOTATIONS.items() if a in annotations), None)
        if kind is None:
            return
        issuer = annotations[next(a for a, k in SHIM_ANNOTATIONS.items() if k == kind)]
        for block in (ingress.get("spec") or {}).get("tls") or []:
            if not block.get("secretName") or not block.get("hosts"):
                self.events.record(ingress, "BadConfig", "Skipped a TLS block: spec.tls[].secretName: Required value"
                                   if not block.get("secretName") else "Skipped a TLS block: spec.tls[].hosts: Required value",
                                   WARNING)
                continue
            wanted = {"apiVersion": CM, "kind": "Certificate",
                      "metadata": {"name": block["secretName"], "namespace": ns,
                                   "labels": dict(ingress["metadata"].get("labels") or {}),
                                   "ownerReferences": [controller_ref(ingress)]},
                      "spec": {"dnsNames": list(block["hosts"]), "secretName": block["secretName"],
                               "issuerRef": {"name": issuer, "kind": kind, "group": "cert-manager.io"},
                               "usages": ["digital signature", "key encipherment"]}}
            current = self.store.get(self.kinds["Certificate"], ns, block["secretName"])
            if current is None:
                self.store.create(wanted)
                self.events.record(ingress, "CreateCertificate", f'Successfully created Certificate "{block["secretName"]}"')
            elif current["spec"].get("dnsNames") != wanted["spec"]["dnsNames"] or \
                    current["spec"].get("issuerRef") != wanted["spec"]["issuerRef"]:
                self.store.update({**current, "spec": {**current["spec"], **wanted["spec"]}})
                self.events.record(ingress, "UpdateCertificate", f'Successfully updated Certificate "{block["secretName"]}"')

    # -- certificates ----------------------------------------------------------------------------------
    async def certificate(self, cert: dict) -> None:
        ns, name = cert["metadata"]["namespace"], cert["metadata"]["name"]
        secret = self.store.get(self.secrets, ns, cert["spec"]["secretName"])
        why = self.needs_issuance(cert, secret)
        if why is None:
            self.schedule_renewal(cert)
            return
        reason, message = why
        if self.backing_off(cert):
            return
        if (condition(cert, "Issuing") or {}).get("status") != "True":
            self.events.record(cert, "Issuing", message)
            cert = self.set_cond(cert, "Issuing", "True", reason, message)
            if secret is None:
                cert = self.set_cond(cert, "Ready", "False", reason, message)
        key_pem, cert = self.next_private_key(cert)
        revision = int((cert.get("status") or {}).get("revision") or 0) + 1
        request = self.store.get(self.kinds["CertificateRequest"], ns, f"{name}-{revision}")
        if request is None:
            self.store.create(self.certificate_request(cert, key_pem, revision))
            self.events.record(cert, "Requested", f'Created new CertificateRequest resource "{name}-{revision}"')
            return
        ready = condition(request, "Ready") or {}
        if ready.get("status") == "True":
            self.issued(cert, request, key_pem, revision)
        elif ready.get("reason") == "Failed":
            self.failed(cert, request, ready)

    def failed(self, cert: dict, request: dict, ready: dict) -> None:
        """A failed request: Issuing False; a new request follows after cert-manager's back-off."""
        attempts = int((cert.get("status") or {}).get("failedIssuanceAttempts") or 0) + 1
        message = f"The certificate request has failed to complete and will be retried: {ready.get('message', '')}"
        cert = self.set_status(cert, lastFailureTime=rfc3339(self.clock.now()), failedIssuanceAttempts=attempts)
        cert = self.set_cond(cert, "Issuing", "False", ready.get("reason", "Failed"), message)
        self.events.record(cert, ready.get("reason", "Failed"), message, WARNING)
        self.backing_off(cert)

    def backing_off(self, cert: dict) -> bool:
        """After a failed issuance, wait on the lab clock (1h, doubling per failed attempt, at most
        32h); once it has passed, the failed request goes and issuance starts again."""
        status = cert.get("status") or {}
        if not status.get("lastFailureTime") or (condition(cert, "Issuing") or {}).get("status") != "False":
            return False
        attempts = int(status.get("failedIssuanceAttempts") or 1)
        due = parse_rfc3339(status["lastFailureTime"]) + min(3600 * 2 ** (attempts - 1), 32 * 3600)
        if self.clock.now() < due:
            self.at(due, self.key_of(cert))
            return True
        revision = int(status.get("revision") or 0) + 1
        self.store.delete(self.kinds["CertificateRequest"], cert["metadata"]["namespace"],
                          f"{cert['metadata']['name']}-{revision}")
        return False

    def needs_issuance(self, cert: dict, secret: dict | None) -> tuple[str, str] | None:
        if secret is None:
            return "DoesNotExist", "Issuing certificate as Secret does not exist"
        data = secret.get("data") or {}
        if not data.get("tls.crt") or not data.get("tls.key"):
            return "MissingData", "Issuing certificate as Secret does not contain a certificate"
        leaf = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
        names = sorted(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                       .get_values_for_type(x509.DNSName))
        if names != sorted(cert["spec"].get("dnsNames") or []):
            return "SecretMismatch", "Issuing certificate as Existing issued Secret is not up to date for spec: [spec.dnsNames]"
        renewal = (cert.get("status") or {}).get("renewalTime")
        if renewal and self.clock.now() >= parse_rfc3339(renewal):
            return "Renewing", f"Renewing certificate as renewal was scheduled at {_go_time(parse_rfc3339(renewal))}"
        return None

    def schedule_renewal(self, cert: dict) -> None:
        renewal = (cert.get("status") or {}).get("renewalTime")
        if renewal:
            self.at(parse_rfc3339(renewal), self.key_of(cert))

    def next_private_key(self, cert: dict) -> tuple[bytes, dict]:
        """The key the next certificate is for, kept in a temporary Secret until it is issued."""
        ns = cert["metadata"]["namespace"]
        name = (cert.get("status") or {}).get("nextPrivateKeySecretName")
        secret = self.store.get(self.secrets, ns, name) if name else None
        if secret is not None:
            return base64.b64decode(secret["data"]["tls.key"]), cert
        name = f"{cert['metadata']['name']}-{secrets.token_hex(3)[:5]}"
        pem = _private_key_pem(cert["spec"].get("privateKey") or {})
        self.store.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": name, "namespace": ns, "ownerReferences": [controller_ref(cert)],
                                        "labels": {"cert-manager.io/next-private-key": "true",
                                                   "controller.cert-manager.io/fao": "true"}},
                           "data": {"tls.key": base64.b64encode(pem).decode()}})
        self.events.record(cert, "Generated", f'Stored new private key in temporary Secret resource "{name}"')
        return pem, self.set_status(cert, nextPrivateKeySecretName=name)

    def certificate_request(self, cert: dict, key_pem: bytes, revision: int) -> dict:
        spec = cert["spec"]
        key = serialization.load_pem_private_key(key_pem, password=None)
        names = list(spec.get("dnsNames") or [])
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec["commonName"])] if spec.get("commonName") else [])
        csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
               .sign(key, hashes.SHA256()))
        annotations = {"cert-manager.io/certificate-name": cert["metadata"]["name"],
                       "cert-manager.io/certificate-revision": str(revision),
                       "cert-manager.io/private-key-secret-name": cert["status"]["nextPrivateKeySecretName"]}
        return {"apiVersion": CM, "kind": "CertificateRequest",
                "metadata": {"name": f"{cert['metadata']['name']}-{revision}", "namespace": cert["metadata"]["namespace"],
                             "annotations": annotations, "ownerReferences": [controller_ref(cert)]},
                "spec": {"issuerRef": spec["issuerRef"], "duration": spec.get("duration", "2160h0m0s"),
                         "usages": spec.get("usages") or ["digital signature", "key encipherment"],
                         "username": "system:serviceaccount:" + (self.namespace() or "") + ":cert-manager",
                         "request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()}}

    def issued(self, cert: dict, request: dict, key_pem: bytes, revision: int) -> None:
        """The CertificateRequest's chain and the next private key become the Secret."""
        chain = base64.b64decode(request["status"]["certificate"])
        leaf = x509.load_pem_x509_certificate(chain)
        spec, ns = cert["spec"], cert["metadata"]["namespace"]
        ref = spec["issuerRef"]
        annotations = {"cert-manager.io/alt-names": ",".join(spec.get("dnsNames") or []),
                       "cert-manager.io/certificate-name": cert["metadata"]["name"],
                       "cert-manager.io/common-name": spec.get("commonName", ""), "cert-manager.io/ip-sans": "",
                       "cert-manager.io/issuer-group": ref.get("group", "cert-manager.io"),
                       "cert-manager.io/issuer-kind": ref.get("kind", "Issuer"),
                       "cert-manager.io/issuer-name": ref["name"], "cert-manager.io/uri-sans": ""}
        data = {"tls.crt": base64.b64encode(chain).decode(), "tls.key": base64.b64encode(key_pem).decode()}
        if request["status"].get("ca"):  # ACME gives no CA: cert-manager then writes no ca.crt
            data["ca.crt"] = request["status"]["ca"]
        secret = self.store.get(self.secrets, ns, spec["secretName"])
        body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "data": data,
                "metadata": {"name": spec["secretName"], "namespace": ns, "annotations": annotations,
                             "labels": {"controller.cert-manager.io/fao": "true"}}}
        if secret is None:
            self.store.create(body)
        else:
            meta = secret["metadata"]
            self.store.update({**secret, "type": "kubernetes.io/tls", "data": data,
                               "metadata": {**meta, "annotations": {**(meta.get("annotations") or {}), **annotations},
                                            "labels": {**(meta.get("labels") or {}), **body["metadata"]["labels"]}}})
        not_before, not_after = leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()
        # Pebble dates certificates by wall time; the lab clock may run ahead (advance): the renewal
        # falls due 2/3 of the lifetime (or renewBefore before the end) after issuance on the lab clock.
        lifetime = not_after - not_before
        before = _duration(spec["renewBefore"]) if spec.get("renewBefore") else lifetime / 3
        renewal = self.clock.now() + lifetime - before
        cert = self.store.get(self.kinds["Certificate"], ns, cert["metadata"]["name"])
        status = {k: v for k, v in cert["status"].items()  # a success forgets earlier failures
                  if k not in ("nextPrivateKeySecretName", "lastFailureTime", "failedIssuanceAttempts")}
        status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != "Issuing"]
        status.update(notBefore=rfc3339(not_before), notAfter=rfc3339(not_after), renewalTime=rfc3339(renewal),
                      revision=revision)
        cert = self.store.update({**cert, "status": status}, subresource="status")
        cert = self.set_cond(cert, "Ready", "True", "Ready", "Certificate is up to date and has not expired")
        self.events.record(cert, "Issuing", "The certificate has been successfully issued")
        self.store.delete(self.secrets, ns, request["metadata"]["annotations"]["cert-manager.io/private-key-secret-name"])
        self.schedule_renewal(cert)

    # -- certificate requests ------------------------------------------------------------------------
    async def request(self, request: dict) -> None:
        ns, name = request["metadata"]["namespace"], request["metadata"]["name"]
        if condition(request, "Approved") is None:
            request = self.set_cond(request, "Approved", "True", "cert-manager.io",
                                    "Certificate request has been approved by cert-manager.io")
        if (condition(request, "Ready") or {}).get("reason") in ("Issued", "Failed"):
            return
        issuer = self.issuer_of(request)
        if issuer is None or (condition(issuer, "Ready") or {}).get("status") != "True":
            self.set_cond(request, "Ready", "False", "Pending",
                          f'Referenced "{request["spec"]["issuerRef"].get("kind", "Issuer")}" not found or not ready')
            self.retry(self.key_of(request))
            return
        order_name = f"{name}-{_hash32(request['spec']['request'])}"
        order = self.store.get(self.kinds["Order"], ns, order_name)
        if order is not None and not _controlled_by(order, request):  # a failed request's order, being collected
            self.retry(self.key_of(request))
            return
        if order is None:
            self.store.create(self.new_order(request, issuer, order_name))
            self.events.record(request, "OrderCreated", f"Created Order resource {ns}/{order_name}")
            self.set_cond(request, "Ready", "False", "Pending",
                          f'Waiting on certificate issuance from order {ns}/{order_name}: ""')
            return
        state = (order.get("status") or {}).get("state", "")
        if state == "valid":
            request = self.set_status(request, certificate=order["status"]["certificate"])
            self.set_cond(request, "Ready", "True", "Issued", "Certificate fetched from issuer successfully")
            self.events.record(request, "CertificateIssued", "Certificate fetched from issuer successfully")
        elif state in ("invalid", "errored"):
            message = f'Failed to wait for order resource "{order_name}" to become ready: order is in "{state}" ' \
                      f'state: {order["status"].get("reason", "")}'
            request = self.set_status(request, failureTime=rfc3339(self.clock.now()))
            self.set_cond(request, "Ready", "False", "Failed", message)
            self.events.record(request, "OrderFailed", message, WARNING)
        else:
            self.set_cond(request, "Ready", "False", "Pending",
                          f'Waiting on certificate issuance from order {ns}/{order_name}: "{state}"')

    def new_order(self, request: dict, issuer: dict, name: str) -> dict:
        csr = x509.load_pem_x509_csr(base64.b64decode(request["spec"]["request"]))
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        return {"apiVersion": ACME, "kind": "Order",
                "metadata": {"name": name, "namespace": request["metadata"]["namespace"],
                             "annotations": dict(request["metadata"].get("annotations") or {}),
                             "ownerReferences": [controller_ref(request)]},
                "spec": {"request": request["spec"]["request"], "issuerRef": request["spec"]["issuerRef"],
                         "dnsNames": names, "duration": request["spec"].get("duration")}}

    # -- orders --------------------------------------------------------------------------------------
    async def order(self, order: dict) -> None:
        status = order.get("status") or {}
        if status.get("state") in ("valid", "invalid", "errored"):
            return
        issuer = self.issuer_of(order)
        if issuer is None:
            return
        try:
            client, key = await self.account(issuer)
            if not status.get("url"):
                csr = base64.b64decode(order["spec"]["request"])
                created = await asyncio.to_thread(_call, client.new_order, csr)
                order = self.set_status(order, url=created.uri, finalizeURL=created.body.finalize, state="pending",
                                        authorizations=[_authorization(a) for a in created.authorizations])
            challenges = self.ensure_challenges(order, issuer, key)
            states = [(c.get("status") or {}).get("state") for c in challenges]
            failed = next((c["status"] for c in challenges
                           if (c.get("status") or {}).get("state") in ("invalid", "errored")), None)
            if failed is not None:
                self.set_status(order, state=failed["state"], reason=failed.get("reason", ""),
                                failureTime=rfc3339(self.clock.now()))
                return
            if all(state == "valid" for state in states):  # none: Pebble re-used valid authorizations
                chain = await asyncio.to_thread(_finalize, client, order)
                self.set_status(order, state="valid", reason="", certificate=base64.b64encode(chain.encode()).decode())
                self.events.record(order, "Complete", "Order completed successfully")
                for challenge in challenges:
                    self.store.delete(self.kinds["Challenge"], challenge["metadata"]["namespace"],
                                      challenge["metadata"]["name"])
        except AcmeFailure as failure:
            gone = failure.code is not None and self.account_gone(issuer, failure)
            if failure.code and not gone:
                # The server refused the order, or no longer knows it (a restarted Pebble): final, as in cert-manager
                what = "retrieve" if (order.get("status") or {}).get("url") else "create"
                self.set_status(order, state="errored", reason=f"Failed to {what} Order resource: {failure}"
                                if what == "retrieve" else f"Failed to create Order: {failure}",
                                failureTime=rfc3339(self.clock.now()))
                self.queue_owner(order)
                return
            self.events.record(order, "Solver", f"Failed to process order: {failure}", WARNING)
            self.retry(self.key_of(order), recovered=gone)

    def ensure_challenges(self, order: dict, issuer: dict, key: jose.JWK) -> list[dict]:
        out = []
        solver = ((issuer["spec"]["acme"].get("solvers") or [{}])[0])
        kind = "DNS-01" if "dns01" in solver else "HTTP-01"
        for authz in order["status"].get("authorizations") or []:
            if authz.get("initialState") == "valid":
                continue  # Pebble re-used an authorization this account already holds
            chall = next((c for c in authz["challenges"] if c["type"] == kind.lower()), None)
            if chall is None:
                raise AcmeFailure(f"no {kind} challenge offered for {authz['identifier']}")
            name = f"{order['metadata']['name']}-{_hash32(authz['url'])}"
            found = self.store.get(self.kinds["Challenge"], order["metadata"]["namespace"], name)
            if found is None:
                found = self.store.create(self.new_challenge(order, issuer, solver, authz, chall, kind, key, name))
                self.events.record(order, "Created", f'Created Challenge resource "{name}" for domain "{authz["identifier"]}"')
            out.append(found)
        return out

    def new_challenge(self, order: dict, issuer: dict, solver: dict, authz: dict, chall: dict, kind: str,
                      key: jose.JWK, name: str) -> dict:
        token = jose.decode_b64jose(chall["token"])
        body = messages.ChallengeBody.from_json({"type": chall["type"], "url": chall["url"], "token": chall["token"],
                                                 "status": "pending"})
        key_auth = body.chall.validation(key) if kind == "DNS-01" else body.chall.key_authorization(key)
        return {"apiVersion": ACME, "kind": "Challenge",
                "metadata": {"name": name, "namespace": order["metadata"]["namespace"],
                             "ownerReferences": [controller_ref(order)], "finalizers": [CHALLENGE_FINALIZER]},
                "spec": {"authorizationURL": authz["url"], "dnsName": authz["identifier"], "issuerRef": order["spec"]["issuerRef"],
                         "key": key_auth, "solver": solver, "token": jose.encode_b64jose(token), "type": kind,
                         "url": chall["url"], "wildcard": bool(authz.get("wildcard"))}}

    # -- challenges ----------------------------------------------------------------------------------
    async def challenge(self, challenge: dict) -> None:
        status = challenge.get("status") or {}
        if status.get("state") in ("valid", "invalid"):
            return
        if not status.get("processing"):
            challenge = self.set_status(challenge, processing=True, presented=False, state="pending")
            self.events.record(challenge, "Started", "Challenge scheduled for processing")
        issuer = self.issuer_of(challenge)
        if issuer is None:
            return
        if not challenge["status"].get("presented"):
            try:
                if challenge["spec"]["type"] == "HTTP-01":
                    await self.present_http01(challenge)
                else:
                    token = self.cloudflare_token(challenge, issuer)
                    await asyncio.to_thread(_present, self.cloudflare, challenge, token)
            except AcmeFailure as failure:
                self.events.record(challenge, "PresentError", f"Error presenting challenge: {failure}", WARNING)
                self.set_status(challenge, reason=str(failure))
                self.retry(self.key_of(challenge))
                return
            challenge = self.set_status(challenge, presented=True, reason="")
            self.events.record(challenge, "Presented", f"Presented challenge using {challenge['spec']['type']} challenge mechanism")
        if challenge["spec"]["type"] == "HTTP-01":
            try:  # the ACME server is asked only once the solver answers through the ingress
                await self.self_check(challenge)
            except AcmeFailure as failure:
                self.set_status(challenge, reason=f"Waiting for HTTP-01 challenge propagation: {failure}")
                self.retry(self.key_of(challenge))
                return
        try:
            client, _ = await self.account(issuer)
            state, detail = await asyncio.to_thread(_accept, client, challenge)
        except AcmeFailure as failure:
            gone = failure.code is not None and self.account_gone(issuer, failure)
            if failure.code and not gone:  # the server refused it: final
                self.set_status(challenge, state="errored", reason=f"Error accepting challenge: {failure}",
                                processing=False)
                self.queue_owner(challenge)
                return
            self.set_status(challenge, reason=f"Error accepting challenge: {failure}")
            self.retry(self.key_of(challenge), recovered=gone)
            return
        try:
            if challenge["spec"]["type"] == "HTTP-01":
                await self.clean_up_http01(challenge)
            else:
                await asyncio.to_thread(_clean_up, self.cloudflare, challenge, self.cloudflare_token(challenge, issuer))
        except AcmeFailure as failure:
            self.events.record(challenge, "CleanUpError", str(failure), WARNING)
        if state == "valid":
            self.set_status(challenge, state="valid", reason="Successfully authorized domain", presented=False,
                            processing=False)
            self.events.record(challenge, "DomainVerified",
                               f'Domain "{challenge["spec"]["dnsName"]}" verified with "{challenge["spec"]["type"]}" validation')
        else:
            self.set_status(challenge, state="invalid", reason=detail, presented=False, processing=False)
            self.events.record(challenge, "Failed", f"Accepting challenge authorization failed: {detail}", WARNING)
        self.queue_owner(challenge)

    def queue_owner(self, obj: dict) -> None:
        """Reconcile the object's controller (a Challenge's Order, an Order's CertificateRequest) now."""
        for ref in obj["metadata"].get("ownerReferences") or ():
            if ref.get("controller") and ref.get("kind") in KINDS:
                self.queue.add((ref["kind"], obj["metadata"]["namespace"], ref["name"]))

    # -- HTTP-01: the solver's pod (labsim.apps.acmesolver on its pod IP), Service and Ingress, as
    # cert-manager makes them; the lab's ingress (the real Traefik) routes the token's path to it
    async def present_http01(self, challenge: dict) -> None:
        spec, ns = challenge["spec"], challenge["metadata"]["namespace"]
        labels = {"acme.cert-manager.io/http-domain": str(zlib.adler32(spec["dnsName"].encode())),
                  "acme.cert-manager.io/http-token": str(zlib.adler32(spec["token"].encode())),
                  "acme.cert-manager.io/http01-solver": "true"}
        if not self.store.list(self.pods, ns, labels=labels):
            for obj in _solver_objects(challenge, labels, self.solver_image()):
                self.store.create(obj)

    async def self_check(self, challenge: dict) -> None:
        """cert-manager's propagation check before it asks the ACME server to validate: GET the
        token's URL on port 80 of the name (resolved by the lab's public DNS, challtestsrv, where
        a real pod's resolver would reach the public one), following redirects; AcmeFailure unless
        the answer is 200 with the key."""
        pebble = getattr(self.cluster, "pebble", None)
        if pebble is None or not pebble.directories:
            raise AcmeFailure("no public DNS: the embedded lab has no ACME server")
        spec = challenge["spec"]
        url = f"http://{spec['dnsName']}/.well-known/acme-challenge/{spec['token']}"
        await asyncio.to_thread(_self_check, url, spec["key"], pebble.dns_address)

    async def clean_up_http01(self, challenge: dict) -> None:
        ns, token = challenge["metadata"]["namespace"], str(zlib.adler32(challenge["spec"]["token"].encode()))
        for api, kind in (("v1", "Pod"), ("v1", "Service"), ("networking.k8s.io/v1", "Ingress")):
            res = self.res(api, kind)
            for obj in self.store.list(res, ns, labels={"acme.cert-manager.io/http-token": token}):
                self.store.delete(res, ns, obj["metadata"]["name"])

    def solver_image(self) -> str:
        for found in self.store.list(self.pods, labels=CONTROLLER_POD):
            for arg in found["spec"]["containers"][0].get("args") or []:
                if arg.startswith("--acme-http01-solver-image="):
                    return arg.split("=", 1)[1]
        return "quay.io/jetstack/cert-manager-acmesolver:v1.19.1"

    @property
    def cloudflare(self):
        api = getattr(self.cluster, "cloudflare", None)  # set by the lab (labsim.kube.registry)
        if api is None:
            raise AcmeFailure('while querying the Cloudflare API for GET "/zones": dial tcp: lookup '
                              "api.cloudflare.com: no such host (the embedded lab has no Cloudflare model)")
        return api

    def cloudflare_token(self, challenge: dict, issuer: dict) -> str:
        """The API token of the solver's Secret, as cert-manager's DNS provider reads it."""
        cloudflare = (challenge["spec"]["solver"].get("dns01") or {}).get("cloudflare")
        if cloudflare is None:
            raise AcmeFailure("only the Cloudflare DNS-01 provider is modelled in the embedded lab")
        ref = cloudflare.get("apiTokenSecretRef") or cloudflare.get("apiKeySecretRef") or {}
        ns = self.resource_namespace(issuer)
        secret = self.store.get(self.secrets, ns, ref.get("name", ""))
        if secret is None:
            raise AcmeFailure(f'error getting cloudflare secret: secrets "{ref.get("name", "")}" not found')
        data = secret.get("data") or {}
        if ref.get("key") not in data:
            raise AcmeFailure(f'specified key "{ref.get("key")}" not found in secret {ns}/{ref.get("name")}')
        return base64.b64decode(data[ref["key"]]).decode().strip()

# -- Cloudflare, as cert-manager's DNS provider calls it ------------------------------------------------
def _present(api, challenge: dict, token: str) -> None:
    fqdn = f"_acme-challenge.{challenge['spec']['dnsName'].removeprefix('*.')}."
    zone = _cloudflare(api, "GET", None, token, fqdn=fqdn)
    _cloudflare(api, "POST", f"/zones/{zone['id']}/dns_records", token,
                {"type": "TXT", "name": fqdn.rstrip("."), "content": challenge["spec"]["key"], "ttl": 60})


def _clean_up(api, challenge: dict, token: str) -> None:
    fqdn = f"_acme-challenge.{challenge['spec']['dnsName'].removeprefix('*.')}."
    zone = _cloudflare(api, "GET", None, token, fqdn=fqdn)
    uri = f"/zones/{zone['id']}/dns_records?per_page=100&type=TXT&name={fqdn.rstrip('.')}"
    for record in _cloudflare(api, "GET", uri, token):
        if record["content"] == challenge["spec"]["key"]:
            _cloudflare(api, "DELETE", f"/zones/{zone['id']}/dns_records/{record['id']}", token)


def _cloudflare(api, method: str, uri: str | None, token: str, body: dict | None = None, *, fqdn: str = ""):
    """One call, or (``uri`` None) FindNearestZoneForFQDN: the zone, trying each parent of ``fqdn``."""
    if uri is not None:
        response = api.request(method, uri, token, body)
        if not response.body["success"]:
            errors = "".join(f"\t Error: {e['code']}: {e['message']}" for e in response.body["errors"])
            raise AcmeFailure(f'while querying the Cloudflare API for {method} "{uri}" \n{errors}')
        return response.body["result"]
    labels = fqdn.rstrip(".").split(".")
    last_error = None
    for i in range(len(labels) - 1):
        try:
            zones = _cloudflare(api, "GET", "/zones?name=" + ".".join(labels[i:]), token)
        except AcmeFailure as error:
            last_error = error
            continue
        if zones:
            return zones[0]
    if last_error is not None:
        raise AcmeFailure(f"while attempting to find Zones for domain {fqdn}\n{last_error}")
    raise AcmeFailure(f"Found no Zones for domain {fqdn} (neither in the sub-domain nor in the SLD) please make sure "
                      "your domain-entries in the config are correct and the API key is correctly setup with Zone.read rights.")


def _solver_objects(challenge: dict, labels: dict, image: str) -> list[dict]:
    """cert-manager's HTTP-01 solver: a pod running acmesolver, a NodePort Service and an Ingress
    routing /.well-known/acme-challenge/<token> of the domain to it (names cm-acme-http-solver-*)."""
    spec, ns = challenge["spec"], challenge["metadata"]["namespace"]
    name = f"cm-acme-http-solver-{secrets.token_hex(3)[:5]}"
    meta = {"name": name, "namespace": ns, "labels": labels, "ownerReferences": [controller_ref(challenge)]}
    ingress_spec = ((spec.get("solver") or {}).get("http01") or {}).get("ingress") or {}
    rule = {"host": spec["dnsName"], "http": {"paths": [{
        "path": f"/.well-known/acme-challenge/{spec['token']}", "pathType": "ImplementationSpecific",
        "backend": {"service": {"name": name, "port": {"number": ACME_SOLVER_PORT}}}}]}}
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {**meta, "annotations": {"nginx.ingress.kubernetes.io/whitelist-source-range": "0.0.0.0/0,::/0"}},
               "spec": {"rules": [rule]}}
    if ingress_spec.get("ingressClassName"):
        ingress["spec"]["ingressClassName"] = ingress_spec["ingressClassName"]
    elif ingress_spec.get("class"):
        ingress["metadata"]["annotations"]["kubernetes.io/ingress.class"] = ingress_spec["class"]
    return [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {**meta, "annotations": {"sidecar.istio.io/inject": "false"}},
         "spec": {"restartPolicy": "OnFailure", "enableServiceLinks": False,
                  "containers": [{"name": "acmesolver", "image": image, "imagePullPolicy": "IfNotPresent",
                                  "args": [f"--listen-port={ACME_SOLVER_PORT}", f"--domain={spec['dnsName']}",
                                           f"--token={spec['token']}", f"--key={spec['key']}"],
                                  "ports": [{"name": "http", "containerPort": ACME_SOLVER_PORT}]}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {**meta, "annotations": {"auth.istio.io/8089": "NONE"}},
         "spec": {"type": "NodePort", "selector": labels,
                  "ports": [{"name": "http", "port": ACME_SOLVER_PORT, "targetPort": ACME_SOLVER_PORT}]}},
        ingress,
    ]


def _self_check(url: str, key: str, nameserver: str) -> None:
    """GET ``url`` as cert-manager's self-check does (Go's client: up to 10 redirects, TLS not
    verified), names resolved by ``nameserver`` (host:port); AcmeFailure in its words."""
    host_port = nameserver.rsplit(":", 1)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port, resolver.lifetime = [host_port[0]], int(host_port[1]), 5.0
    at = url
    for _ in range(10):
        where = urllib.parse.urlsplit(at)
        try:
            address = str(resolver.resolve(where.hostname, "A")[0])
        except dns.exception.DNSException:
            raise AcmeFailure(f"failed to perform self check GET request '{url}': Get \"{at}\": dial tcp: lookup "
                              f"{where.hostname}: no such host") from None
        port = where.port or (443 if where.scheme == "https" else 80)
        connection = http.client.HTTPConnection(address, port, timeout=10)
        try:
            if where.scheme == "https":  # TLS with the name for SNI, the certificate not verified
                raw = socket.create_connection((address, port), timeout=10)
                connection.sock = ssl._create_unverified_context().wrap_socket(raw, server_hostname=where.hostname)
            connection.request("GET", where.path or "/", headers={"Host": where.netloc,
                                                                   "User-Agent": "cert-manager-challenges/v1.19.1"})
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
        except OSError as error:
            reason = "connect: connection refused" if isinstance(error, ConnectionRefusedError) else str(error)
            raise AcmeFailure(f"failed to perform self check GET request '{url}': Get \"{at}\": dial tcp "
                              f"{address}:{port}: {reason}") from None
        finally:
            connection.close()
        if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
            at = urllib.parse.urljoin(at, response.getheader("Location"))
            continue
        if response.status != 200:
            raise AcmeFailure(f"wrong status code '{response.status}', expected '200'")
        if body != key:
            raise AcmeFailure(f"did not get expected response when querying endpoint, expected {key!r} "
                              f"but got: {body[:100]}".replace("'", '"'))
        return
    raise AcmeFailure(f"failed to perform self check GET request '{url}': Get \"{at}\": stopped after 10 redirects")


# -- ACME, through certbot's library (blocking: called in threads) -------------------------------------
def _network(key: jose.JWK, trust: str, account=None) -> acme_client.ClientNetwork:
    return acme_client.ClientNetwork(key, account=account, alg=jose.RS256, verify_ssl=trust,
                                     user_agent="cert-manager-clusterissuers/v1.19.1 (linux/amd64)")


def _directory(net: acme_client.ClientNetwork, server: str) -> messages.Directory:
    return messages.Directory.from_json(_call(net.get, server).json())


def _register(server: str, key: jose.JWK, email: str, trust: str) -> str:
    net = _network(key, trust)
    client = acme_client.ClientV2(_directory(net, server), net)
    registration = messages.NewRegistration.from_data(email=email or None, terms_of_service_agreed=True)
    try:
        return _call(client.new_account, registration).uri
    except acme_errors.ConflictError as existing:  # the key's account exists: that one
        return existing.location


def _client(server: str, key: jose.JWK, uri: str, trust: str) -> acme_client.ClientV2:
    account = messages.RegistrationResource(body=messages.Registration(), uri=uri)
    net = _network(key, trust, account)
    return acme_client.ClientV2(_directory(net, server), net)


def _authorization(authz) -> dict:
    return {"url": authz.uri, "identifier": authz.body.identifier.value, "initialState": authz.body.status.name,
            "wildcard": bool(authz.body.wildcard),
            "challenges": [{"type": c.chall.typ, "url": c.uri, "token": jose.encode_b64jose(c.chall.token)}
                           for c in authz.body.challenges if hasattr(c.chall, "token")]}


def _accept(client: acme_client.ClientV2, challenge: dict) -> tuple[str, str]:
    """Answer the challenge and poll its authorization until Pebble has validated it."""
    spec = challenge["spec"]
    body = messages.ChallengeBody.from_json({"type": spec["type"].lower(), "url": spec["url"], "token": spec["token"],
                                             "status": "pending"})
    _call(client.answer_challenge, body, body.chall.response(client.net.key))
    authz = messages.AuthorizationResource(body=messages.Authorization(), uri=spec["authorizationURL"])
    for pause in _pauses():
        authz, _response = _call(client.poll, authz)
        if authz.body.status in (messages.STATUS_VALID, messages.STATUS_INVALID):
            break
        time.sleep(pause)
    if authz.body.status == messages.STATUS_VALID:
        return "valid", ""
    errors = [c.error for c in authz.body.challenges if c.error]
    return "invalid", (errors[0].detail if errors else f"authorization is {authz.body.status}")


def _finalize(client: acme_client.ClientV2, order: dict) -> str:
    """Finalize the order, then poll it until Pebble has issued the certificate and fetch that
    (acme's own ``finalize_order`` sleeps a whole second before its first look)."""
    status = order["status"]
    body = messages.Order(finalize=status["finalizeURL"], status=messages.STATUS_READY)
    resource = messages.OrderResource(body=body, uri=status["url"],
                                      csr_pem=base64.b64decode(order["spec"]["request"]),
                                      authorizations=[])
    current = _call(client.begin_finalization, resource).body
    for pause in _pauses():
        if current.status == messages.STATUS_VALID and current.certificate is not None:
            return _call(_post_as_get, client, current.certificate).text
        if current.status == messages.STATUS_INVALID:
            raise AcmeFailure(str(acme_errors.IssuanceError(current.error)) if current.error is not None else
                              "The certificate order failed. No further information was provided by the server.")
        time.sleep(pause)
        current = messages.Order.from_json(_call(_post_as_get, client, resource.uri).json())
    raise AcmeFailure(f"order {resource.uri} not valid after {POLL_LIMIT:.0f} s: {current.status.name}")


def _post_as_get(client: acme_client.ClientV2, url: str):
    return client.net.post(url, None, new_nonce_url=client.directory.newNonce)


def _pauses():
    """The pauses between looks at an authorization or an order, until POLL_LIMIT seconds in all."""
    pause, waited = POLL_FIRST, 0.0
    while waited < POLL_LIMIT:
        yield pause
        waited += pause
        pause = min(pause * 1.5, POLL_MOST)


def _call(func, *args):
    """An ACME call; failures in the words cert-manager's Go client would use."""
    try:
        return func(*args)
    except acme_errors.ConflictError:
        raise
    except requests.exceptions.SSLError as error:
        request = getattr(error, "request", None)
        raise AcmeFailure(f'Get "{request.url if request is not None else ""}": tls: failed to verify certificate: '
                          "x509: certificate signed by unknown authority") from None
    except requests.ConnectionError as error:
        request = getattr(error, "request", None)
        url = request.url if request is not None else ""
        where = urllib.parse.urlsplit(url)
        raise AcmeFailure(f'{(request.method if request is not None else "GET").capitalize()} "{url}": dial tcp '
                          f'{where.hostname}:{where.port or 443}: connect: connection refused') from None
    except messages.Error as error:
        raise AcmeFailure(f"{error.code or error.typ}: {error.detail}", error.code or "unknown") from None
    except (acme_errors.Error, requests.RequestException) as error:
        raise AcmeFailure(str(error)) from None


# -- small helpers -------------------------------------------------------------------------------------
def _private_key_pem(spec: dict) -> bytes:
    if spec.get("algorithm") == "ECDSA":
        curve = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}[int(spec.get("size", 256))]
        key = ec.generate_private_key(curve)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(spec.get("size", 2048)))
    encoding = serialization.PrivateFormat.PKCS8 if spec.get("encoding") == "PKCS8" else \
        serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, encoding, serialization.NoEncryption())


def _controlled_by(obj: dict, owner: dict) -> bool:
    uid = owner["metadata"]["uid"]
    return any(ref.get("uid") == uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or ())


def _hash32(text: str) -> int:
    """A stable 32-bit number for a name suffix, as cert-manager's FNV hashes of specs."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _duration(text: str) -> float:
    """A Go duration (``720h``, ``1h30m0s``) in seconds."""
    total, number = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text[i:i + 2] == "ms" else ch
        total += float(number) * units[unit]
        number, i = "", i + len(unit)
    return total


def _go_time(seconds: float) -> str:
    """A time as Go prints it (metav1.Time's String): ``2026-12-06 03:34:21 +0000 UTC``."""
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
