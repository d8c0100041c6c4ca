"""Each app at its host name: a Certificate from the ingress issuer and an Ingress to its Service,
then HTTPS through Traefik verified against the issuer's CA, as a browser on the home network
would see it."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import httpx
import pandas as pd
from kubernetes import client

from labkit import certs, net, polling
from labkit.apps.base import HEALTH, SERVICES, https_client, settings
from labkit.changes import Check
from labkit.params import Lab
from labkit.progress import progress


def ingress_objects(lab: Lab) -> list[dict]:
    """Per app: a Certificate ``<app>-tls`` for its host and an Ingress routing it to its Service."""
    apps, objects = settings(lab), []
    for name, app in apps.enabled().items():
        service, port = SERVICES[name]
        objects += [certs.certificate(lab, f"{name}-tls", apps.namespace, [app.host]),
                    {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name, "namespace": apps.namespace},
                     "spec": {"ingressClassName": "traefik", "tls": [{"hosts": [app.host], "secretName": f"{name}-tls"}],
                              "rules": [{"host": app.host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                                  "service": {"name": service, "port": {"number": port}}}}]}}]}}]
    return objects


@dataclass(frozen=True)
class Site:
    """An app at its host name: its certificate, HTTPS through Traefik, and the redirect."""

    app: str
    probe: net.SiteProbe

    def checks(self) -> list[Check]:
        return self.probe.checks()


def probe_sites(api: client.ApiClient, lab: Lab, *, timeout: float = 300, dry_run: bool = False) -> dict[str, Site]:
    """Each app's certificate waited for until Ready (a Challenge's reason when it is not), then
    HTTPS through Traefik verified against the issuer's CA, and HTTP redirected (a dry run: none)."""
    if dry_run:
        return {}
    apps, address, ca = settings(lab), net.traefik_address(api, timeout=timeout), certs.issuer_ca(lab)
    found = {}
    for name, app in apps.enabled().items():
        with progress(f"Certificate {apps.namespace}/{name}-tls") as bar:
            bar.update(note=f"waiting until Ready (at most {timeout:.0f} s)")
            try:
                issued = certs.wait_certificate(api, apps.namespace, f"{name}-tls", timeout=timeout)
            except certs.CertError as exc:
                bar.update(note="not Ready")
                found[name] = Site(name, net.SiteProbe(app.host, None, None, None, str(exc)))
                continue
            bar.update(note=f"Ready, serial {issued.serial:x}")
        tls = net.probe_tls(address, app.host, ca_file=ca)
        deadline, pause = time.monotonic() + 30, polling.pauses()
        while tls.serial != issued.serial and time.monotonic() < deadline:  # Traefik loads the new Secret
            time.sleep(next(pause))  # from 0.05 s up to 1 s, as net.probe_site waits
            tls = net.probe_tls(address, app.host, ca_file=ca)
        if tls.verified:  # the status that counts is the app's health path's (n8n's / is its editor UI)
            tls = dataclasses.replace(tls, status=_status(address, app.host, ca, HEALTH[name]))
        found[name] = Site(name, net.SiteProbe(app.host, issued, tls, net.probe_redirect(address, app.host)))
    return found


def _status(address: str, host: str, ca_file, path: str) -> int | None:
    try:
        with httpx.Client(**https_client(address, host, ca_file, timeout=30)) as http:
            return http.get(path).status_code
    except httpx.HTTPError:
        return None


def sites_table(sites: dict[str, Site]) -> pd.DataFrame:
    """Per app: host, the served certificate's names, issuer and expiry, or what went wrong."""
    rows = [{"app": name, "host": s.probe.host, "names": ", ".join(s.probe.tls.subject_names) if s.probe.tls else "",
             "issuer": s.probe.tls.issuer if s.probe.tls else "", "not_after": s.probe.tls.not_after if s.probe.tls else None,
             "redirect": s.probe.redirect.location if s.probe.redirect else "", "error": s.probe.error or
             (s.probe.tls.error if s.probe.tls else "")} for name, s in sites.items()]
    return pd.DataFrame(rows, columns=["app", "host", "names", "issuer", "not_after", "redirect", "error"])
