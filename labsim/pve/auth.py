"""PVE's two ways in: API tokens (``Authorization: PVEAPIToken=USER@REALM!ID=SECRET``) and
tickets from ``POST /access/ticket`` (cookie ``PVEAuthCookie``), where every write must also
carry the ``CSRFPreventionToken`` header. Tickets are signed and expire after two hours."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

from labsim.clock import Clock
from labsim.pve.errors import PVEError

TICKET_LIFETIME = 7200
ROOT = "root@pam"


@dataclass(frozen=True)
class Identity:
    user: str  # as it appears in UPIDs: root@pam, or root@pam!labkit for a token


class Auth:
    def __init__(self, token_id: str, token_secret: str, root_password: str, clock: Clock) -> None:
        self.token_id = token_id
        self._token_secret = token_secret
        self._root_password = root_password
        self._clock = clock
        self._key = secrets.token_bytes(32)  # tickets live as long as the lab process, as on a PVE restart

    def login(self, username: str, password: str) -> dict[str, str]:
        """``POST /access/ticket``: a password, or a still valid ticket (proxmoxer renews so)."""
        user = username if "@" in username else f"{username}@pam"
        renewing = self._ticket_user(password) == user
        if user != ROOT or not (renewing or _same(password, self._root_password)):
            raise PVEError(401, "authentication failure")
        stamp = f"{int(self._clock.now()):08X}"
        return {
            "username": user,
            "ticket": f"PVE:{user}:{stamp}::{self._sign(f'PVE:{user}:{stamp}')}",
            "CSRFPreventionToken": f"{stamp}:{self._sign(f'{stamp}:{user}')}",
            "cap": {"vms": {"VM.Allocate": 1, "VM.Config.Options": 1, "VM.PowerMgmt": 1}},  # type: ignore[dict-item]
        }

    def authenticate(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        if header.startswith("PVEAPIToken="):
            return self._token(header.removeprefix("PVEAPIToken="))
        cookie = request.cookies.get("PVEAuthCookie")
        if cookie is None:
            raise PVEError(401, "No ticket")
        user = self._ticket_user(cookie)
        if user is None:
            raise PVEError(401, "permission denied - invalid PVE ticket")
        if request.method != "GET":
            self._check_csrf(request.headers.get("CSRFPreventionToken", ""), user)
        return Identity(user)

    def authenticate_token(self, request: web.Request) -> Identity:
        """The admin endpoint takes the API token only."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("PVEAPIToken="):
            raise PVEError(401, "No ticket")
        return self._token(header.removeprefix("PVEAPIToken="))

    def _token(self, value: str) -> Identity:
        token_id, sep, secret = value.partition("=")
        if not sep or "!" not in token_id:
            raise PVEError(401, "invalid token value!")
        if token_id != self.token_id:
            user, _, name = token_id.partition("!")
            raise PVEError(401, f"no such token '{name}' for user '{user}'")
        if not _same(secret, self._token_secret):
            raise PVEError(401, "invalid token value!")
        return Identity(token_id)

    def _ticket_user(self, ticket: str) -> str | None:
        parts = ticket.split(":")
        if len(parts) != 5 or parts[0] != "PVE":
            return None
        _, user, stamp, _, signature = parts
        if not _same(signature, self._sign(f"PVE:{user}:{stamp}")):
            return None
        if self._clock.now() - int(stamp, 16) > TICKET_LIFETIME:
            return None
        return user

    def _check_csrf(self, token: str, user: str) -> None:
        stamp, _, signature = token.partition(":")
        valid = bool(stamp) and _same(signature, self._sign(f"{stamp}:{user}"))
        if not valid or self._clock.now() - int(stamp, 16) > TICKET_LIFETIME:
            raise PVEError(401, "Permission denied - invalid csrf token")

    def _sign(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode().rstrip("=")


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison that takes any text: compare_digest refuses non-ASCII str
    (a TypeError, once a 500), so a token or ticket with an 'é' is simply a wrong one: 401."""
    return hmac.compare_digest(given.encode(errors="surrogateescape"), expected.encode(errors="surrogateescape"))
