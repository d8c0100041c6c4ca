"""n8n (image ``n8nio/n8n``) as an app model. The real n8n needs ~3 GB and a Node.js 24 install,
not worth it here; this model keeps what the lab proves with it: its health endpoints, its
public REST API and its tables in the lab's **real PostgreSQL**.

- Settings from the environment as n8n reads them: ``DB_TYPE=postgresdb`` and
  ``DB_POSTGRESDB_HOST/PORT/DATABASE/USER/PASSWORD/SCHEMA`` (the host resolved through the
  cluster DNS of the container's resolv.conf), ``N8N_PORT`` (5678), ``N8N_ENCRYPTION_KEY``
  (else one is generated and kept in ``~/.n8n/config``, as n8n does), ``GENERIC_TIMEZONE``.
- On start it connects as the configured user (psycopg) and creates n8n's tables
  (``migrations``, ``settings``, ``user``, ``project``, ``workflow_entity``, ``credentials_entity``,
  ``execution_entity``...) with n8n's column names, records its migrations, and stores
  workflows there. Until that succeeds it retries every ``RETRY_SECONDS``, logging the database's
  error: ``/healthz`` answers ``{"status":"ok"}`` (the process is up) while ``/healthz/readiness``
  answers 503 ``{"status":"error"}``. (The real n8n exits when its database is unreachable at start
  and the kubelet restarts it; either way the pod is not ready.) Another ``DB_TYPE`` (n8n's default
  SQLite) is not modelled: never ready, said in the log.
- Public API ``/api/v1/workflows`` (list with ``name``/``limit``, create, get, delete) with n8n's
  shapes and errors, authenticated by the ``X-N8N-API-KEY`` header. The real n8n has its API keys
  made in its UI (Settings > n8n API) and no variable for one; this model accepts the key given in
  ``N8N_API_KEY`` (a twin-only variable the real n8n ignores), so one Secret feeds the pod and the
  operator's client; without it every API call is 401.
- ``GET /``: the editor's page (its title only: the real one is a single-page app), so a browser or
  a probe through the ingress meets a page, not a 404.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import string
import uuid
from pathlib import Path

import psycopg
from aiohttp import web
from psycopg import sql
from psycopg.types.json import Json

from labsim.apps import resolver, serve

EDITOR_PAGE = "<!DOCTYPE html>\n<html lang=\"en\"><head><title>n8n.io - Workflow Automation</title></head><body></body></html>\n"
RETRY_SECONDS = 5.0
_ID_ALPHABET = string.ascii_letters + string.digits
# n8n's first migrations (name = class name + timestamp), recorded as it records them.
MIGRATIONS = ("InitialMigration1587669153312", "WebhookModel1589476000887", "CreateIndexStoppedAt1594828256133",
              "CreateUserManagement1646992772331", "CreateProject1714133768519", "AddApiKeysTable1724951148974")
TABLES = """
CREATE TABLE IF NOT EXISTS {s}.migrations (id SERIAL PRIMARY KEY, "timestamp" BIGINT NOT NULL,
  name VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.settings (key VARCHAR(255) PRIMARY KEY, value TEXT NOT NULL,
  "loadOnStartup" BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS {s}."user" (id UUID PRIMARY KEY, email VARCHAR(255) UNIQUE, "firstName" VARCHAR(32),
  "lastName" VARCHAR(32), password VARCHAR(255), "personalizationAnswers" JSON, settings JSON,
  disabled BOOLEAN NOT NULL DEFAULT false, "mfaEnabled" BOOLEAN NOT NULL DEFAULT false, "roleSlug" VARCHAR(128),
  "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  "updatedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3));
CREATE TABLE IF NOT EXISTS {s}.project (id VARCHAR(36) PRIMARY KEY, name VARCHAR(255) NOT NULL,
  type VARCHAR(36) NOT NULL, "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  "updatedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3));
CREATE TABLE IF NOT EXISTS {s}.project_relation ("projectId" VARCHAR(36) NOT NULL, "userId" UUID NOT NULL,
  role VARCHAR NOT NULL, PRIMARY KEY ("projectId", "userId"));
CREATE TABLE IF NOT EXISTS {s}.workflow_entity (id VARCHAR(36) PRIMARY KEY, name VARCHAR(128) NOT NULL,
  active BOOLEAN NOT NULL DEFAULT false, nodes JSON NOT NULL, connections JSON NOT NULL, settings JSON,
  "staticData" JSON, "pinData" JSON, "versionId" CHAR(36), "triggerCount" INTEGER NOT NULL DEFAULT 0, meta JSON,
  "isArchived" BOOLEAN NOT NULL DEFAULT false,
  "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  "updatedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3));
CREATE TABLE IF NOT EXISTS {s}.shared_workflow ("workflowId" VARCHAR(36) NOT NULL, "projectId" VARCHAR(36) NOT NULL,
  role TEXT NOT NULL, PRIMARY KEY ("workflowId", "projectId"));
CREATE TABLE IF NOT EXISTS {s}.tag_entity (id VARCHAR(36) PRIMARY KEY, name VARCHAR(24) NOT NULL UNIQUE,
  "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  "updatedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3));
CREATE TABLE IF NOT EXISTS {s}.workflows_tags ("workflowId" VARCHAR(36) NOT NULL, "tagId" VARCHAR(36) NOT NULL,
  PRIMARY KEY ("workflowId", "tagId"));
CREATE TABLE IF NOT EXISTS {s}.credentials_entity (id VARCHAR(36) PRIMARY KEY, name VARCHAR(128) NOT NULL,
  data TEXT NOT NULL, type VARCHAR(128) NOT NULL, "isManaged" BOOLEAN NOT NULL DEFAULT false,
  "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  "updatedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3));
CREATE TABLE IF NOT EXISTS {s}.execution_entity (id SERIAL PRIMARY KEY, "workflowId" VARCHAR(36) NOT NULL,
  finished BOOLEAN NOT NULL, mode VARCHAR NOT NULL, status VARCHAR NOT NULL, "retryOf" VARCHAR,
  "retrySuccessId" VARCHAR, "startedAt" TIMESTAMPTZ(3), "stoppedAt" TIMESTAMPTZ(3), "waitTill" TIMESTAMPTZ(3),
  "deletedAt" TIMESTAMPTZ(3), "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3));
CREATE TABLE IF NOT EXISTS {s}.webhook_entity ("webhookPath" VARCHAR NOT NULL, method VARCHAR NOT NULL,
  "workflowId" VARCHAR(36) NOT NULL, node VARCHAR NOT NULL, "webhookId" VARCHAR, "pathLength" INTEGER,
  PRIMARY KEY ("webhookPath", method));
CREATE TABLE IF NOT EXISTS {s}.user_api_keys (id VARCHAR(36) PRIMARY KEY, "userId" UUID NOT NULL,
  label VARCHAR(100) NOT NULL, "apiKey" VARCHAR NOT NULL UNIQUE, scopes JSON, audience VARCHAR NOT NULL DEFAULT
  'public-api', "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  "updatedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3));
"""
_COLUMNS = ('id, name, active, nodes, connections, settings, "staticData", meta, "pinData", "versionId", '
            '"triggerCount", "isArchived", "createdAt", "updatedAt"')


class Database:
    """n8n's database: the connection settings from the environment, the schema made once."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.schema = env, env.get("DB_POSTGRESDB_SCHEMA", "public")
        self.ready = False

    async def connect(self) -> psycopg.AsyncConnection:
        env = self.env
        host = await resolver.resolve(env.get("DB_POSTGRESDB_HOST", "localhost"))
        return await psycopg.AsyncConnection.connect(
            host=host, port=int(env.get("DB_POSTGRESDB_PORT", "5432")), dbname=env.get("DB_POSTGRESDB_DATABASE", "n8n"),
            user=env.get("DB_POSTGRESDB_USER", "postgres"), password=env.get("DB_POSTGRESDB_PASSWORD", ""),
            connect_timeout=5, autocommit=True)

    async def migrate(self) -> None:
        """Retry until the tables are there (n8n's start), then be ready."""
        if self.env.get("DB_TYPE", "sqlite") != "postgresdb":
            print(f"DB_TYPE {self.env.get('DB_TYPE', 'sqlite')!r} is not modelled by the embedded lab "
                  "(set DB_TYPE=postgresdb): not ready", flush=True)
            return
        while not self.ready:
            try:
                async with await self.connect() as conn:
                    await self._create(conn)
                self.ready = True
                print("Migrations finished. n8n ready on the database "
                      f"{self.env.get('DB_POSTGRESDB_DATABASE', 'n8n')}", flush=True)
            except (OSError, psycopg.Error, resolver.NoSuchHost) as exc:
                print(f"There was an error initializing DB: {str(exc).strip()}", flush=True)
                await asyncio.sleep(RETRY_SECONDS)

    async def _create(self, conn: psycopg.AsyncConnection) -> None:
        schema = sql.Identifier(self.schema)
        async with conn.transaction():
            await conn.execute(sql.SQL(TABLES).format(s=schema))
            cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}.migrations").format(schema))
            if (await cur.fetchone())[0]:
                return
            for name in MIGRATIONS:
                await conn.execute(sql.SQL("INSERT INTO {}.migrations (\"timestamp\", name) VALUES (%s, %s)")
                                   .format(schema), (int(name[-13:]), name))
            owner, project = uuid.uuid4(), _id()
            await conn.execute(sql.SQL('INSERT INTO {}."user" (id, "roleSlug") VALUES (%s, %s)').format(schema),
                               (owner, "global:owner"))
            await conn.execute(sql.SQL("INSERT INTO {}.project (id, name, type) VALUES (%s, %s, 'personal')")
                               .format(schema), (project, "<unnamed> <personal project>"))
            await conn.execute(sql.SQL('INSERT INTO {}.project_relation ("projectId", "userId", role) '
                                       "VALUES (%s, %s, 'project:personalOwner')").format(schema), (project, owner))
            await conn.execute(sql.SQL('INSERT INTO {}.settings (key, value, "loadOnStartup") VALUES '
                                       "('userManagement.isInstanceOwnerSetUp', 'false', true)").format(schema))


def _id() -> str:
    """n8n's ids: 16 characters of nanoid's alphanumeric alphabet."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def _workflow(row: tuple) -> dict:
    names = [c.strip().strip('"') for c in _COLUMNS.split(",")]
    found = dict(zip(names, row, strict=True))
    for key in ("createdAt", "updatedAt"):
        found[key] = found[key].isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {**found, "tags": []}


def _message(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


class PublicApi:
    def __init__(self, db: Database, api_key: str) -> None:
        self.db, self.api_key = db, api_key

    @web.middleware
    async def authenticate(self, request: web.Request, handler):
        if request.path.startswith("/api/v1/"):
            given = request.headers.get("X-N8N-API-KEY")
            if not given:
                return _message(401, "'X-N8N-API-KEY' header required")
            if not self.api_key or not secrets.compare_digest(given, self.api_key):
                return _message(401, "unauthorized")
            if not self.db.ready:
                return _message(503, "Database is not ready!")
        return await handler(request)

    async def _rows(self, query: str, *args) -> list[tuple]:
        async with await self.db.connect() as conn:
            cur = await conn.execute(sql.SQL(query).format(s=sql.Identifier(self.db.schema)), args)
            return await cur.fetchall() if cur.description else []

    async def list(self, request: web.Request) -> web.Response:
        limit = min(int(request.query.get("limit", "100")), 250)
        name = request.query.get("name")
        where = "WHERE name = %s" if name else ""
        rows = await self._rows(f'SELECT {_COLUMNS} FROM {{s}}.workflow_entity {where} ORDER BY "createdAt", id '
                                f"LIMIT {limit}", *([name] if name else []))
        return web.json_response({"data": [_workflow(r) for r in rows], "nextCursor": None})

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _message(400, "request/body must be object")
        for field in ("name", "nodes", "connections", "settings"):
            if field not in body:
                return _message(400, f"request/body must have required property '{field}'")
        workflow_id = _id()
        rows = await self._rows(
            f'INSERT INTO {{s}}.workflow_entity (id, name, nodes, connections, settings, "staticData", "versionId") '
            f"VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            workflow_id, body["name"], Json(body["nodes"]), Json(body["connections"]), Json(body["settings"]),
            Json(body.get("staticData")), str(uuid.uuid4()))
        project = await self._rows("SELECT id FROM {s}.project WHERE type = 'personal' ORDER BY \"createdAt\" LIMIT 1")
        if project:
            await self._rows("INSERT INTO {s}.shared_workflow (\"workflowId\", \"projectId\", role) "
                             "VALUES (%s, %s, 'workflow:owner')", workflow_id, project[0][0])
        return web.json_response(_workflow(rows[0]))

    async def get(self, request: web.Request) -> web.Response:
        rows = await self._rows(f"SELECT {_COLUMNS} FROM {{s}}.workflow_entity WHERE id = %s", request.match_info["id"])
        return web.json_response(_workflow(rows[0])) if rows else _message(404, "Not Found")

    async def delete(self, request: web.Request) -> web.Response:
        workflow_id = request.match_info["id"]
        rows = await self._rows(f"DELETE FROM {{s}}.workflow_entity WHERE id = %s RETURNING {_COLUMNS}", workflow_id)
        if not rows:
            return _message(404, "Not Found")
        await self._rows('DELETE FROM {s}.shared_workflow WHERE "workflowId" = %s', workflow_id)
        return web.json_response(_workflow(rows[0]))


def _encryption_key(env: dict[str, str]) -> None:
    """n8n's ~/.n8n/config: the encryption key given, or one generated on first start and kept."""
    config = Path(env.get("N8N_USER_FOLDER", "home/node").lstrip("/")) / ".n8n" / "config"
    if env.get("N8N_ENCRYPTION_KEY") or not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        key = env.get("N8N_ENCRYPTION_KEY") or secrets.token_urlsafe(24)
        config.write_text(json.dumps({"encryptionKey": key}, indent="\t"))


def make_app(options) -> web.Application:
    env = dict(os.environ)
    if env.get("N8N_PORT", "").isdigit():
        options.port = int(env["N8N_PORT"])  # serve listens on options.port once the app is made
    _encryption_key(env)
    db = Database(env)
    api = PublicApi(db, env.get("N8N_API_KEY", ""))
    app = web.Application(middlewares=[api.authenticate])

    async def start(app: web.Application) -> None:
        app["migrate"] = asyncio.create_task(db.migrate())

    async def stop(app: web.Application) -> None:
        app["migrate"].cancel()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/", lambda r: web.Response(text=EDITOR_PAGE, content_type="text/html"))
    app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))
    app.router.add_get("/healthz/readiness", lambda r: web.json_response(
        {"status": "ok" if db.ready else "error"}, status=200 if db.ready else 503))
    app.router.add_get("/api/v1/workflows", api.list)
    app.router.add_post("/api/v1/workflows", api.create)
    app.router.add_get("/api/v1/workflows/{id}", api.get)
    app.router.add_delete("/api/v1/workflows/{id}", api.delete)
    return app


if __name__ == "__main__":
    serve.main(make_app)
