"""PostgreSQL the Bitnami way, proved by using it.

The credentials live in one Secret (``postgresql-auth``), made once: with ``password: generate``
the user's and the superuser's passwords are generated the first time and kept on every later run
(the chart reads them through ``auth.existingSecret``, so a re-run never rotates them). Values are
registered for redaction as soon as labkit sees them and never printed.

``verify`` connects with psycopg 3 through a port-forward tunnelled by the API server (no node
port, no LoadBalancer needed), writes and reads a canary row and reads ``pg_stat_database``.

With metrics on and 04's stack there (prometheus-operator's ServiceMonitor CRD served), the chart
also gets its ServiceMonitor, and ``verify`` waits for the postgres-exporter target to be up in
Prometheus and for ``pg_up`` to say the exporter reaches the database.
"""

from __future__ import annotations

import base64
import contextlib
import secrets as random
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import psycopg
from kubernetes import client
from kubernetes.stream import portforward, stream

from labkit import charts, observe, polling, secrets
from labkit.changes import Change, Check, Plan, StepTimer, untimed
from labkit.errors import LabError
from labkit.params import Lab, Postgres

RELEASE = "postgresql"  # the release and StatefulSet name (pod postgresql-0, Service postgresql)
CREDENTIALS = "postgresql-auth"
ADMIN_KEY, USER_KEY = "postgres-password", "password"
CANARY = "labkit_canary"
PORT = 5432
SERVICE_MONITORS = "servicemonitors.monitoring.coreos.com"  # the CRD 04's kube-prometheus-stack brings
METRICS_JOB = f"{RELEASE}-metrics"  # the operator names a ServiceMonitor's job after the Service it scrapes


class PostgresError(LabError):
    """The database cannot be reached or answered wrongly."""


def settings(lab: Lab) -> Postgres:
    if lab.postgres is None:
        raise PostgresError(f"{lab.path}: no postgres section; add one (see parameters/sim.yaml) to run 05-postgres")
    return lab.postgres


def monitored(api: client.ApiClient, lab: Lab) -> bool:
    """Whether the chart gets its ServiceMonitor: metrics on, and the CRD served (04 ran). Without
    the CRD the chart's install would fail on a kind the API server does not know."""
    if not settings(lab).metrics:
        return False
    try:
        client.ApiextensionsV1Api(api).read_custom_resource_definition(SERVICE_MONITORS)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise PostgresError(f"read CustomResourceDefinition {SERVICE_MONITORS}: API server answered "
                            f"{exc.status} {exc.reason}") from None
    return True


def chart(lab: Lab, *, monitored: bool = False) -> charts.Chart:
    """Bitnami's postgresql chart with the lab's database, user, storage, limits and metrics (and
    the ServiceMonitor when ``monitored``)."""
    pg = settings(lab)
    registry, _, rest = pg.image.partition("/")
    repository, _, tag = rest.rpartition(":")
    values = {
        "image": {"registry": registry, "repository": repository, "tag": tag},
        "auth": {"username": pg.user, "database": pg.database, "existingSecret": CREDENTIALS,
                 "secretKeys": {"adminPasswordKey": ADMIN_KEY, "userPasswordKey": USER_KEY}},
        "primary": {"persistence": {"enabled": True, "storageClass": pg.storage_class, "size": pg.size},
                    "resources": {"requests": dict(pg.requests), "limits": dict(pg.limits)}},
        "metrics": {"enabled": pg.metrics},
        "tls": {"enabled": pg.tls},
    }
    if monitored:
        values["metrics"]["serviceMonitor"] = {"enabled": True}
    return charts.Chart(RELEASE, chart="postgresql", version=pg.chart_version, repo=pg.repo,
                        target_namespace=pg.namespace, values=values)


@dataclass(frozen=True)
class Planned:
    """05's plan: the namespace and credentials Secret, then the chart."""

    credentials: Plan[Change]
    chart: Plan[charts.ChartPlan]
    monitored: bool = False  # the chart planned with its ServiceMonitor

    def changes(self) -> list[Change]:
        return self.credentials.changes() + self.chart.changes()


def plan(api: client.ApiClient, lab: Lab) -> Planned:
    watched = monitored(api, lab)
    return Planned(plan_credentials(api, lab), charts.plan(api, [chart(lab, monitored=watched)]), watched)


def apply(api: client.ApiClient, lab: Lab, planned: Planned, *, dry_run: bool = False, timeout: float = 600,
          step: StepTimer = untimed) -> list[Change]:
    """What the plan says (nothing in a dry run); the chart is waited for until rolled out."""
    if dry_run:
        return []
    with step("credentials", CREDENTIALS):
        done = apply_credentials(api, lab, planned.credentials)
    done += charts.apply(api, planned.chart, timeout=timeout, step=step)
    left = charts.verify(api, [chart(lab, monitored=planned.monitored)])
    if left:
        raise PostgresError("after the apply the chart still differs from the lab file: " + "; ".join(left))
    return done


# -- credentials ---------------------------------------------------------------------------------


def plan_credentials(api: client.ApiClient, lab: Lab) -> Plan[Change]:
    """The namespace and the credentials Secret: created when absent, else left as they are."""
    pg, core = settings(lab), client.CoreV1Api(api)
    items = [Change(f"Namespace/{pg.namespace}", "create" if _absent(core.read_namespace, pg.namespace)
                    else "unchanged", "absent" if _absent(core.read_namespace, pg.namespace) else "exists")]
    secret = _read_secret(core, pg.namespace)
    if secret is None:
        how = "generated passwords" if pg.password == "generate" else f"user password from {pg.password}"
        items.append(Change(f"Secret/{pg.namespace}/{CREDENTIALS}", "create", f"absent: {how}"))
    else:
        items.append(Change(f"Secret/{pg.namespace}/{CREDENTIALS}", "unchanged", "kept (passwords never rotate on a re-run)"))
    return Plan(items)


def _absent(read, *args) -> bool:
    try:
        read(*args)
        return False
    except client.ApiException as exc:
        if exc.status == 404:
            return True
        raise


def _read_secret(core: client.CoreV1Api, namespace: str) -> dict[str, str] | None:
    try:
        data = core.read_namespaced_secret(CREDENTIALS, namespace).data or {}
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    values = {k: base64.b64decode(v).decode() for k, v in data.items()}
    for value in values.values():
        secrets.register(value)
    return values


def apply_credentials(api: client.ApiClient, lab: Lab, plan_: Plan[Change]) -> list[Change]:
    pg, core = settings(lab), client.CoreV1Api(api)
    done = []
    for item in plan_.items:
        if not item.is_change:
            continue
        if item.target.startswith("Namespace/"):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=pg.namespace)))
        else:
            user = random.token_urlsafe(24) if pg.password == "generate" else lab.secret(pg.password)
            admin = random.token_urlsafe(24)
            for value in (user, admin):
                secrets.register(value)
            core.create_namespaced_secret(pg.namespace, client.V1Secret(
                metadata=client.V1ObjectMeta(name=CREDENTIALS, labels={"app.kubernetes.io/managed-by": "labkit"}),
                type="Opaque", string_data={USER_KEY: user, ADMIN_KEY: admin}))
        done.append(item)
    return done


def credentials(api: client.ApiClient, lab: Lab) -> dict[str, str]:
    """The Secret's passwords (registered for redaction); a PostgresError when it is missing."""
    found = _read_secret(client.CoreV1Api(api), settings(lab).namespace)
    if found is None:
        raise PostgresError(f"Secret {settings(lab).namespace}/{CREDENTIALS} is missing: run 05-postgres first")
    return found


# -- connecting ----------------------------------------------------------------------------------


@contextlib.contextmanager
def forward(api: client.ApiClient, namespace: str, pod: str, port: int = PORT) -> Iterator[int]:
    """A local TCP port (on 127.0.0.1) whose connections reach ``pod:port`` through the API
    server's pods/portforward, as ``kubectl port-forward`` does; yields the local port. The tunnels
    are opened on a client of their own: kubernetes.stream swaps its client's request function
    while it opens one, which would send the caller's concurrent API calls down a websocket."""
    tunnels = client.ApiClient(api.configuration)
    core = client.CoreV1Api(tunnels)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    wake, woken = socket.socketpair()  # closing ``wake`` ends the accept loop at once (no polling pause)

    def serve() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([listener, woken], [], [])
            if listener in ready and not stop.is_set():
                local, _ = listener.accept()
                try:
                    tunnel = portforward(core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
                except client.ApiException:  # no such pod (yet): this connection fails, the next may not
                    local.close()
                    continue
                threading.Thread(target=_pipe, args=(local, tunnel.socket(port), stop), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        wake.close()
        thread.join()
        woken.close()
        listener.close()
        tunnels.close()


def _pipe(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        while not stop.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.2)
            for src in ready:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)
    except OSError:
        return  # either side reset: the connection ends as a kubectl port-forward's would
    finally:
        a.close()
        b.close()


def tunnel(api: client.ApiClient, lab: Lab) -> contextlib.AbstractContextManager[int]:
    """A port-forward to the lab's PostgreSQL pod, for several ``connect(..., port=)`` in a row."""
    return forward(api, settings(lab).namespace, f"{RELEASE}-0")


@contextlib.contextmanager
def connect(api: client.ApiClient, lab: Lab, *, database: str | None = None, admin: bool = False,
            timeout: float = 60, port: int | None = None) -> Iterator[psycopg.Connection]:
    """A psycopg connection to the lab's database (or another one) as the lab's user, or as the
    superuser ``postgres`` with ``admin`` (creating and dropping databases). Through ``port``, a
    ``tunnel`` the caller holds, or else a port-forward of its own."""
    pg, found = settings(lab), credentials(api, lab)
    user, password = ("postgres", found[ADMIN_KEY]) if admin else (pg.user, found[USER_KEY])
    with contextlib.ExitStack() as held:
        if port is None:
            port = held.enter_context(tunnel(api, lab))
        deadline, pause = time.monotonic() + timeout, polling.pauses()
        while True:  # a pod just (re)started may not accept connections yet: no readiness gate here
            try:
                conn = psycopg.connect(host="127.0.0.1", port=port, user=user, password=password,
                                       dbname=database or pg.database, sslmode="require" if pg.tls else "disable",
                                       connect_timeout=20, autocommit=True)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline or _final(str(exc)):
                    raise PostgresError(f"cannot connect to {pg.namespace}/{RELEASE}-0 as {user}: "
                                        f"{secrets.redact(str(exc)).strip()}") from None
                time.sleep(next(pause))
        with conn:
            yield conn


def _final(error: str) -> bool:
    """The server answered with an error no retry cures (not: starting up, shutting down, not there yet)."""
    return "FATAL" in error and not any(w in error for w in ("starting up", "shutting down", "recovery"))


# -- verification ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    checks: list[Check]
    stats: pd.DataFrame  # pg_stat_database of the lab's database, one row per sample
    server_version: str


_STATS = ("connections", "commits", "rollbacks", "blocks_read", "blocks_hit", "rows_inserted", "size_bytes")


def stats(conn: psycopg.Connection) -> dict:
    conn.execute("SELECT pg_stat_force_next_flush()")  # this session's counts reported now, not within 1 s
    row = conn.execute("SELECT numbackends, xact_commit, xact_rollback, blks_read, blks_hit, tup_inserted, "
                       "pg_database_size(datname) FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return {"time": datetime.now(UTC), **dict(zip(_STATS, row, strict=True))}


def verify(api: client.ApiClient, lab: Lab, *, samples: int = 5, dry_run: bool = False) -> Verified:
    """Use the database: canary table, a row written and read back, pg_stat_database sampled
    while a few transactions run (what the plots show). A dry run only says so."""
    pg = settings(lab)
    if dry_run:
        return Verified([Check("database used (dry run: nothing deployed)", True, enforced=False)],
                        pd.DataFrame(columns=["time", *_STATS]), "")
    marker = f"run {datetime.now(UTC).isoformat(timespec='seconds')}"
    rows = []
    with connect(api, lab) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute(f"CREATE TABLE IF NOT EXISTS {CANARY} (id serial PRIMARY KEY, note text NOT NULL, "
                     "written timestamptz NOT NULL DEFAULT now())")
        for i in range(samples):
            conn.execute(f"INSERT INTO {CANARY} (note) VALUES (%s)", (f"{marker} #{i}",))
            rows.append(stats(conn))
        read = conn.execute(f"SELECT note FROM {CANARY} WHERE note LIKE %s ORDER BY id", (f"{marker} #%",)).fetchall()
        database, user = conn.execute("SELECT current_database(), current_user").fetchone()
    frame = pd.DataFrame(rows)
    last = rows[-1]
    checks = [
        Check("connected with psycopg through the API server's port-forward",
              (database, user) == (pg.database, pg.user), f"{user}@{database}, PostgreSQL {version}"),
        Check("canary rows written and read back", [r[0] for r in read] == [f"{marker} #{i}" for i in range(samples)],
              f"{len(read)} of {samples} rows in {CANARY}"),
        Check("pg_stat_database counts the transactions", last["commits"] > rows[0]["commits"],
              f"{last['commits']} commits, {last['connections']} connections, {last['size_bytes']} bytes"),
        *exporter_checks(api, lab),
    ]
    return Verified(checks, frame, version)


def exporter_checks(api: client.ApiClient, lab: Lab, *, timeout: float = 180) -> list[Check]:
    """The postgres-exporter target up in 04's Prometheus and its ``pg_up`` 1 (none without 04's
    stack: no ServiceMonitor, nothing to ask)."""
    if lab.observability is None or not monitored(api, lab):
        return []
    stack = observe.connect(api, lab)
    try:
        found = observe.wait_targets(stack, [METRICS_JOB], timeout=timeout)
        # The target is up once the exporter answers; pg_up is 1 from the first scrape that found the
        # server accepting connections (a scrape or two later on a pod that just started).
        up = polling.until(lambda: observe.query(stack, f'pg_up{{job="{METRICS_JOB}"}}'), _all_up, timeout=timeout)
    finally:
        stack.close()
    return [*found.checks([METRICS_JOB]),
            Check("postgres-exporter reaches the database (pg_up)", _all_up(up),
                  f"pg_up {', '.join(f'{v:g}' for v in up['value'])}" if not up.empty else "no pg_up series yet")]


def _all_up(up: pd.DataFrame) -> bool:
    return not up.empty and bool((up["value"] == 1).all())


@dataclass(frozen=True)
class ToolResult:
    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def exec_tool(api: client.ApiClient, lab: Lab, argv: list[str], *, timeout: float = 300) -> ToolResult:
    """A PostgreSQL client tool run inside postgresql-0 (``kubectl exec postgresql-0 -- pg_dump ...``)."""
    pg = settings(lab)
    ws = stream(client.CoreV1Api(api).connect_get_namespaced_pod_exec, f"{RELEASE}-0", pg.namespace,
                container="postgresql", command=argv, stderr=True, stdin=False, stdout=True, tty=False,
                _preload_content=False)
    out, err = [], []
    deadline = time.monotonic() + timeout
    while ws.is_open() and time.monotonic() < deadline:
        ws.update(timeout=1)
        out.append(ws.read_stdout() if ws.peek_stdout() else "")
        err.append(ws.read_stderr() if ws.peek_stderr() else "")
    code = ws.returncode
    ws.close()
    return ToolResult("".join(out), "".join(err), 124 if code is None else code)


def exec_psql(api: client.ApiClient, lab: Lab, sql: str) -> str:
    """``psql -tA -c SQL`` inside the pod (``kubectl exec postgresql-0 -- psql``), as the lab's user."""
    pg = settings(lab)
    return exec_tool(api, lab, ["psql", "-U", pg.user, "-d", pg.database, "-tA", "-c", sql]).stdout
