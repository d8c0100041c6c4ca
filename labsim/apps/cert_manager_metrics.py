"""cert-manager controller's metrics endpoint (``:9402/metrics``, the chart's ``http-metrics``
port) on each Ready controller pod's IP, served beside labsim.apps.cert_manager, which does the
controller's work: ``certmanager_certificate_expiration_timestamp_seconds``,
``certmanager_certificate_renewal_timestamp_seconds`` and ``certmanager_certificate_ready_status``
for every Certificate, and ``certmanager_clock_time_seconds``, with cert-manager's names and labels,
for a ServiceMonitor (the chart's ``prometheus.servicemonitor``) and the CertificateExpiringSoon rule.
Timestamps are lab time (the certificates' own)."""

from __future__ import annotations

import asyncio
import calendar
import time

from aiohttp import web

from labsim.apps.pods import labelled, ready_pods
from labsim.kube.controllers.workqueue import Key
from labsim.net.listeners import Address, Listeners, ListeningController

PORT = 9402
# labsim.apps.cert_manager's (not imported: that module comes with the cluster's controllers)
CONTROLLER_POD = {"app.kubernetes.io/name": "cert-manager", "app.kubernetes.io/component": "controller"}
_PODS = "pods"


class CertManagerMetrics(ListeningController):
    name = "cert-manager-metrics"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.listeners = Listeners("cert-manager's metrics")

    def watches(self):
        return [(self.res("v1", "Pod"), labelled(CONTROLLER_POD))]

    async def reconcile(self, key: Key) -> None:
        wanted = {("TCP", ip, PORT) for pod in ready_pods(self.store, CONTROLLER_POD)
                  if (ip := (pod.get("status") or {}).get("podIP"))}
        await self.listeners.sync(wanted, self._open)

    async def _open(self, address: Address):
        return await MetricsServer(self).listen(address[1], address[2])

    def certificates(self) -> list[dict]:
        if not self.store.catalog.by_kind("cert-manager.io/v1", "Certificate"):
            return []
        return self.store.list(self.res("cert-manager.io/v1", "Certificate"))


class MetricsServer:
    def __init__(self, owner: CertManagerMetrics) -> None:
        self.owner = owner
        self._server: asyncio.Server | None = None

    async def listen(self, ip: str, port: int) -> MetricsServer:
        self._server = await asyncio.get_running_loop().create_server(web.Server(self._handle), ip, port)
        return self

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        if request.path != "/metrics":
            return web.Response(status=404, text="404 page not found\n")
        return web.Response(text=render(self.owner.certificates(), self.owner.clock.now()), content_type="text/plain")

    def close(self, *, connections: bool = False) -> None:
        if self._server is not None:
            self._server.close()


def _epoch(stamp: str | None) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))) if stamp else 0.0


def render(certificates: list[dict], now: float) -> str:
    families = {
        "certmanager_certificate_expiration_timestamp_seconds": "The timestamp after which the certificate expires, "
                                                                 "expressed in Unix Epoch Time.",
        "certmanager_certificate_renewal_timestamp_seconds": "The timestamp after which the certificate should be "
                                                              "renewed, expressed in Unix Epoch Time.",
        "certmanager_certificate_ready_status": "The ready status of the certificate.",
    }
    samples: dict[str, list[str]] = {name: [] for name in families}
    for cert in sorted(certificates, key=lambda c: (c["metadata"]["namespace"], c["metadata"]["name"])):
        meta, spec, status = cert["metadata"], cert.get("spec") or {}, cert.get("status") or {}
        issuer = spec.get("issuerRef") or {}
        labels = (f'issuer_group="{issuer.get("group", "cert-manager.io")}",issuer_kind="{issuer.get("kind", "Issuer")}",'
                  f'issuer_name="{issuer.get("name", "")}",name="{meta["name"]}",namespace="{meta["namespace"]}"')
        samples["certmanager_certificate_expiration_timestamp_seconds"].append(
            f"{{{labels}}} {_epoch(status.get('notAfter')):.0f}")
        samples["certmanager_certificate_renewal_timestamp_seconds"].append(
            f"{{{labels}}} {_epoch(status.get('renewalTime')):.0f}")
        ready = next((c["status"] for c in status.get("conditions") or [] if c["type"] == "Ready"), "Unknown")
        for value in ("False", "True", "Unknown"):
            samples["certmanager_certificate_ready_status"].append(
                f'{{condition="{value}",{labels}}} {int(ready == value)}')
    lines = []
    for name, help_text in families.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *(name + s for s in samples[name])]
    lines += ["# HELP certmanager_clock_time_seconds The clock time given in seconds (from 1970/01/01 UTC).",
              "# TYPE certmanager_clock_time_seconds counter", f"certmanager_clock_time_seconds {now:.0f}"]
    return "\n".join(lines) + "\n"
