"""Notebook 06's apps: Ollama, n8n on the lab's PostgreSQL and the nginx dev proxy, each behind
Traefik at ``<app>.<domain>`` with a certificate from the ingress issuer, proved with the
client its users use.

Ollama and n8n are Helm charts (otwld's ``ollama``, 8gears' ``n8n``) through ``labkit.charts``;
the nginx proxy is plain objects (``labkit.manifests``) whose server block labkit renders from
the lab file's upstreams into a ConfigMap named after its content: a new config is a new
ConfigMap and a rolling update, so a config nginx refuses stops at the new pod while the old one
keeps serving. Certificates and Ingresses are labkit's own for all three (``labkit.certs``).

n8n's database and user are made in 05's PostgreSQL as its superuser; the user's password, n8n's
encryption key and its API key are references or generated once into Secrets (kept on re-runs,
registered for redaction, never printed). The real n8n makes API keys in its UI: on the real lab
the operator puts that key where ``apps.n8n.api_key`` points.

Every probe goes to Traefik's load-balancer address with the app's host name in SNI and Host,
verified against the issuer's CA, as a browser on the home network would.

One module per concern: ``base`` (the section, the error, HTTPS through Traefik), ``sites``
(certificates, ingresses, the HTTPS probes), ``ollama``, ``n8n``, ``nginx`` and ``resources``
(requests and limits against usage). This module plans and applies them together and gathers
the checks; the notebook uses the names it re-exports.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from kubernetes import client

from labkit import charts, manifests
from labkit.apps.base import SET, AppError, https_client, settings
from labkit.apps.n8n import (
    N8nResult,
    apply_database,
    apply_secrets,
    n8n_chart,
    n8n_client,
    n8n_secret,
    n8n_tables,
    plan_database,
    plan_secrets,
    verify_n8n,
)
from labkit.apps.nginx import nginx_conf, nginx_objects, verify_nginx, wait_nginx
from labkit.apps.ollama import (
    OllamaResult,
    benchmark,
    benchmark_summary,
    ollama_chart,
    ollama_client,
    pull,
    verify_ollama,
)
from labkit.apps.resources import usage, usage_checks
from labkit.apps.sites import Site, ingress_objects, probe_sites, sites_table
from labkit.changes import Change, Check, Plan, StepTimer, untimed
from labkit.params import Lab

__all__ = ["AppError", "N8nResult", "OllamaResult", "Planned", "Site", "all_checks", "apply", "benchmark",
           "benchmark_summary", "chart_list", "checks_table", "https_client", "n8n_client", "n8n_secret", "n8n_tables",
           "nginx_conf", "objects", "ollama_client", "plan", "probe_sites", "pull", "settings", "sites_table",
           "usage", "verify_n8n", "verify_nginx", "verify_ollama"]


def chart_list(lab: Lab) -> list[charts.Chart]:
    enabled = settings(lab).enabled()
    return [make(lab) for name, make in (("ollama", ollama_chart), ("n8n", n8n_chart)) if name in enabled]


def objects(lab: Lab) -> list[dict]:
    """What labkit applies itself (beside the charts): certificates, ingresses, the nginx proxy."""
    found = ingress_objects(lab)
    if "nginx" in settings(lab).enabled():
        found += nginx_objects(lab)
    return found


PRUNED = (("v1", "ConfigMap"), ("networking.k8s.io/v1", "Ingress"), ("cert-manager.io/v1", "Certificate"),
          ("apps/v1", "Deployment"), ("v1", "Service"))


@dataclass(frozen=True)
class Planned:
    secrets: Plan[Change]
    database: Plan[Change]
    charts: Plan[charts.ChartPlan]
    objects: Plan[manifests.ObjectPlan]

    def changes(self) -> list[Change]:
        return self.secrets.changes() + self.database.changes() + self.charts.changes() + self.objects.changes()


def plan(api: client.ApiClient, lab: Lab) -> Planned:
    return Planned(plan_secrets(api, lab), plan_database(api, lab), charts.plan(api, chart_list(lab)),
                   manifests.plan(api, SET, objects(lab), PRUNED))


def apply(api: client.ApiClient, lab: Lab, planned: Planned, *, dry_run: bool = False, timeout: float = 600,
          step: StepTimer = untimed) -> list[Change]:
    """Secrets, n8n's database, the charts (installed in turn, rolled out side by side: neither
    serves the other's install), then labkit's objects once both are rolled out; the proxy's
    rollout is waited for before its old ConfigMap is pruned."""
    if dry_run:
        return []
    with step("namespace and secrets", settings(lab).namespace):
        done = apply_secrets(api, lab, planned.secrets)
    with step("n8n database", settings(lab).n8n.database.name if settings(lab).n8n else ""):
        done += apply_database(api, lab, planned.database)
    done += charts.apply(api, planned.charts, timeout=timeout, step=step, overlap=True)
    keep = Plan([i for i in planned.objects.items if i.action != "delete"])
    pruned = Plan([i for i in planned.objects.items if i.action == "delete"])
    done += manifests.apply(api, keep, step=step)
    if "nginx" in settings(lab).enabled() and not keep.is_empty:
        with step("rollout", "Deployment nginx"):
            wait_nginx(api, lab, timeout=timeout)
    done += manifests.apply(api, pruned, step=step)
    left = charts.verify(api, chart_list(lab)) + manifests.verify(api, SET, objects(lab))
    if left:
        raise AppError("after the apply these still differ from the lab file: " + "; ".join(left))
    return done


def all_checks(sites: dict[str, Site], ollama_: OllamaResult, n8n: N8nResult, proxied: list[Check],
               usage_: pd.DataFrame) -> dict[str, list[Check]]:
    """Every check of 06, by app (and ``resources`` for requests, limits and usage)."""
    found: dict[str, list[Check]] = {name: site.checks() for name, site in sites.items()}
    for name, more in (("ollama", ollama_.checks()), ("n8n", n8n.checks()), ("nginx", proxied),
                       ("resources", usage_checks(usage_))):
        if more:
            found[name] = found.get(name, []) + more
    return found


def checks_table(lab: Lab, per_app: dict[str, list[Check]]) -> pd.DataFrame:
    """Apps by checks: one row per app, a column per check (its host name written <host>), ✓ or ✗."""
    hosts = {name: app.host for name, app in settings(lab).enabled().items()}
    rows = [{"app": app, **{c.name.replace(hosts.get(app, "<host>"), "<host>"): "✓" if c.passed else "✗"
                            for c in checks}} for app, checks in per_app.items()]
    return pd.DataFrame(rows).fillna("")
