"""The PVE API client: connect (API token, TLS verified), one request at a time with PVE's refusals
named, tasks followed to their end, and VM locks waited out with backoff."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests
from proxmoxer import ProxmoxResource, ResourceException
from proxmoxer.backends import https
from requests.adapters import HTTPAdapter
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_delay, wait_exponential

from labkit.errors import ProxmoxError
from labkit.params import Lab

# What ``connect`` returns: proxmoxer's resource tree (``api.nodes(name).qemu(vmid).config.get()``).
Api = ProxmoxResource


class _FingerprintAdapter(HTTPAdapter):
    """Pins the server certificate's SHA-256 fingerprint (urllib3 checks it on every connection)."""

    def __init__(self, fingerprint: str):
        self._fingerprint = fingerprint.replace(":", "").lower()
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self._fingerprint
        super().init_poolmanager(*args, **kwargs)


def connect(lab: Lab, timeout: float = 15) -> Api:
    """An API client authenticated with the lab's token, TLS verified; checked with ``/version``.

    Built from proxmoxer's HTTPS backend rather than ``ProxmoxAPI`` so that the fingerprint pin
    can be mounted on the session before the first request, without reaching into private state."""
    pve = lab.proxmox
    user, token_name = pve.token_id.split("!", 1)
    verify: str | bool = str(pve.ca_file) if pve.ca_file else False
    backend = https.Backend(pve.host, port=pve.port, user=user, token_name=token_name,
                            token_value=lab.secret(pve.token_secret), verify_ssl=verify, timeout=timeout)
    session = backend.get_session()
    if pve.fingerprint:
        session.mount(f"https://{pve.host}:{pve.port}/", _FingerprintAdapter(pve.fingerprint))
    api = ProxmoxResource(base_url=backend.get_base_url(), session=session, serializer=backend.get_serializer())
    try:
        api.version.get()
    except ResourceException as exc:
        hint = " (check proxmox.token_id and the token secret)" if exc.status_code == 401 else ""
        raise ProxmoxError(f"Proxmox VE at {pve.host}:{pve.port} refused the API token{hint}: {exc}") from None
    except requests.exceptions.SSLError as exc:
        anchor = f"ca_file {pve.ca_file}" if pve.ca_file else f"fingerprint {pve.fingerprint}"
        raise ProxmoxError(f"TLS verification of {pve.host}:{pve.port} failed against {anchor}: {exc}") from None
    except requests.exceptions.ConnectionError as exc:
        raise ProxmoxError(f"cannot reach Proxmox VE at https://{pve.host}:{pve.port}: {exc}") from None
    return api


def pve_message(exc: ResourceException) -> str:
    text = str(exc.content or exc.status_message).strip()
    if exc.errors:
        text += " " + "; ".join(f"{k}: {v}" for k, v in dict(exc.errors).items())
    return text


def call(what: str, request: Callable[[], Any]) -> Any:
    """One API request; PVE's refusal becomes a ProxmoxError naming what was attempted."""
    try:
        return request()
    except ResourceException as exc:
        raise ProxmoxError(f"{what}: PVE answered {exc.status_code}: {pve_message(exc)}") from exc
    except requests.exceptions.RequestException as exc:
        raise ProxmoxError(f"{what}: no answer from Proxmox VE ({_network_reason(exc)}); is the host up "
                           "and reachable? A task it started may still be running: see Tasks in the PVE UI") from exc


def _network_reason(exc: requests.exceptions.RequestException) -> str:
    """'[Errno 111] Connection refused' rather than urllib3's retry report with the whole URL."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return str(reason or exc).rsplit(": ", 1)[-1]


# -- tasks and locks -----------------------------------------------------------------------------


def wait_task(api: Api, node: str, upid: str, *, what: str, timeout: float = 600) -> None:
    """Wait for a UPID to stop; a task that ends in anything but OK raises with PVE's exit status."""
    deadline, delay = time.monotonic() + timeout, 0.02
    while True:
        status = call(f"{what}: task status", lambda: api.nodes(node).tasks(upid).status.get())
        if status.get("status") == "stopped":
            break
        if time.monotonic() > deadline:
            raise ProxmoxError(f"{what}: task {upid} still running after {timeout:.0f} s; see Tasks on node {node}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    exitstatus = str(status.get("exitstatus", ""))
    if exitstatus != "OK" and not exitstatus.startswith("WARNINGS"):
        raise ProxmoxError(f"{what} failed: {exitstatus or 'no exit status'} (task {upid})")


def _is_locked(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, ProxmoxError) else exc
    return isinstance(cause, ResourceException) and cause.status_code == 500 and "lock" in str(cause.content)


def with_lock_retry(what: str, request: Callable[[], Any], lock_timeout: float) -> Any:
    """Run ``request``, retrying with exponential backoff while PVE says the VM is locked."""
    retrying = Retrying(retry=retry_if_exception(_is_locked), stop=stop_after_delay(lock_timeout),
                        wait=wait_exponential(multiplier=0.1, max=5), reraise=False)
    try:
        return retrying(call, what, request)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise ProxmoxError(f"{what}: the VM stayed locked for {lock_timeout:.0f} s ({last}); another task "
                           "holds it: check Tasks in the PVE UI, or `qm unlock VMID` if the lock is stale") from None


def run_task(api: Api, node: str, what: str, request: Callable[[], Any], *,
              timeout: float, lock_timeout: float) -> None:
    upid = with_lock_retry(what, request, lock_timeout)
    if isinstance(upid, str) and upid.startswith("UPID:"):
        wait_task(api, node, upid, what=what, timeout=timeout)

