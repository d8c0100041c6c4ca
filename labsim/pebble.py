"""The ACME CA of the embedded lab: the real Pebble (Let's Encrypt's test server, Debian ``pebble``)
stands in for the Let's Encrypt directories the lab file names, with ``pebble-challtestsrv`` as
the lab's public DNS: Pebble resolves every name through it, for DNS-01 (the Cloudflare model
writes TXT records into it) and for HTTP-01, which Pebble validates on port 80 of the address a
name resolves to, as Let's Encrypt does (labsim.apps.public_dns points the names at the lab's
ingress, k3s' Traefik on its LoadBalancer address, where cert-manager's solver answers).

One Pebble per distinct directory address of ``tls.issuers`` (sim.yaml names one for both
staging and prod: two ACME accounts on one server, as LE's two environments differ in trust, not
protocol), one challtestsrv for the lab, both bound on the directory's loopback address and
supervised like the pods' real processes (PID files in ``<state>/pebble/run``, reaped after a
kill -9 of the lab; restarted with back-off if they die).

Pebble keeps nothing between runs and makes a new CA each start: its root and intermediate (from
its management interface, ``/roots/0`` and ``/intermediates/0``) are appended to
``<state>/pebble/<host>-<port>/ca.pem``, so certificates issued before a restart still verify.
Pebble's own HTTPS certificate comes from ``<state>/pebble/tls/ca.pem`` (a stand-in for the public
web PKI the real directories are trusted through).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from labsim import pki
from labsim.runtime.supervisor import RealProcess, Supervisor

log = logging.getLogger("labsim.pebble")
PACKAGE = "Debian's pebble (make programs: scripts/install-programs.sh unpacks it into .tools/pebble)"
DNS_PORT, MANAGEMENT_PORT, MANAGEMENT_OFFSET = 8053, 8055, 1000  # challtestsrv's defaults; Pebble's own
HTTP01_PORT = 80  # where Pebble validates HTTP-01, as Let's Encrypt: the lab's ingress answers there
_BACKOFF = (1.0, 2.0, 5.0, 10.0)  # real seconds before restarting a program that died


def tools_dir() -> Path:
    tools = os.environ.get("LABSIM_TOOLS") or str(Path(__file__).resolve().parents[1] / ".tools")
    return Path(tools) / "pebble" / "usr" / "bin"


@dataclass(frozen=True)
class Directory:
    """One ACME directory URL Pebble serves, e.g. https://127.0.2.3:14000/dir."""

    url: str

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or 443

    @property
    def management(self) -> str:
        return f"https://{self.host}:{self.port + MANAGEMENT_OFFSET}"  # 14000 -> 15000, as Pebble's defaults

    @property
    def key(self) -> str:
        return f"{self.host}-{self.port}"


class Supervised:
    """A program kept running: restarted after a back-off when it ends unasked."""

    def __init__(self, supervisor: Supervisor, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.supervisor, self.name, self.argv, self.env = supervisor, name, argv, env
        self.process: RealProcess | None = None
        self.lines: list[str] = []
        self._restarts = 0
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self.process = self.supervisor.launch(self.name, [], self.argv, env=self.env, cwd="/",
                                              log_line=self._line, exited=self._exited)

    def _line(self, line: str) -> None:
        self.lines = [*self.lines[-199:], line]
        log.debug("%s: %s", self.name, line)

    def _exited(self) -> None:
        if self._stopping:
            return
        delay = _BACKOFF[min(self._restarts, len(_BACKOFF) - 1)]
        self._restarts += 1
        log.warning("%s ended (exit %s); restarting in %.0f s: %s", self.name,
                    self.process.exit_code if self.process else "?", delay, " | ".join(self.lines[-3:]))
        asyncio.get_running_loop().call_later(delay, self._restart)

    def _restart(self) -> None:
        if not self._stopping:
            self.start()

    async def stop(self) -> None:
        self._stopping = True
        if self.process is not None:
            await self.process.killed()
            self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.exit_code is None


class PebbleServer:
    def __init__(self, state_dir: Path, urls: list[str]) -> None:
        self.root = Path(state_dir) / "pebble"
        self.directories = [Directory(url) for url in dict.fromkeys(urls)]
        self.supervisor = Supervisor(self.root / "run")
        self.programs: dict[str, Supervised] = {}
        self.stopped: list[Directory] = []  # down by a fault, until restart_stopped()
        self.tls = self._tls()

    # -- where clients find it -------------------------------------------------------------------
    @property
    def dns_address(self) -> str:
        return f"{self.directories[0].host}:{DNS_PORT}"

    @property
    def challtestsrv(self) -> str:
        """challtestsrv's management URL (plain HTTP on loopback: /set-txt, /clear-txt)."""
        return f"http://{self.directories[0].host}:{MANAGEMENT_PORT}"

    def set_public_address(self, ip: str | None) -> None:
        """Where every name of the lab's public DNS points (challtestsrv's default A answer): the
        lab's ingress address, or (None) challtestsrv's own address, where nothing answers HTTP."""
        doc = json.dumps({"ip": ip or self.directories[0].host}).encode()
        request = urllib.request.Request(f"{self.challtestsrv}/set-default-ipv4", data=doc, method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass

    @property
    def tls_ca_file(self) -> Path:
        """What an ACME client trusts Pebble's HTTPS with (not the CA of issued certificates)."""
        return self.root / "tls" / "ca.pem"

    def ca_file(self, directory: Directory) -> Path:
        """Every root and intermediate this directory's Pebble has issued from, PEM."""
        return self.root / directory.key / "ca.pem"

    def find(self, url: str) -> Directory | None:
        return next((d for d in self.directories if d.url == url), None)

    def status(self) -> dict:
        return {"challtestsrv": self.challtestsrv, "dns": self.dns_address, "tls_ca_file": str(self.tls_ca_file),
                "directories": [{"url": d.url, "management": d.management, "ca_file": str(self.ca_file(d)),
                                 "running": self.programs[f"pebble-{d.key}"].running
                                 if f"pebble-{d.key}" in self.programs else False}
                                for d in self.directories]}

    # -- life cycle --------------------------------------------------------------------------------
    def _tls(self) -> pki.KeyPair:
        d = self.root / "tls"
        if (d / "ca.pem").exists() and (d / "ca-key.pem").exists():
            ca = pki.KeyPair.load(d / "ca.pem", d / "ca-key.pem")
        else:
            ca = pki.make_ca("labsim public web PKI (stand-in)")
            ca.save(d / "ca.pem", d / "ca-key.pem")
        hosts = sorted({dr.host for dr in self.directories})
        if hosts:
            pki.issue(ca, hosts[0], sans=[*hosts, "localhost"]).save(d / "server.pem", d / "server-key.pem")
        return ca

    def missing(self) -> str | None:
        binaries = [tools_dir() / "pebble", tools_dir() / "pebble-challtestsrv"]
        absent = [str(b) for b in binaries if not os.access(b, os.X_OK)]
        return f"{', '.join(absent)} not found: install {PACKAGE}" if absent else None

    async def start(self) -> None:
        await self.supervisor.reap()  # what a lab killed with -9 left: gone before its ports are reused
        if not self.directories:
            return
        if problem := self.missing():
            log.warning("no ACME server for %s: %s", [d.url for d in self.directories], problem)
            return
        host = self.directories[0].host
        _check_free(host, [(DNS_PORT, socket.SOCK_STREAM), (DNS_PORT, socket.SOCK_DGRAM),
                           (MANAGEMENT_PORT, socket.SOCK_STREAM)])
        for directory in self.directories:
            _check_free(directory.host, [(directory.port, socket.SOCK_STREAM),
                                         (directory.port + MANAGEMENT_OFFSET, socket.SOCK_STREAM)])
        self._launch("challtestsrv", [
            str(tools_dir() / "pebble-challtestsrv"), "-dns01", self.dns_address, "-http01", "", "-https01", "",
            "-tlsalpn01", "", "-management", f"{host}:{MANAGEMENT_PORT}", "-defaultIPv4", host, "-defaultIPv6", ""],
            {})
        for directory in self.directories:
            await self.start_directory(directory)

    async def start_directory(self, directory: Directory) -> None:
        """Start (or restart, after ``stop_directory``) one directory's Pebble and record its CA."""
        self.stopped = [d for d in self.stopped if d != directory]
        config = self.root / directory.key / "pebble-config.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"{directory.host}:{directory.port}",
            "managementListenAddress": directory.management.removeprefix("https://"),
            "certificate": str(self.root / "tls" / "server.pem"), "privateKey": str(self.root / "tls" / "server-key.pem"),
            "httpPort": HTTP01_PORT, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        # No random validation sleeps and no rejected nonces: the lab's issuance is quick and its
        # tests deterministic; validation itself stays real (DNS lookups against challtestsrv).
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        self._launch(f"pebble-{directory.key}", [str(tools_dir() / "pebble"), "-config", str(config),
                                                 "-dnsserver", self.dns_address], env)
        try:
            await self._record_ca(directory)
        except OSError as error:  # Pebble did not come up: its log says why; the lab runs on without it
            log.warning("Pebble for %s did not serve its CA: %s; its log: %s", directory.url, error,
                        " | ".join(self.programs[f"pebble-{directory.key}"].lines[-3:]))

    async def stop_directory(self, directory: Directory) -> None:
        """The ACME server down (a fault a test injects): its listener is gone until restarted."""
        program = self.programs.pop(f"pebble-{directory.key}", None)
        if program is not None:
            await program.stop()
            self.stopped.append(directory)

    async def restart_stopped(self) -> None:
        stopped, self.stopped = self.stopped, []
        for directory in stopped:
            await self.start_directory(directory)

    def _launch(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        program = Supervised(self.supervisor, name, argv, {"PATH": os.environ.get("PATH", ""), **env})
        self.programs[name] = program
        program.start()

    async def _record_ca(self, directory: Directory) -> None:
        context = ssl.create_default_context(cafile=str(self.tls_ca_file))
        pems = []
        for path in ("roots/0", "intermediates/0"):
            pems.append(await _fetch(f"{directory.management}/{path}", context))
        bundle = self.ca_file(directory)
        known = bundle.read_text() if bundle.exists() else ""
        new = "".join(pem for pem in pems if pem not in known)
        bundle.write_text(known + new)

    async def close(self) -> None:
        for program in reversed(list(self.programs.values())):
            await program.stop()
        self.programs.clear()


def _check_free(host: str, ports: list[tuple[int, int]]) -> None:
    """Raise EADDRINUSE (as the lab's other listeners do) if another lab or program holds a port."""
    for port, kind in ports:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))


async def _fetch(url: str, context: ssl.SSLContext, attempts: int = 100) -> str:
    """GET ``url`` once its server listens (a program just started needs a moment)."""
    def get() -> str:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.read().decode()

    for _ in range(attempts - 1):
        with contextlib.suppress(OSError):
            return await asyncio.to_thread(get)
        await asyncio.sleep(0.1)
    return await asyncio.to_thread(get)
