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
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import secrets as random
import ssl
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import ollama
import pandas as pd
import psycopg
from kubernetes import client
from psycopg import sql

from labkit import certs, charts, kube, manifests, net, postgres, secrets
from labkit.changes import Change, Check, Plan, StepTimer, untimed
from labkit.errors import KubeError, LabError
from labkit.params import App, Apps, Lab
from labkit.progress import progress

SET = "apps"  # labkit's label on the objects it applies here (certificates, ingresses, the proxy)
SERVICES = {"ollama": ("ollama", 11434), "n8n": ("n8n", 80), "nginx": ("nginx", 80)}  # Service, port per app
HEALTH = {"ollama": "/", "n8n": "/healthz", "nginx": "/healthz"}  # what answers 200 when each app is up
NGINX_PORT = 8080  # the proxy listens unprivileged; its Service maps 80 to it
N8N_SECRETS = {"database.password": ("n8n-db", "password"), "encryption_key": ("n8n-encryption-key", "key"),
               "api_key": ("n8n-api-key", "api-key")}
WORKFLOW = "labkit canary"  # the workflow 06 creates (once, by name) through n8n's public API


class AppError(LabError):
    """An app did not come up, or did not answer as it should."""


def settings(lab: Lab) -> Apps:
    if lab.apps is None or not lab.apps.enabled():
        raise AppError(f"{lab.path}: no apps section (or every app disabled); add one (see parameters/sim.yaml) "
                       "to run 06-apps")
    return lab.apps


def _image(app: App) -> tuple[str, str]:
    repository, _, tag = app.image.rpartition(":")
    return repository, tag


# -- charts -------------------------------------------------------------------------------------------


def ollama_chart(lab: Lab) -> charts.Chart:
    app = settings(lab).ollama
    repository, tag = _image(app)
    values = {"image": {"repository": repository, "tag": tag},
              "resources": {"requests": dict(app.requests), "limits": dict(app.limits)},
              "persistentVolume": {"enabled": True, "storageClass": app.storage.storage_class, "size": app.storage.size}}
    return charts.Chart("ollama", chart="ollama", version=app.chart.version, repo=app.chart.repo,
                        target_namespace=settings(lab).namespace, values=values)


def n8n_chart(lab: Lab) -> charts.Chart:
    app, pg = settings(lab).n8n, postgres.settings(lab)
    repository, tag = _image(app)
    db = app.database
    env = {name: {"valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for name, (secret, key) in
           (("DB_POSTGRESDB_PASSWORD", N8N_SECRETS["database.password"]),
            ("N8N_ENCRYPTION_KEY", N8N_SECRETS["encryption_key"]), ("N8N_API_KEY", N8N_SECRETS["api_key"]))}
    main: dict[str, Any] = {
        "config": {"db": {"type": "postgresdb", "postgresdb": {
            "host": f"{postgres.RELEASE}.{pg.namespace}.svc.cluster.local", "port": postgres.PORT,
            "database": db.name, "user": db.user}}, "generic": {"timezone": app.timezone}},
        "extraEnv": env,
        "resources": {"requests": dict(app.requests), "limits": dict(app.limits)},
        "readinessProbe": {"httpGet": {"path": "/healthz/readiness", "port": "http"}},  # ready once its DB answers
    }
    if app.storage is not None:
        main["persistence"] = {"enabled": True, "type": "dynamic", "storageClass": app.storage.storage_class,
                               "size": app.storage.size}
    return charts.Chart("n8n", chart="n8n", version=app.chart.version, repo=app.chart.repo,
                        target_namespace=settings(lab).namespace,
                        values={"image": {"repository": repository, "tag": tag}, "main": main})


def chart_list(lab: Lab) -> list[charts.Chart]:
    enabled = settings(lab).enabled()
    return [make(lab) for name, make in (("ollama", ollama_chart), ("n8n", n8n_chart)) if name in enabled]


# -- the nginx dev proxy ---------------------------------------------------------------------------


def nginx_conf(lab: Lab) -> str:
    """The proxy's server block: ``/<name>/`` goes to each upstream. nginx resolves the upstreams'
    names when it starts (the pod's resolver: the cluster DNS), so a name that does not resolve
    fails the config (``host not found in upstream``) and stops the rollout."""
    app = settings(lab).nginx
    lines = ["# Rendered by labkit from the lab file's apps.nginx.upstreams; edit the lab file, not this.",
             "server {", f"    listen {NGINX_PORT};", f"    server_name {app.host};",
             "    location = /healthz { return 200 \"ok\\n\"; }",
             f"    location = / {{ return 200 \"upstreams: {' '.join(sorted(app.upstreams))}\\n\"; }}"]
    for name, url in sorted(app.upstreams.items()):
        target = url if url.count("/") > 2 else url + "/"  # with a path, nginx swaps /<name>/ for it
        lines += [f"    location /{name}/ {{", f"        proxy_pass {target.rstrip('/')}/;",
                  "        proxy_set_header X-Forwarded-Proto https;", "        proxy_http_version 1.1;", "    }"]
    return "\n".join([*lines, "}", ""])


def nginx_objects(lab: Lab, config_map: str | None = None) -> list[dict]:
    """ConfigMap ``nginx-conf-<hash of its content>``, Deployment and Service ``nginx``. The
    rolling update keeps the old pod until the new one is ready (maxUnavailable 0)."""
    app, ns = settings(lab).nginx, settings(lab).namespace
    conf = nginx_conf(lab)
    name = config_map or f"nginx-conf-{hashlib.sha256(conf.encode()).hexdigest()[:10]}"
    labels = {"app.kubernetes.io/name": "nginx", "app.kubernetes.io/part-of": "labkit-apps"}
    container = {"name": "nginx", "image": app.image, "ports": [{"name": "http", "containerPort": NGINX_PORT}],
                 "resources": {"requests": dict(app.requests), "limits": dict(app.limits)},
                 "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
                 "volumeMounts": [{"name": "conf", "mountPath": "/etc/nginx/conf.d", "readOnly": True}]}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nginx", "namespace": ns, "labels": labels},
                  "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                           "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                           "template": {"metadata": {"labels": labels}, "spec": {
                               "containers": [container], "volumes": [{"name": "conf", "configMap": {"name": name}}]}}}}
    objects = [deployment,
               {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nginx", "namespace": ns, "labels": labels},
                "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}]
    if config_map is None:
        objects.insert(0, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
                           "data": {"default.conf": conf}})
    return objects


# -- certificates and ingresses ----------------------------------------------------------------------------


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


def objects(lab: Lab) -> list[dict]:
    """What labkit applies itself (beside the charts): certificates, ingresses, the nginx proxy."""
    found = ingress_objects(lab)
    if "nginx" in settings(lab).enabled():
        found += nginx_objects(lab)
    return found


PRUNED = (("v1", "ConfigMap"), ("networking.k8s.io/v1", "Ingress"), ("cert-manager.io/v1", "Certificate"),
          ("apps/v1", "Deployment"), ("v1", "Service"))


# -- secrets: n8n's database password, encryption key and API key ---------------------------------------


def _secret_sources(lab: Lab) -> list[tuple[str, str, Any]]:
    app = settings(lab).n8n
    if app is None or not app.enabled:
        return []
    refs = {"database.password": app.database.password, "encryption_key": app.encryption_key, "api_key": app.api_key}
    return [(secret, key, refs[field]) for field, (secret, key) in N8N_SECRETS.items()]


def _read_secret(api: client.ApiClient, namespace: str, name: str) -> dict[str, str] | None:
    try:
        data = client.CoreV1Api(api).read_namespaced_secret(name, namespace).data or {}
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise KubeError(f"read Secret {namespace}/{name}: API server answered {exc.status} {exc.reason}") from None
    values = {k: base64.b64decode(v).decode() for k, v in data.items()}
    for value in values.values():
        secrets.register(value)
    return values


def plan_secrets(api: client.ApiClient, lab: Lab) -> Plan[Change]:
    """The namespace, and n8n's Secrets: created when absent (generated or from the reference), else kept."""
    ns, core = settings(lab).namespace, client.CoreV1Api(api)
    items = [Change(f"Namespace/{ns}", "create" if postgres._absent(core.read_namespace, ns) else "unchanged")]
    for name, key, source in _secret_sources(lab):
        if _read_secret(api, ns, name) is None:
            items.append(Change(f"Secret/{ns}/{name}", "create",
                                f"absent: {'generated' if source == 'generate' else f'from {source}'} {key}"))
        else:
            items.append(Change(f"Secret/{ns}/{name}", "unchanged", "kept (never rotated on a re-run)"))
    return Plan(items)


def apply_secrets(api: client.ApiClient, lab: Lab, plan_: Plan[Change]) -> list[Change]:
    ns, core, done = settings(lab).namespace, client.CoreV1Api(api), []
    sources = {f"Secret/{ns}/{name}": (name, key, source) for name, key, source in _secret_sources(lab)}
    for item in plan_.items:
        if not item.is_change:
            continue
        if item.target.startswith("Namespace/"):
            kube.ensure_namespace(api, ns)
        else:
            name, key, source = sources[item.target]
            value = random.token_urlsafe(32) if source == "generate" else lab.secret(source)
            secrets.register(value)
            core.create_namespaced_secret(ns, client.V1Secret(
                metadata=client.V1ObjectMeta(name=name, labels={"app.kubernetes.io/managed-by": "labkit"}),
                type="Opaque", string_data={key: value}))
        done.append(item)
    return done


def n8n_secret(api: client.ApiClient, lab: Lab, field: str) -> str:
    name, key = N8N_SECRETS[field]
    found = _read_secret(api, settings(lab).namespace, name)
    if found is None or key not in found:
        raise AppError(f"Secret {settings(lab).namespace}/{name} is missing: run 06-apps (its apply makes it)")
    return found[key]


# -- n8n's database in 05's PostgreSQL -------------------------------------------------------------------------


@contextlib.contextmanager
def _connect(api: client.ApiClient, lab: Lab, user: str, password: str, database: str,
             timeout: float = 60) -> Iterator[psycopg.Connection]:
    pg = postgres.settings(lab)
    with postgres.forward(api, pg.namespace, f"{postgres.RELEASE}-0") as port:
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=database,
                                       connect_timeout=20, autocommit=True)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline or postgres._final(str(exc)):
                    raise AppError(f"cannot connect to PostgreSQL {pg.namespace}/{postgres.RELEASE}-0 as {user} "
                                   f"(database {database}): {secrets.redact(str(exc)).strip()}") from None
                time.sleep(0.5)
        with conn:
            yield conn


def _as_superuser(api: client.ApiClient, lab: Lab):
    return _connect(api, lab, "postgres", postgres.credentials(api, lab)[postgres.ADMIN_KEY], "postgres")


def plan_database(api: client.ApiClient, lab: Lab) -> Plan[Change]:
    """n8n's user and database in 05's PostgreSQL: created when absent."""
    app = settings(lab).n8n
    if app is None or not app.enabled:
        return Plan([])
    db, where = app.database, f"{postgres.settings(lab).namespace}/{postgres.RELEASE}"
    try:
        with _as_superuser(api, lab) as conn:
            role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (db.user,)).fetchone()
            found = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                                 (db.name,)).fetchone()
    except postgres.PostgresError:  # 05 has not run (a dry run of the series): all of it is to make
        return Plan([Change(f"PostgreSQL role {db.user} ({where})", "create", "05's PostgreSQL is not there yet"),
                     Change(f"PostgreSQL database {db.name} ({where})", "create", "05's PostgreSQL is not there yet")])
    return Plan([Change(f"PostgreSQL role {db.user} ({where})", "unchanged" if role else "create",
                        "exists" if role else "absent: LOGIN, password from the Secret"),
                 Change(f"PostgreSQL database {db.name} ({where})", "unchanged" if found else "create",
                        f"owner {found[0]}" if found else f"absent: owner {db.user}")])


def apply_database(api: client.ApiClient, lab: Lab, plan_: Plan[Change]) -> list[Change]:
    if plan_.is_empty:
        return []
    db = settings(lab).n8n.database
    password = n8n_secret(api, lab, "database.password")
    done = []
    with _as_superuser(api, lab) as conn:
        for item in plan_.items:
            if not item.is_change:
                continue
            if item.target.startswith("PostgreSQL role"):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(db.user), sql.Literal(password)))
            else:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db.name), sql.Identifier(db.user)))
            done.append(item)
    return done


def n8n_tables(api: client.ApiClient, lab: Lab) -> pd.DataFrame:
    """The tables in n8n's database, read as n8n's own user: what n8n made when it started."""
    db = settings(lab).n8n.database
    with _connect(api, lab, db.user, n8n_secret(api, lab, "database.password"), db.name) as conn:
        rows = conn.execute("SELECT table_name, pg_get_userbyid(c.relowner), c.reltuples::bigint "
                            "FROM information_schema.tables t JOIN pg_class c ON c.relname = t.table_name "
                            "AND c.relkind = 'r' WHERE table_schema = 'public' ORDER BY table_name").fetchall()
    return pd.DataFrame(rows, columns=["table", "owner", "rows_estimate"])


# -- plan, apply ----------------------------------------------------------------------------------------------


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
    """Secrets, n8n's database, the charts (each waited for until rolled out), then labkit's
    objects; the proxy's rollout is waited for before its old ConfigMap is pruned."""
    if dry_run:
        return []
    with step("namespace and secrets", settings(lab).namespace):
        done = apply_secrets(api, lab, planned.secrets)
    with step("n8n database", settings(lab).n8n.database.name if settings(lab).n8n else ""):
        done += apply_database(api, lab, planned.database)
    done += charts.apply(api, planned.charts, timeout=timeout, step=step)
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


def wait_nginx(api: client.ApiClient, lab: Lab, *, timeout: float = 300) -> None:
    """The proxy's new pod is ready; one whose nginx refuses its config stops the rollout: the
    Deployment goes back to the config that serves now and AppError quotes nginx's error line."""
    ns, core, apps_api = settings(lab).namespace, client.CoreV1Api(api), client.AppsV1Api(api)
    with progress("nginx rollout") as bar:
        def state(pods) -> str | None:
            deployment = apps_api.read_namespaced_deployment("nginx", ns)
            if _rolled_out(deployment):
                return "done"
            for pod in pods.items:
                for status in pod.status.container_statuses or []:
                    if status.restart_count > 0 or (status.state.terminated and status.state.terminated.exit_code):
                        return pod.metadata.name
            bar.update(note=f"{deployment.status.updated_replicas or 0} updated, "
                            f"{deployment.status.available_replicas or 0} available")
            return None

        found = kube.until(core.list_namespaced_pod, state, what="Deployment nginx to roll out", timeout=timeout,
                           namespace=ns, label_selector="app.kubernetes.io/name=nginx")
    if found != "done":
        line = _nginx_error(core, ns, found)
        old = _serving_config(api, ns)
        if old:
            net.apply_objects(api, [manifests.labelled(o, SET) for o in nginx_objects(lab, old)])
        raise AppError(f"nginx refused the new config (pod {found}): {line}\nthe rollout is stopped: "
                       f"{'the proxy keeps serving ConfigMap ' + old if old else 'no earlier config to keep'}; "
                       "fix apps.nginx in the lab file and run again")


def _rolled_out(deployment: client.V1Deployment) -> bool:
    """As ``kubectl rollout status`` says: the new ReplicaSet's pods all there and available, no old
    pod left (the old one counts as available while the new one crash-loops)."""
    status, want = deployment.status, deployment.spec.replicas or 0
    return ((status.observed_generation or 0) >= (deployment.metadata.generation or 0)
            and (status.updated_replicas or 0) >= want and (status.replicas or 0) == (status.updated_replicas or 0)
            and (status.available_replicas or 0) >= want)


def _nginx_error(core: client.CoreV1Api, namespace: str, pod: str) -> str:
    for previous in (True, False):
        try:
            log = core.read_namespaced_pod_log(pod, namespace, previous=previous, tail_lines=50)
        except client.ApiException:
            continue
        lines = [line for line in log.splitlines() if "[emerg]" in line or "nginx: configuration file" in line]
        if lines:
            return lines[0].strip()
    return "(no [emerg] line in its log)"


def _serving_config(api: client.ApiClient, namespace: str) -> str | None:
    """The ConfigMap of the proxy's ReplicaSet whose pods are ready (the one that serves now)."""
    sets = client.AppsV1Api(api).list_namespaced_replica_set(namespace, label_selector="app.kubernetes.io/name=nginx")
    for rs in sorted(sets.items, key=lambda r: -int((r.metadata.annotations or {}).get(
            "deployment.kubernetes.io/revision", "0"))):
        if (rs.status.ready_replicas or 0) > 0:
            return next((v.config_map.name for v in rs.spec.template.spec.volumes or [] if v.config_map), None)
    return None


# -- verification: through Traefik, TLS verified --------------------------------------------------------------


def https_client(address: str, host: str, ca_file, *, timeout: float = 60) -> dict:
    """httpx settings reaching ``https://<host>`` at ``address`` (Traefik's load-balancer address):
    Host and SNI say ``host``, the chain is verified against ``ca_file`` and the name against
    ``host``. For httpx.Client(**...) and ollama.Client(**...) alike."""
    def sni(request: httpx.Request) -> None:
        request.extensions["sni_hostname"] = host

    return {"base_url": f"https://{address}", "headers": {"Host": host}, "timeout": timeout,
            "verify": ssl.create_default_context(cafile=str(ca_file) if ca_file else None),
            "event_hooks": {"request": [sni]}}


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
        deadline = time.monotonic() + 30
        while tls.serial != issued.serial and time.monotonic() < deadline:  # Traefik loads the new Secret
            time.sleep(1)
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


# -- Ollama ------------------------------------------------------------------------------------------------------


def ollama_client(api: client.ApiClient, lab: Lab) -> ollama.Client:
    """The official client, at https://ollama.<domain> through Traefik."""
    settings_ = https_client(net.traefik_address(api), settings(lab).ollama.host, certs.issuer_ca(lab), timeout=600)
    return ollama.Client(host=settings_.pop("base_url"), **settings_)


def pull(ollama_: ollama.Client, model: str, *, attempts: int = 4, pause: float = 2.0) -> str:
    """Pull a model with a progress line per layer and status; an unknown model raises AppError
    with Ollama's own error. A pull cut off (the connection dropped, Ollama or Traefik restarting:
    refused, or 502-504 from Traefik) is pulled again after ``pause`` seconds, doubled at each
    cut (2 + 4 + 8 s ride out a pod being replaced), Ollama resuming the layers it has, up to
    ``attempts`` times, each cut named in the progress line."""
    with progress(f"pull {model}") as bar:
        for attempt in range(1, attempts + 1):
            try:
                for update in ollama_.pull(model, stream=True):
                    tenths = (update.completed or 0) * 10 // update.total if update.total else None
                    bar.update(note=update.status + (f" {tenths * 10}%" if tenths is not None else ""))
                return model
            except ollama.ResponseError as exc:
                if exc.status_code not in (502, 503, 504):
                    raise AppError(f"Ollama could not pull {model}: {exc.error}; fix apps.ollama.models in the lab "
                                   "file (name:tag as https://ollama.com/library lists it)") from None
                cut = f"HTTP {exc.status_code} from Traefik"
            except (httpx.TransportError, ConnectionError) as exc:
                cut = str(exc) or type(exc).__name__
            if attempt == attempts:
                raise AppError(f"Ollama's pull of {model} was cut off {attempts} times (last: {cut}); "
                               "see the ollama pod's log and restart count")
            bar.update(note=f"cut off ({cut}); pulling again in {pause:g} s, Ollama resumes")
            time.sleep(pause)
            pause *= 2
    return model


def benchmark(ollama_: ollama.Client, models: list[str], prompt: str, repetitions: int) -> pd.DataFrame:
    """``repetitions`` non-streamed generations per model, then one streamed chat: tokens/s from
    Ollama's own eval_count and eval_duration, latency as the client saw it. A model that cannot
    run (too large for the pod's memory limit...) gets one row with Ollama's error."""
    rows = []
    with progress("benchmark", total=len(models) * (repetitions + 1)) as bar:
        for model in models:
            for run in range(repetitions):
                started = time.monotonic()
                try:
                    answer = ollama_.generate(model=model, prompt=prompt, stream=False)
                except ollama.ResponseError as exc:
                    rows.append({"model": model, "run": run, "mode": "generate", "error": exc.error})
                    break
                rows.append(_row(model, run, "generate", answer, time.monotonic() - started))
                bar.update(len(rows), f"{model}: {rows[-1]['tokens_per_s']:.1f} tokens/s")
            else:
                started = time.monotonic()
                chunks = list(ollama_.chat(model=model, messages=[{"role": "user", "content": prompt}], stream=True))
                rows.append(_row(model, repetitions, "chat (streamed)", chunks[-1], time.monotonic() - started,
                                 text="".join(c.message.content or "" for c in chunks)))
                bar.update(len(rows), f"{model}: streamed chat in {len(chunks)} chunks")
    return pd.DataFrame(rows, columns=["model", "run", "mode", "tokens", "tokens_per_s", "latency_s", "load_s",
                                       "answer", "error"])


def _row(model: str, run: int, mode: str, answer, latency: float, text: str | None = None) -> dict:
    tokens, seconds = answer.eval_count or 0, (answer.eval_duration or 0) / 1e9
    return {"model": model, "run": run, "mode": mode, "tokens": tokens,
            "tokens_per_s": tokens / seconds if seconds else 0.0, "latency_s": latency,
            "load_s": (answer.load_duration or 0) / 1e9,
            "answer": (text if text is not None else answer.response or "")[:80], "error": ""}


def benchmark_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean tokens/s and latency p50/p95 over its runs (errors: the error)."""
    rows = []
    for model, mine in runs.groupby("model", sort=False):
        ok = mine[mine["error"].fillna("") == ""]
        latencies = sorted(ok["latency_s"])
        rows.append({"model": model, "runs": len(ok), "tokens_per_s": ok["tokens_per_s"].mean() if len(ok) else 0.0,
                     "latency_p50_s": statistics.median(latencies) if latencies else None,
                     "latency_p95_s": _percentile(latencies, 95) if latencies else None,
                     "error": "; ".join(e for e in mine["error"].fillna("") if e)})
    return pd.DataFrame(rows, columns=["model", "runs", "tokens_per_s", "latency_p50_s", "latency_p95_s", "error"])


def _percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (a few runs: no interpolation that invents values)."""
    return values[min(len(values) - 1, max(0, -(-len(values) * pct // 100) - 1))]


@dataclass(frozen=True)
class OllamaResult:
    version: str
    models: pd.DataFrame  # /api/tags after the pulls
    runs: pd.DataFrame
    summary: pd.DataFrame
    wanted: tuple[str, ...] = ()
    skipped: bool = False

    def checks(self) -> list[Check]:
        if self.skipped:
            return []
        wanted = self.wanted
        have = set(self.models["model"])
        failed = self.summary[self.summary["error"] != ""]
        return [Check("Ollama answers the official client", bool(self.version), f"version {self.version}"),
                Check("configured models pulled", set(wanted) <= have, ", ".join(sorted(have)) or "none"),
                Check("every model generates (streamed and not)", failed.empty and len(self.summary) == len(wanted),
                      "; ".join(f"{m}: {e}" for m, e in zip(failed["model"], failed["error"], strict=True))
                      or ", ".join(f"{m} {t:.1f} tokens/s" for m, t in zip(self.summary["model"],
                                                                         self.summary["tokens_per_s"], strict=True)))]


def verify_ollama(api: client.ApiClient, lab: Lab, *, dry_run: bool = False) -> OllamaResult:
    """Pull the configured models, then benchmark them (a dry run, or Ollama disabled: nothing)."""
    app = settings(lab).enabled().get("ollama")
    if dry_run or app is None:
        empty = benchmark_summary(pd.DataFrame(columns=["model", "error"]))
        return OllamaResult("", pd.DataFrame(columns=["model", "size_mib", "parameters"]), empty, empty, skipped=True)
    with ollama_client(api, lab) as ollama_:
        for model in app.models:
            pull(ollama_, model)
        version = ollama_._client.get("/api/version").json().get("version", "")
        tags = pd.DataFrame([{"model": m.model, "size_mib": (m.size or 0) / 2**20,
                              "parameters": m.details.parameter_size if m.details else ""}
                             for m in ollama_.list().models], columns=["model", "size_mib", "parameters"])
        runs = benchmark(ollama_, list(app.models), app.benchmark.prompt, app.benchmark.repetitions)
    return OllamaResult(version, tags, runs, benchmark_summary(runs), tuple(app.models))


# -- n8n ------------------------------------------------------------------------------------------------------


def n8n_client(api: client.ApiClient, lab: Lab) -> httpx.Client:
    settings_ = https_client(net.traefik_address(api), settings(lab).n8n.host, certs.issuer_ca(lab))
    settings_["headers"]["X-N8N-API-KEY"] = n8n_secret(api, lab, "api_key")
    return httpx.Client(**settings_)


def canary_workflow() -> dict:
    """A small workflow: a manual trigger and a Set node (n8n's public API shape)."""
    return {"name": WORKFLOW, "settings": {"executionOrder": "v1"},
            "nodes": [{"id": "0f5532f9-36ba-4bef-86c7-30d607400b15", "name": "Start", "type": "n8n-nodes-base.manualTrigger",
                       "typeVersion": 1, "position": [0, 0], "parameters": {}},
                      {"id": "9b5f1c5e-2d4f-4b7a-9d57-52e8c1f1d0a2", "name": "Note", "type": "n8n-nodes-base.set",
                       "typeVersion": 3.4, "position": [220, 0],
                       "parameters": {"assignments": {"assignments": [
                           {"id": "1", "name": "written_by", "value": "labkit", "type": "string"}]}}}],
            "connections": {"Start": {"main": [[{"node": "Note", "type": "main", "index": 0}]]}}}


@dataclass(frozen=True)
class N8nResult:
    ready: int | None
    tables: pd.DataFrame
    workflows: pd.DataFrame
    created: bool
    error: str = ""
    skipped: bool = False

    def checks(self) -> list[Check]:
        if self.skipped:
            return []
        names = list(self.workflows["name"]) if not self.workflows.empty else []
        return [Check("n8n ready (/healthz/readiness: its database answers)", self.ready == 200,
                      f"HTTP {self.ready}" if self.ready == 200 else self.error),
                Check("n8n's tables are in its PostgreSQL database", "workflow_entity" in set(self.tables["table"]),
                      f"{len(self.tables)} tables: " + ", ".join(list(self.tables["table"])[:6]) if len(self.tables)
                      else self.error),
                Check(f"workflow '{WORKFLOW}' created once and listed through the API", names.count(WORKFLOW) == 1,
                      ("created" if self.created else "already there") + f"; {len(names)} workflows" if names
                      else self.error)]


def verify_n8n(api: client.ApiClient, lab: Lab, *, dry_run: bool = False) -> N8nResult:
    """Readiness, its tables in PostgreSQL, the canary workflow (a dry run, or n8n disabled: nothing)."""
    if dry_run or "n8n" not in settings(lab).enabled():
        return N8nResult(None, pd.DataFrame(columns=["table", "owner", "rows_estimate"]),
                         pd.DataFrame(columns=["id", "name", "active", "nodes"]), False, skipped=True)
    with n8n_client(api, lab) as http:
        readiness = http.get("/healthz/readiness")
        ready = readiness.status_code
        if ready != 200:  # not ready (through Traefik: no ready endpoint): n8n's log says why
            return N8nResult(ready, pd.DataFrame(columns=["table", "owner", "rows_estimate"]),
                             pd.DataFrame(columns=["id", "name", "active", "nodes"]), False,
                             f"HTTP {ready} {readiness.text.strip()[:80]}; n8n's log: {_last_log_line(api, lab, 'n8n')}")
        tables = n8n_tables(api, lab)
        try:
            created = ensure_workflow(http)
            listed = http.get("/api/v1/workflows", params={"limit": 250})
            listed.raise_for_status()
        except httpx.HTTPError as exc:
            return N8nResult(ready, tables, pd.DataFrame(columns=["id", "name", "active", "nodes"]), False,
                             f"n8n's API: {secrets.redact(str(exc))}")
    rows = [{"id": w["id"], "name": w["name"], "active": w.get("active", False), "nodes": len(w.get("nodes") or [])}
            for w in listed.json()["data"]]
    return N8nResult(ready, tables, pd.DataFrame(rows, columns=["id", "name", "active", "nodes"]), created)


def _last_log_line(api: client.ApiClient, lab: Lab, app: str) -> str:
    """The last line an app's pod logged (redacted): what it says about being not ready."""
    core, ns = client.CoreV1Api(api), settings(lab).namespace
    pods = core.list_namespaced_pod(ns, label_selector=f"app.kubernetes.io/name={app}").items
    for pod in pods:
        try:
            log = core.read_namespaced_pod_log(pod.metadata.name, ns, tail_lines=20)
        except client.ApiException:
            continue
        lines = [line.strip() for line in log.splitlines() if line.strip() and "GET /healthz" not in line]
        said = [line for line in lines if "error" in line.lower()] or lines  # an error, else the last word
        if said:
            return secrets.redact(said[-1])[:300]
    return "(no log)"


def ensure_workflow(http: httpx.Client) -> bool:
    """Create the canary workflow unless one of that name exists (True: created now)."""
    found = http.get("/api/v1/workflows", params={"name": WORKFLOW})
    found.raise_for_status()
    if any(w["name"] == WORKFLOW for w in found.json()["data"]):
        return False
    http.post("/api/v1/workflows", json=canary_workflow()).raise_for_status()
    return True


# -- nginx ------------------------------------------------------------------------------------------------------


def verify_nginx(api: client.ApiClient, lab: Lab, *, dry_run: bool = False) -> list[Check]:
    """Each upstream answers through the proxy at https://nginx.<domain>/<name>/ (not 502/503/504)."""
    app = settings(lab).enabled().get("nginx")
    if dry_run or app is None:
        return []
    checks = []
    with httpx.Client(**https_client(net.traefik_address(api), app.host, certs.issuer_ca(lab), timeout=30)) as http:
        for name, url in sorted(app.upstreams.items()):
            try:
                answer = http.get(f"/{name}/")
                detail, ok = f"HTTP {answer.status_code} from {url}", answer.status_code < 500
            except httpx.HTTPError as exc:
                detail, ok = f"{type(exc).__name__}: {exc}", False
            checks.append(Check(f"upstream {name} answers through the proxy", ok, detail))
    return checks


# -- requests and limits against usage -----------------------------------------------------------------------------


USAGE = ["app", "pod", "container", "cpu_requests_m", "cpu_limits_m", "cpu_used_m", "memory_requests_mib",
         "memory_limits_mib", "memory_used_mib", "note"]


def usage(api: client.ApiClient, lab: Lab, *, dry_run: bool = False) -> pd.DataFrame:
    """Per app pod: CPU (millicores) and memory (MiB) requested, limited and used (the metrics API,
    metrics.k8s.io, as `kubectl top pod`); usage empty with a note when the API does not answer."""
    if dry_run:
        return pd.DataFrame(columns=USAGE)
    ns = settings(lab).namespace
    pods = client.CoreV1Api(api).list_namespaced_pod(ns).items
    try:
        metrics = client.CustomObjectsApi(api).list_namespaced_custom_object("metrics.k8s.io", "v1beta1", ns, "pods")
        used = {m["metadata"]["name"]: m["containers"] for m in metrics["items"]}
        note = ""
    except client.ApiException as exc:
        used, note = {}, f"metrics API: {exc.status} {exc.reason}"
    rows = []
    for pod in pods:
        if pod.status.phase != "Running":
            continue
        app = (pod.metadata.labels or {}).get("app.kubernetes.io/name", pod.metadata.name)
        for container in pod.spec.containers:
            res = container.resources
            seen = next((c["usage"] for c in used.get(pod.metadata.name, []) if c["name"] == container.name), None)
            rows.append({"app": app, "pod": pod.metadata.name, "container": container.name,
                         **{f"cpu_{k}_m": _milli((getattr(res, k) or {}).get("cpu")) for k in ("requests", "limits")},
                         "cpu_used_m": _milli(seen["cpu"]) if seen else None,
                         **{f"memory_{k}_mib": _mib((getattr(res, k) or {}).get("memory")) for k in ("requests", "limits")},
                         "memory_used_mib": _mib(seen["memory"]) if seen else None, "note": note})
    return pd.DataFrame(rows, columns=USAGE)


def _milli(quantity: str | None) -> float | None:
    if not quantity:
        return None
    if quantity.endswith("n"):
        return int(quantity[:-1]) / 1e6
    return kube.cpu_cores(quantity) * 1000


def _mib(quantity: str | None) -> float | None:
    return kube.memory_bytes(quantity) / 2**20 if quantity else None


def usage_checks(frame: pd.DataFrame) -> list[Check]:
    """Every app container has requests and limits, and uses no more memory than its limit (none
    for an empty table: a dry run)."""
    if frame.empty:
        return []
    unbounded = frame[frame["memory_limits_mib"].isna() | frame["cpu_requests_m"].isna()]
    over = frame[frame["memory_used_mib"].notna() & (frame["memory_used_mib"] > frame["memory_limits_mib"])]
    note = next((n for n in frame["note"] if n), "")
    return [Check("every app container has requests and limits", unbounded.empty and not frame.empty,
                  ", ".join(unbounded["pod"]) or f"{len(frame)} containers"),
            Check("memory used within limits (metrics API)", over.empty and not note,
                  note or ", ".join(over["pod"]) or f"{frame['memory_used_mib'].sum():.0f} MiB used in all")]


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
