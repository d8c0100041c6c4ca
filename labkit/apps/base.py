"""What every app of 06 shares: the lab file's apps section, the error, where each app answers,
and HTTPS to an app's host name through Traefik."""

from __future__ import annotations

import ssl

import httpx

from labkit.errors import LabError
from labkit.params import App, Apps, Lab

SET = "apps"  # labkit's label on the objects it applies here (certificates, ingresses, the proxy)


SERVICES = {"ollama": ("ollama", 11434), "n8n": ("n8n", 80), "nginx": ("nginx", 80)}  # Service, port per app


HEALTH = {"ollama": "/", "n8n": "/healthz", "nginx": "/healthz"}  # what answers 200 when each app is up


class AppError(LabError):
    """An app did not come up, or did not answer as it should."""


def settings(lab: Lab) -> Apps:
    if lab.apps is None or not lab.apps.enabled():
        raise AppError(f"{lab.path}: no apps section (or every app disabled); add one (see parameters/sim.yaml) "
                       "to run 06-apps")
    return lab.apps


def image_parts(app: App) -> tuple[str, str]:
    repository, _, tag = app.image.rpartition(":")
    return repository, tag


def https_client(address: str, host: str, ca_file, *, timeout: float = 60) -> dict:
    """httpx settings reaching ``https://<host>`` at ``address`` (Traefik's load-balancer address):
    Host and SNI say ``host``, the chain is verified against ``ca_file`` and the name against
    ``host``. For httpx.Client(**...) and ollama.Client(**...) alike."""
    def sni(request: httpx.Request) -> None:
        request.extensions["sni_hostname"] = host

    return {"base_url": f"https://{address}", "headers": {"Host": host}, "timeout": timeout,
            "verify": ssl.create_default_context(cafile=str(ca_file) if ca_file else None),
            "event_hooks": {"request": [sni]}}
