"""The embedded lab: one event loop serving the PVE API, the SSH nodes and the Kubernetes API,
with its state in a folder so that a restart resumes where it stopped.

``running_lab`` runs a Lab in a background thread for tests; ``detached_lab`` drives the
``labsim`` command as a separate process, as the runner does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from labsim.clock import Clock
from labsim.config import SimConfig
from labsim.operations import LEDGER_FILE, Ledger
from labsim.pve.model import ProxmoxVE
from labsim.secrets import LabSecrets, ensure_secrets
from labsim.state import StateFile

if TYPE_CHECKING:  # imported at start(), so that `labsim status` and `down` stay quick
    from labsim.apps.cloudflare import CloudflareAPI
    from labsim.apps.ntfy import NtfyServer
    from labsim.kube.registry import ClusterRegistry
    from labsim.nas import Nas
    from labsim.node.host import NodeHost
    from labsim.pebble import PebbleServer

log = logging.getLogger(__name__)
T = TypeVar("T")
START_TIMEOUT = 60


class Lab:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.state_dir = config.state_dir
        self._clock_state = StateFile(self.state_dir / "lab.json")
        saved = self._clock_state.load() or {}
        self.clock = Clock(config.time_scale, float(saved.get("clock_offset", 0.0)))
        self.pve = ProxmoxVE(config, self.clock, lambda: self.nodes)
        self.nodes: NodeHost | None = None  # set by start()
        self.clusters: ClusterRegistry | None = None
        self.nas: Nas | None = None
        self.secrets: LabSecrets | None = None
        self.pebble: PebbleServer | None = None  # the ACME server of tls.issuers (set by start())
        self.cloudflare: CloudflareAPI | None = None
        self.ntfy: NtfyServer | None = None  # the push service of observability.ntfy (set by start())
        self._server: Any = None

    async def start(self) -> None:
        # Imported here so that `labsim status` and `down` stay quick to start.
        import labsim.k3s  # noqa: F401  -- registers k3s (installer, CLI, units) with the nodes' shell
        from labsim.kube.registry import ClusterRegistry
        from labsim.nas import Nas
        from labsim.node.host import NodeHost
        from labsim.pve.server import PVEServer

        self.secrets = ensure_secrets(self.state_dir, [self.config.pve_host, "localhost", self.config.pve_node])
        self.clock.ledger = Ledger(self.state_dir / LEDGER_FILE)  # this start's operations, for benchmarks
        await self._start_acme()
        await self._start_ntfy()
        self.pve.load()
        self.nodes = NodeHost(self)
        await self.nodes.start()
        self.nas = Nas(self)
        await self.nas.start()
        self.clusters = ClusterRegistry(self)
        await self.clusters.start()
        self._server = PVEServer(self.pve, self.secrets, self.status)
        await self._server.start()
        await self.pve.resume()

    async def _start_acme(self) -> None:
        """Pebble for the loopback directories of tls.issuers, and the Cloudflare model in front of
        its DNS server (a directory elsewhere, like Let's Encrypt's own, is out of the lab's reach)."""
        from labsim.apps.cloudflare import CloudflareAPI
        from labsim.pebble import PebbleServer

        local = [url for url in self.config.acme_servers if _loopback_url(url)]
        for url in set(self.config.acme_servers) - set(local):
            log.warning("tls.issuers: %s is not on loopback; the embedded lab serves no ACME directory there", url)
        self.pebble = PebbleServer(self.state_dir, local)
        await self.pebble.start()
        if local:
            assert self.secrets is not None
            self.cloudflare = CloudflareAPI(self.secrets.cloudflare_api_token, self.pebble.challtestsrv)

    async def _start_ntfy(self) -> None:
        """The ntfy model on the loopback address of observability.ntfy.server (ntfy.sh itself is out
        of the lab's reach), trusted through the same stand-in public web PKI as Pebble's HTTPS."""
        from labsim.apps.ntfy import NtfyServer

        url = self.config.ntfy_server
        if not url:
            return
        if not _loopback_url(url):
            log.warning("observability.ntfy: %s is not on loopback; the embedded lab serves no ntfy there", url)
            return
        assert self.secrets is not None and self.pebble is not None
        ntfy = NtfyServer(self.state_dir, url, self.secrets.ntfy_access_token, self.pebble.tls)
        try:
            await ntfy.start()
        except OSError as error:  # e.g. port 443 without root: the lab runs on, without its ntfy
            log.warning("observability.ntfy: cannot serve %s (%s); give the server a port above 1023, e.g. "
                        "https://%s:8443", url, error, ntfy.host)
            return
        self.ntfy = ntfy

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
        await self.pve.close()
        for component in (self.clusters, self.nas, self.nodes):
            if component is not None:
                await component.close()
        if self.ntfy is not None:
            await self.ntfy.close()
        if self.pebble is not None:
            await self.pebble.close()
        self._clock_state.save({"clock_offset": self.clock.offset})
        self.clock.ledger.close()

    @property
    def pve_url(self) -> str:
        return f"https://{self.config.pve_host}:{self.config.pve_port}"

    def status(self) -> dict[str, Any]:
        """What ``labsim status --json`` prints for a running lab."""
        vms = []
        for vm in sorted(self.pve.vms.values(), key=lambda vm: vm.vmid):
            ip = self.pve.guest(vm).ip
            vms.append({"vmid": vm.vmid, "name": vm.name, "status": vm.status, "ip": ip,
                        "ssh_port": self.config.ssh_port if ip else None})
        kube = self.clusters.status() if self.clusters is not None else None
        nas = self.nas.status() if self.nas is not None else None
        acme = self.pebble.status() if self.pebble is not None and self.pebble.directories else None
        ntfy = self.ntfy.status() if self.ntfy is not None else None
        return {**static_status(self.config), "running": True, "pid": os.getpid(), "vms": vms, "kube": kube,
                "nas": nas, "acme": acme, "ntfy": ntfy}


def _loopback_url(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def static_status(config: SimConfig) -> dict[str, Any]:
    """The status of a lab that does not run: its endpoints and credentials, from the state folder."""
    secrets_file = config.state_dir / "secrets.yaml"
    token_secret = None
    if secrets_file.exists():
        import yaml

        token_secret = (yaml.safe_load(secrets_file.read_text()) or {}).get("pve_token_secret")
    return {
        "running": False,
        "state_dir": str(config.state_dir),
        "pve": {"url": f"https://{config.pve_host}:{config.pve_port}", "node": config.pve_node,
                "token_id": config.token_id, "token_secret": token_secret,
                "ca_file": str(config.state_dir / "pve" / "ca.pem")},
        "vms": [],
        "ssh": {"user": config.ssh_user, "private_key": str(config.state_dir / "ssh" / "id_ed25519")},
        "kube": None,
    }


class LabHandle:
    """A Lab running on its own event loop in a background thread."""

    def __init__(self, lab: Lab, loop: asyncio.AbstractEventLoop) -> None:
        self.lab = lab
        self.loop = loop

    def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` on the lab's loop (thread-safe fault injection and inspection)."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(func(*args))
            except BaseException as error:
                future.set_exception(error)
        self.loop.call_soon_threadsafe(run)
        return future.result(START_TIMEOUT)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(START_TIMEOUT)

    def status(self) -> dict[str, Any]:
        return self.call(self.lab.status)

    def advance(self, seconds: float) -> None:
        self.call(self.lab.clock.advance, seconds)


@contextlib.contextmanager
def running_lab(config: SimConfig) -> Iterator[LabHandle]:
    """Start a Lab in a background thread; stop it (state kept) on exit."""
    lab = Lab(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"labsim-{lab.config.name}", daemon=True)
    thread.start()
    handle = LabHandle(lab, loop)
    try:
        try:
            handle.run(lab.start())
            yield handle
        finally:
            handle.run(lab.stop())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT)
        loop.close()


@contextlib.contextmanager
def detached_lab(state_dir: Path) -> Iterator[dict[str, Any]]:
    """``labsim up --detach`` in a separate process, ``labsim down`` on exit; yields the status."""
    labsim = [sys.executable, "-m", "labsim"]
    state = ["--state", str(state_dir)]
    subprocess.run([*labsim, "up", *state, "--detach"], check=True, capture_output=True, text=True,
                   timeout=START_TIMEOUT)
    try:
        out = subprocess.run([*labsim, "status", *state, "--json", "--show-secrets"], check=True,
                             capture_output=True, text=True, timeout=START_TIMEOUT).stdout
        yield json.loads(out)
    finally:
        subprocess.run([*labsim, "down", *state], capture_output=True, timeout=START_TIMEOUT)
