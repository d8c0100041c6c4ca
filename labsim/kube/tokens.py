"""Service account tokens (serviceaccounts/token, `kubectl create token`): JWTs signed with a key
of the cluster, which the API server accepts as bearer tokens of that service account."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

DEFAULT_SECONDS = 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(cluster_secret: str) -> bytes:
    return hashlib.sha256(f"labsim-service-account:{cluster_secret}".encode()).digest()


def issue(cluster_secret: str, namespace: str, name: str, uid: str, *, audiences: list[str], seconds: int,
          now: float | None = None) -> tuple[str, float]:
    """A signed token for system:serviceaccount:NAMESPACE:NAME and its expiry (epoch seconds)."""
    issued = int(now if now is not None else time.time())
    expires = issued + seconds
    claims = {"aud": audiences or ["https://kubernetes.default.svc.cluster.local", "k3s"], "exp": expires,
              "iat": issued, "iss": "https://kubernetes.default.svc.cluster.local",
              "sub": f"system:serviceaccount:{namespace}:{name}",
              "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}}}
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = _b64(hmac.new(_key(cluster_secret), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{signature}", float(expires)


def subject(cluster_secret: str, token: str, now: float | None = None) -> str | None:
    """The user a token authenticates (None if it is not ours, tampered with, or expired)."""
    try:
        head, body, signature = token.split(".")
        expected = hmac.new(_key(cluster_secret), f"{head}.{body}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        claims = json.loads(_unb64(body))
    except (ValueError, json.JSONDecodeError):
        return None
    if claims.get("exp", 0) < (now if now is not None else time.time()):
        return None
    return claims.get("sub")
