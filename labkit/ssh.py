"""SSH to the lab's nodes with asyncssh: pinned host keys, timeouts, sudo, upload, fan-out.

Host keys are pinned in the lab's own known_hosts file (``ssh.known_hosts``): the first contact
with a node records its key (and is reported, so the notebook shows it), later contacts must
present the same key, and a changed key is refused with an error that says what to do. Hashed
entries count as pins, ``@revoked`` keys are refused, ``@cert-authority`` lines are refused clearly. Commands
run with a timeout and captured output; a failure names the node and the command, with every
registered secret redacted. All connections live on labkit's background loop
(``labkit.eventloop``), so the sync methods here work the same in a notebook and a script.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import pandas as pd

from labkit import eventloop
from labkit.errors import SshError
from labkit.params import Lab
from labkit.secrets import redact

NAS = "nas"  # the session's name for the NAS (nfs.server), beside the lab's nodes


class HostKeyRefused(SshError):
    """A node's host key was refused: changed, revoked, or not checkable by labkit."""


class HostKeyChanged(HostKeyRefused):
    """A node presented a host key other than the one pinned for it."""


class SshTimeout(SshError):
    """A command did not finish in time: the node answers, but slowly (or the command hangs)."""


@dataclass(frozen=True)
class Result:
    node: str
    command: str  # redacted
    exit_status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass(frozen=True)
class Probe:
    """The answers of one node to a set of commands, or why it could not be asked (``failure``:
    the SshError's class, so a reader tells a slow node or a refused host key from a VM that
    is not there)."""

    node: str
    results: dict[str, Result]
    error: str | None = None
    failure: type[SshError] | None = None

    def stdout(self, key: str) -> str:
        result = self.results.get(key)
        return result.stdout if result is not None and result.ok else ""


@dataclass(frozen=True)
class HostKeyEvent:
    node: str
    address: str
    key_type: str
    fingerprint: str
    event: str  # "first contact: recorded" | "known: matches"


# -- known_hosts -----------------------------------------------------------------------------------


def _host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


@dataclass(frozen=True)
class KnownHost:
    """One line of known_hosts that names a host: its marker (``@revoked``,
    ``@cert-authority`` or none), its key (``type base64``) and its line number."""

    marker: str
    key: str
    line: int


class KnownHosts:
    """The lab's known_hosts file, read as OpenSSH reads it: plain or hashed (``ssh-keygen -H``)
    host patterns with wildcards and negations, and the ``@revoked`` / ``@cert-authority``
    markers. One pinned key per ``host`` / ``[host]:port``; labkit appends only for a host that
    has no line at all."""

    def __init__(self, path: Path):
        self.path = path

    def entries(self, host: str, port: int) -> list[KnownHost]:
        """Every line whose host patterns match the address."""
        if not self.path.exists():
            return []
        name, found = _host_pattern(host, port), []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            fields = line.split()
            marker = fields.pop(0) if fields and fields[0].startswith("@") else ""
            if len(fields) >= 3 and not fields[0].startswith("#") and _hosts_match(fields[0], name):
                found.append(KnownHost(marker, f"{fields[1]} {fields[2]}", number))
        return found

    def pinned(self, host: str, port: int) -> list[str]:
        """Pinned keys (``type base64``) for the address."""
        return [e.key for e in self.entries(host, port) if not e.marker]

    def record(self, host: str, port: int, key: asyncssh.SSHKey) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            out.write(f"{_host_pattern(host, port)} {_openssh(key)}\n")


def _hosts_match(patterns: str, name: str) -> bool:
    """OpenSSH's rule: a hashed entry (``|1|salt|hash``) matches its one name; otherwise a
    comma-separated list matches if a pattern does and no negated (``!``) pattern does."""
    if patterns.startswith("|1|"):
        salt, _, digest = patterns[3:].partition("|")
        try:
            mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(mac, base64.b64decode(digest))
        except ValueError:  # binascii.Error too: not base64
            return False
    matched = False
    for pattern in patterns.lower().split(","):
        negated = pattern.startswith("!")
        if _wildcard(pattern.removeprefix("!")).fullmatch(name.lower()):
            if negated:
                return False
            matched = True
    return matched


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern))


def _openssh(key: asyncssh.SSHKey) -> str:
    """``type base64`` of a public key, as known_hosts holds it."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def _fingerprint(openssh: str) -> str:
    try:
        return asyncssh.import_public_key(openssh).get_fingerprint("sha256")
    except (asyncssh.KeyImportError, ValueError):
        return f"(unreadable key {openssh.split()[0]})"


class _PinningClient(asyncssh.SSHClient):
    """Accepts exactly the pinned key, or records the key on first contact (a host with no
    line at all); a revoked key, or a host pinned by a certificate authority, is refused."""

    def __init__(self, known: KnownHosts, node: str):
        self.known, self.node = known, node
        self.event: HostKeyEvent | None = None
        self.offered: str | None = None  # fingerprint of the key the node presented
        self.pinned: list[str] = []  # fingerprints pinned for it, when they differ
        self.refusal: str | None = None  # why the key was refused, other than a change

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        offered, entries = _openssh(key), self.known.entries(addr, port)
        self.offered = fingerprint = key.get_fingerprint("sha256")
        revoked = next((e for e in entries if e.marker == "@revoked" and e.key == offered), None)
        if revoked is not None:
            self.refusal = (f"the host key {fingerprint} is marked @revoked in {self.known.path} (line "
                            f"{revoked.line}); it must never be accepted: find out why the node presents it")
            return False
        pinned = [e.key for e in entries if not e.marker]
        if offered in pinned:
            self.event = HostKeyEvent(self.node, f"{addr}:{port}", key.get_algorithm(), fingerprint, "known: matches")
            return True
        if pinned:
            self.pinned = [_fingerprint(k) for k in pinned]
            return False
        if entries:  # only @cert-authority or @revoked lines: never pin a key beside them
            self.refusal = (f"{self.known.path} names this host only in @cert-authority or @revoked lines (line "
                            f"{', '.join(str(e.line) for e in entries)}); labkit pins plain host keys and does "
                            f"not check host certificates. Add the node's key ({key.get_algorithm()} {fingerprint}, "
                            f"once verified on its console) as a plain line, or remove those lines")
            return False
        self.known.record(addr, port, key)
        self.event = HostKeyEvent(self.node, f"{addr}:{port}", key.get_algorithm(), fingerprint,
                                  "first contact: recorded")
        return True


# -- sessions --------------------------------------------------------------------------------------


@dataclass
class Session:
    """SSH connections to a lab's nodes, opened on demand and reused."""

    lab: Lab
    connect_timeout: float = 20
    host_keys: list[HostKeyEvent] = field(default_factory=list)
    _conns: dict[str, asyncssh.SSHClientConnection] = field(default_factory=dict, repr=False)
    _client_key: asyncssh.SSHKey | None = field(default=None, repr=False)

    @property
    def known_hosts(self) -> KnownHosts:
        return KnownHosts(self.lab.ssh.known_hosts)

    # sync API (notebooks, labkit modules) -------------------------------------------------------

    def run(self, node: str, command: str, *, sudo: bool = False, input: str | None = None,
            timeout: float = 120, check: bool = True) -> Result:
        return eventloop.run(self.arun(node, command, sudo=sudo, input=input, timeout=timeout, check=check))

    def run_many(self, commands: dict[str, str], *, sudo: bool = False, timeout: float = 120,
                 check: bool = True) -> dict[str, Result]:
        """Different commands on several nodes, concurrently (``{node: command}``)."""
        return eventloop.run(self.arun_many(commands, sudo=sudo, timeout=timeout, check=check))

    def fan_out(self, nodes: Iterable[str], command: str, **kwargs) -> dict[str, Result]:
        """The same command on several nodes, concurrently."""
        return self.run_many(dict.fromkeys(nodes, command), **kwargs)

    def collect(self, nodes: Iterable[str], commands: dict[str, str], timeout: float = 60) -> dict[str, Probe]:
        """Several read-only commands per node (``{key: command}``), nodes concurrently. A node
        that cannot be reached gives its error instead of failing the others."""
        return eventloop.run(self._collect(list(nodes), commands, timeout))

    async def _collect(self, nodes: list[str], commands: dict[str, str], timeout: float) -> dict[str, Probe]:
        async def one(node: str) -> Probe:
            try:
                return Probe(node, {k: await self.arun(node, c, timeout=timeout, check=False)
                                    for k, c in commands.items()})
            except SshError as exc:
                return Probe(node, {}, str(exc), type(exc))

        return {p.node: p for p in await asyncio.gather(*(one(n) for n in nodes))}

    def upload(self, node: str, data: str | bytes, path: str, mode: int = 0o644) -> None:
        eventloop.run(self.aupload(node, data, path, mode))

    def reachable(self, nodes: Iterable[str], timeout: float = 600, dry_run: bool = False) -> pd.DataFrame:
        """Connect to each node (recording first-contact host keys), retrying while sshd is not
        up yet, and wait for cloud-init to finish; one row per node with when the wait started
        and ended (for timelines). A dry run contacts none (its VMs may not exist yet)."""
        return eventloop.run(self._reachable([] if dry_run else list(nodes), timeout))

    async def _reachable(self, nodes: list[str], timeout: float) -> pd.DataFrame:
        async def one(node: str) -> dict:
            start = datetime.now(UTC)
            await self._connect_within(node, timeout)
            done = await self.arun(node, "cloud-init status --wait", timeout=timeout, check=False)
            status = done.stdout.strip().rsplit(":", 1)[-1].strip() if done.ok else \
                f"exit {done.exit_status}: {done.stderr.strip()[:120]}"
            return {"node": node, "ssh": "ok", "cloud_init": status, "start": start, "end": datetime.now(UTC)}

        rows = await asyncio.gather(*(one(n) for n in nodes))
        return pd.DataFrame(list(rows), columns=["node", "ssh", "cloud_init", "start", "end"])

    def host_key_table(self) -> pd.DataFrame:
        rows = sorted((e.__dict__ for e in self.host_keys), key=lambda e: e["node"])
        return pd.DataFrame(rows, columns=["node", "address", "key_type", "fingerprint", "event"])

    def close(self) -> None:
        eventloop.run(self.aclose())

    # async implementation (runs on labkit's loop) ---------------------------------------------------

    async def connection(self, node: str) -> asyncssh.SSHClientConnection:
        conn = self._conns.get(node)
        if conn is not None and not conn.is_closed():
            return conn
        self._conns[node] = conn = await self._connect(node)
        return conn

    async def _connect_within(self, node: str, timeout: float) -> asyncssh.SSHClientConnection:
        """A freshly booted VM refuses SSH until sshd runs, and may refuse the key until cloud-init
        installed it: retry with backoff until ``timeout``. A changed host key is never retried."""
        loop, delay = asyncio.get_running_loop(), 0.1
        deadline = loop.time() + timeout
        while True:
            try:
                return await self.connection(node)
            except HostKeyRefused:
                raise
            except SshError:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def endpoint(self, node: str) -> tuple[str, int, str]:
        """Address, port and user of a node, or of the NAS (``NAS``: nfs.server, over SSH as a
        Synology with SSH on is reached)."""
        if node == NAS:
            nfs = self.lab.nfs
            return nfs.server, nfs.ssh_port or self.lab.ssh.port, nfs.ssh_user or self.lab.ssh.user
        return str(self.lab.node(node).ip), self.lab.ssh.port, self.lab.ssh.user

    async def _connect(self, node: str) -> asyncssh.SSHClientConnection:
        host, port, user = self.endpoint(node)
        if self._client_key is None:
            self._client_key = asyncssh.import_private_key(self.lab.secret(self.lab.ssh.private_key))
        client = _PinningClient(self.known_hosts, node)
        try:
            conn, _ = await asyncssh.create_connection(
                lambda: client, host, port, username=user, client_keys=[self._client_key],
                known_hosts=b"", agent_path=None, connect_timeout=self.connect_timeout)
        except asyncssh.HostKeyNotVerifiable:
            if client.refusal:
                raise HostKeyRefused(f"{node} ({host}:{port}): {client.refusal}.") from None
            raise HostKeyChanged(
                f"{node} ({host}:{port}): the host key changed: it presents {client.offered}, pinned is "
                f"{', '.join(client.pinned)} in {self.lab.ssh.known_hosts}. If the VM was re-created on purpose, "
                f"remove its line (`ssh-keygen -R '{_host_pattern(host, port)}' -f {self.lab.ssh.known_hosts}`) "
                "and re-run; otherwise stop and find out why.") from None
        except asyncssh.PermissionDenied:
            fix = ("authorize the operator's public key (ssh.public_key) for that user on the NAS" if node == NAS
                   else "check sshkeys and ciuser of the VM (cloud-init)")
            raise SshError(f"{node} ({host}:{port}): the operator key was refused for user {user}; {fix}") from None
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise SshError(f"{node} ({host}:{port}): cannot connect: {exc or type(exc).__name__}") from None
        if client.event is not None:
            self.host_keys.append(client.event)
        return conn

    async def arun(self, node: str, command: str, *, sudo: bool = False, input: str | None = None,
                   timeout: float = 120, check: bool = True, retries: int = 1) -> Result:
        """Run a command; a connection lost mid-command is reopened and the command retried
        ``retries`` times (labkit sends idempotent commands only)."""
        line = f"sudo -n sh -c {shlex.quote(command)}" if sudo else command
        for attempt in range(retries + 1):
            start = time.monotonic()
            try:
                conn = await self.connection(node)
                done = await conn.run(line, input=input, timeout=timeout, check=False)
                if done.exit_status is None and done.exit_signal is None:
                    # The channel closed without an exit status: the connection went away mid-command.
                    raise asyncssh.ConnectionLost("the channel closed before the command exited")
            except asyncssh.TimeoutError as exc:
                raise SshTimeout(f"{node}: `{redact(command)}` did not finish within {timeout:.0f} s "
                               f"(output so far: {redact(str(exc.stdout or ''))[-200:]!r})") from None
            except (asyncssh.ConnectionLost, asyncssh.DisconnectError, asyncssh.ChannelOpenError,
                    BrokenPipeError, ConnectionResetError) as exc:
                self._drop(node)
                if attempt < retries:
                    continue
                raise SshError(f"{node}: connection lost while running `{redact(command)}`: "
                               f"{redact(str(exc)) or type(exc).__name__}") from None
            status = done.exit_status if done.exit_status is not None else 128 + 9  # killed by a signal
            result = Result(node, redact(command), status, _text(done.stdout), _text(done.stderr),
                            time.monotonic() - start)
            if check and not result.ok:
                raise SshError(f"{node}: `{result.command}` exited {result.exit_status}: "
                               f"{redact(result.stderr.strip() or result.stdout.strip())[-400:]}")
            return result
        raise AssertionError("unreachable")

    async def arun_many(self, commands: dict[str, str], **kwargs) -> dict[str, Result]:
        results = await asyncio.gather(*(self.arun(n, c, **kwargs) for n, c in commands.items()),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            if len(errors) == 1:
                raise errors[0]
            raise SshError(f"{len(errors)} nodes failed:\n" + "\n".join(f"  {e}" for e in errors))
        return dict(zip(commands, results, strict=True))  # type: ignore[arg-type]

    async def aupload(self, node: str, data: str | bytes, path: str, mode: int = 0o644) -> None:
        """Write a file with SFTP (as the SSH user: for root-owned paths, upload then ``sudo install``)."""
        payload = data.encode() if isinstance(data, str) else data
        try:
            conn = await self.connection(node)
            async with conn.start_sftp_client() as sftp, sftp.open(path, "wb") as out:
                await out.write(payload)
                await sftp.chmod(path, mode)
        except (asyncssh.Error, OSError) as exc:
            raise SshError(f"{node}: upload to {path} failed: {redact(str(exc))}") from None

    def _drop(self, node: str) -> None:
        conn = self._conns.pop(node, None)
        if conn is not None:
            conn.abort()

    async def aclose(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def connect(lab: Lab) -> Session:
    """A session for the lab (connections open on first use)."""
    return Session(lab)
