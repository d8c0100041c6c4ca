"""n8n on 05's PostgreSQL: its chart; its Secrets (the database password, the encryption key and the
API key: references or generated once, kept on re-runs, registered for redaction, never printed);
its database and user made in 05's PostgreSQL as the superuser; then proved through its public
API (readiness, its tables in PostgreSQL, a canary workflow made once)."""

from __future__ import annotations

import base64
import contextlib
import secrets as random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd
import psycopg
from kubernetes import client
from psycopg import sql

from labkit import certs, charts, kube, net, polling, postgres, secrets
from labkit.apps.base import AppError, https_client, image_parts, settings
from labkit.changes import Change, Check, Plan
from labkit.errors import KubeError
from labkit.params import Lab

N8N_SECRETS = {"database.password": ("n8n-db", "password"), "encryption_key": ("n8n-encryption-key", "key"),
               "api_key": ("n8n-api-key", "api-key")}


WORKFLOW = "labkit canary"  # the workflow 06 creates (once, by name) through n8n's public API


def n8n_chart(lab: Lab) -> charts.Chart:
    app, pg = settings(lab).n8n, postgres.settings(lab)
    repository, tag = image_parts(app)
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


@contextlib.contextmanager
def _connect(api: client.ApiClient, lab: Lab, user: str, password: str, database: str,
             timeout: float = 60) -> Iterator[psycopg.Connection]:
    pg = postgres.settings(lab)
    with postgres.forward(api, pg.namespace, f"{postgres.RELEASE}-0") as port:
        deadline, pause = time.monotonic() + timeout, polling.pauses()
        while True:
            try:
                conn = psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=database,
                                       connect_timeout=20, autocommit=True)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline or postgres._final(str(exc)):
                    raise AppError(f"cannot connect to PostgreSQL {pg.namespace}/{postgres.RELEASE}-0 as {user} "
                                   f"(database {database}): {secrets.redact(str(exc)).strip()}") from None
                time.sleep(next(pause))
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
