"""Service account tokens (serviceaccounts/token, `kubectl create token`): JWTs signed with a key
of the cluster, which the API server accepts as bearer tokens of that service account."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

DEFAULT_SECONDS = 3600
AUDIENCES = ("https://kubernetes.default.svc.cluster.local", "k3s")  # k3s' API server audiences


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
    claims = {"aud": audiences or list(AUDIENCES), "exp": expires,
              "iat": issued, "jti": str(uuid.uuid4()), "iss": "https://kubernetes.default.svc.cluster.local",
              "sub": f"system:serviceaccount:{namespace}:{name}",
              "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}}}
    return _sign(cluster_secret, claims), float(expires)


def _sign(cluster_secret: str, claims: dict) -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = _b64(hmac.new(_key(cluster_secret), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{signature}"


def issue_legacy(cluster_secret: str, namespace: str, name: str, uid: str, secret_name: str) -> str:
    """The never-expiring token the token controller writes into a service-account-token Secret."""
    return _sign(cluster_secret, {
        "iss": "kubernetes/serviceaccount", "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/secret.name": secret_name,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": uid,
        "sub": f"system:serviceaccount:{namespace}:{name}"})


def verify(cluster_secret: str, token: str, now: float | None = None) -> dict | None:
    """A token's claims (None if it is not ours, tampered with, or expired)."""
    try:
        head, body, signature = token.split(".")
        expected = hmac.new(_key(cluster_secret), f"{head}.{body}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        claims = json.loads(_unb64(body))
    except (ValueError, json.JSONDecodeError):
        return None
    if "exp" in claims and claims["exp"] < (now if now is not None else time.time()):
        return None
    return claims


def account_of(claims: dict) -> tuple[str, str, str] | None:
    """(namespace, name, uid) of the ServiceAccount a token's claims name."""
    bound = claims.get("kubernetes.io")
    if isinstance(bound, dict):
        account = bound.get("serviceaccount") or {}
        return bound.get("namespace", ""), account.get("name", ""), account.get("uid", "")
    if "kubernetes.io/serviceaccount/namespace" in claims:
        return (claims["kubernetes.io/serviceaccount/namespace"],
                claims.get("kubernetes.io/serviceaccount/service-account.name", ""),
                claims.get("kubernetes.io/serviceaccount/service-account.uid", ""))
    return None


def secret_token(secret: dict) -> str:
    """The token a service-account-token Secret holds ("" if none yet)."""
    data = (secret.get("data") or {}).get("token") or ""
    try:
        return base64.b64decode(data).decode()
    except ValueError:
        return ""
