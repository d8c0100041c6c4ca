"""The lab's public DNS record for its ingress: every name resolves to the LoadBalancer address of
k3s' Traefik, as a real lab's ``*.<domain>`` record points at the address its router forwards to
the ingress. The public DNS is the lab's ``pebble-challtestsrv`` (labsim.pebble), which Pebble
resolves through when it validates HTTP-01 and which cert-manager's self-check asks, so both reach
the solver through the real Traefik. challtestsrv has no wildcard records: its default A answer is
the record. While no Traefik Service has an address, names resolve to challtestsrv's own address,
where nothing answers HTTP."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from labsim.kube.controllers.workqueue import Controller, Key

log = logging.getLogger("labsim.apps.public_dns")
INGRESS = {"app.kubernetes.io/name": "traefik"}  # k3s' Traefik chart's Service
RETRY_SECONDS = 2.0  # challtestsrv not answering yet (it starts with the lab)


class PublicDNS(Controller):
    name = "public-dns"

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self.services = self.res("v1", "Service")
        self.published: str | None = None

    def watches(self):
        def traefik(event_type: str, obj: dict) -> list[Key]:
            labels = obj["metadata"].get("labels") or {}
            return [("ingress",)] if all(labels.get(k) == v for k, v in INGRESS.items()) else []
        return [(self.services, traefik)]

    def address(self) -> str | None:
        for service in self.store.list(self.services, labels=INGRESS):
            if (service.get("spec") or {}).get("type") != "LoadBalancer" or service["metadata"].get("deletionTimestamp"):
                continue
            ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            ips = [i["ip"] for i in ingress if i.get("ip")]
            if ips:
                return ips[0]
        return None

    async def reconcile(self, key: Key) -> None:
        pebble = getattr(self.cluster, "pebble", None)  # the lab's ACME server and public DNS, if any
        if pebble is None or not pebble.directories:
            return
        address = self.address()
        if address == self.published:
            return
        try:
            await asyncio.to_thread(pebble.set_public_address, address)
        except OSError as error:
            log.debug("public DNS not answering yet: %s", error)
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self.queue.add, key)
            return
        self.published = address
        log.info("public DNS: every name resolves to %s", address or "nothing (no ingress address)")
