"""k3s join tokens: the secure format `K10<sha256 of the cluster CA>::<user>:<password>` that
`/var/lib/rancher/k3s/server/node-token` holds, and the short form (the password alone).

An agent given the secure form checks the CA it is offered against the hash before it sends the
password, so a hash mismatch and a wrong password fail differently, as in k3s.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

import yaml

_PREFIX = "K10"
_FORMAT_ERROR = ("failed to normalize server token; must be in format K10<CA-HASH>::<USERNAME>:<PASSWORD> "
                 "or <PASSWORD>")


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class JoinToken:
    password: str
    ca_hash: str | None = None


def generate() -> str:
    """A server token, as k3s makes one when none is configured."""
    return secrets.token_hex(16)


def ca_hash(ca_pem: bytes) -> str:
    return hashlib.sha256(ca_pem).hexdigest()


def ca_pem_from_kubeconfig(kubeconfig_yaml: str) -> bytes:
    doc = yaml.safe_load(kubeconfig_yaml)
    return base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])


def node_token(ca_pem: bytes, password: str) -> str:
    """The content of `server/node-token` (and `server/token`)."""
    return f"{_PREFIX}{ca_hash(ca_pem)}::server:{password}"


def parse(text: str) -> JoinToken:
    text = text.strip()
    if not text:
        raise TokenError(_FORMAT_ERROR)
    if not text.startswith(_PREFIX) or "::" not in text:
        return JoinToken(password=text)
    digest, _, creds = text[len(_PREFIX):].partition("::")
    _username, sep, password = creds.partition(":")
    if not sep or not password or not digest:
        raise TokenError(_FORMAT_ERROR)
    return JoinToken(password=password, ca_hash=digest)


def join_error(given: str, *, server_url: str, cluster_password: str, ca_pem: bytes) -> tuple[str, str] | None:
    """(log level, line) a joining k3s logs when ``given`` does not open the cluster, or None
    when it does. A bad format or CA hash is fatal; a wrong password k3s retries for ever."""
    try:
        token = parse(given)
    except TokenError as e:
        return "fatal", f"Error: {e}"
    actual = ca_hash(ca_pem)
    if token.ca_hash is not None and token.ca_hash != actual:
        return "fatal", f"Error: token CA hash does not match the Cluster CA certificate hash: {token.ca_hash} != {actual}"
    if not secrets.compare_digest(token.password, cluster_password):
        return "error", (f"Failed to validate connection to cluster at {server_url}: "
                         f"token is not valid: {server_url}/apis: 401 Unauthorized")
    return None
