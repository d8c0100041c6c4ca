"""Who a request comes from, as the API server's authenticators decide: a client certificate of
the cluster CA (CN = user, O = groups), a ServiceAccount bearer token (projected, or the legacy
token of a ``kubernetes.io/service-account-token`` Secret), then ``Impersonate-*`` headers,
which the caller must be allowed to ``impersonate`` (the check is the authorizer's, passed in)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from labsim.kube import tokens
from labsim.kube.store import StoreError

AUTHENTICATED = "system:authenticated"
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    def info(self) -> dict:
        """The user as authentication.k8s.io's UserInfo."""
        out: dict = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra}
        return out

    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) when this is a ServiceAccount's user."""
        if not self.name.startswith(SA_PREFIX):
            return None
        namespace, _, name = self.name.removeprefix(SA_PREFIX).partition(":")
        return (namespace, name) if namespace and name and ":" not in name else None


USER = web.RequestKey("user", User)  # the request's user, set once it is authenticated and authorized


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return (SA_GROUP, f"{SA_GROUP}:{namespace}")


def from_certificate(peercert: dict) -> User:
    pairs = [pair for rdn in peercert.get("subject", ()) for pair in rdn]
    name = next((v for k, v in pairs if k == "commonName"), "")
    groups = [v for k, v in pairs if k == "organizationName"]
    return User(name, (*groups, AUTHENTICATED))


def from_token(cluster, token: str) -> User | None:
    """The ServiceAccount a token belongs to, if it is valid and its account (and, for a legacy
    token, its Secret) still exists."""
    claims = tokens.verify(cluster.token, token, cluster.now())
    if claims is None:
        return None
    store = cluster.store
    account = tokens.account_of(claims)
    if account is None:
        return None
    namespace, name, uid = account
    sa = store.get(store.resource("v1", "ServiceAccount"), namespace, name)
    if sa is None or (uid and sa["metadata"].get("uid") != uid):
        return None
    secret_name = claims.get("kubernetes.io/serviceaccount/secret.name")
    if secret_name is not None:
        secret = store.get(store.resource("v1", "Secret"), namespace, secret_name)
        if secret is None or tokens.secret_token(secret) != token:
            return None
    extra = (("authentication.kubernetes.io/credential-id", (f"JTI={claims['jti']}",)),) if "jti" in claims else ()
    return User(f"{SA_PREFIX}{namespace}:{name}", (*service_account_groups(namespace), AUTHENTICATED),
                sa["metadata"].get("uid", ""), extra)


def token_review(cluster, review: dict) -> dict:
    """A TokenReview answered as the API server's authenticator would answer the token."""
    spec = review.get("spec") or {}
    user = from_token(cluster, spec.get("token") or "")
    if user is None:
        return {**review, "status": {"user": {}, "error": "invalid bearer token"}}
    audiences = spec.get("audiences") or list(tokens.AUDIENCES)
    return {**review, "status": {"authenticated": True, "user": user.info(), "audiences": audiences}}


def authenticate(cluster, peercert: dict | None, authorization: str) -> User | None:
    """The user of a request's credentials; None if it brought none that are valid."""
    if peercert:
        return from_certificate(peercert)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return from_token(cluster, token.strip())
    return None


# Raises unless the user may impersonate: (user, resource, API group, name, namespace, subresource).
Check = Callable[[User, str, str, str, str | None, str], None]


def impersonate(user: User, headers, check: Check) -> User:
    """The user ``Impersonate-User``/``-Group``/``-Uid``/``-Extra-*`` ask for, after ``check``
    (which raises when the caller may not impersonate it) for each of them."""
    name = headers.get("Impersonate-User")
    groups = headers.getall("Impersonate-Group", [])
    uid = headers.get("Impersonate-Uid", "")
    extras = {k[len("Impersonate-Extra-"):].lower(): headers.getall(k)
              for k in headers if k.lower().startswith("impersonate-extra-")}
    if not name:
        if groups or uid or extras:
            raise StoreError(500, "InternalError", "Internal error occurred: requested impersonation of "
                             "groups, uid or extra without impersonating a user")
        return user
    account = User(name).service_account()
    if account:
        check(user, "serviceaccounts", "", account[1], account[0], "")
    else:
        check(user, "users", "", name, None, "")
    for group in groups:
        check(user, "groups", "", group, None, "")
    if uid:
        check(user, "uids", "authentication.k8s.io", uid, None, "")
    for key, values in extras.items():
        for value in values:
            check(user, "userextras", "authentication.k8s.io", value, None, key)
    if account and not groups:
        groups = list(service_account_groups(account[0]))
    if name != "system:anonymous" and AUTHENTICATED not in groups:
        groups.append(AUTHENTICATED)
    return User(name, tuple(groups), uid, tuple((k, tuple(v)) for k, v in sorted(extras.items())))
