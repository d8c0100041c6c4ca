"""Authorization as kube-apiserver does it with ``--authorization-mode=Node,RBAC``: the request's
attributes (verb, API group, resource/subresource, namespace, name, or a non-resource path) are
allowed for ``system:masters`` and otherwise only by an RBAC rule bound to the user, one of its
groups or its ServiceAccount. Denials are 403 Status bodies worded as the real server's; the
access reviews (SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview,
SelfSubjectRulesReview) and SelfSubjectReview answer from the same authorizer.

The kubelets of the twin run in-process, so no request comes from a ``system:node:*`` user and
the Node authorizer has nothing to decide."""

from __future__ import annotations

from dataclasses import dataclass, field

from labsim.kube.authn import SA_PREFIX, User
from labsim.kube.store import Store, StoreError

MASTERS = "system:masters"
RBAC = "rbac.authorization.k8s.io"
_RBAC_KEYS = tuple((RBAC, plural) for plural in ("roles", "rolebindings", "clusterroles", "clusterrolebindings"))
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
                 "DELETE": "delete"}


@dataclass(frozen=True)
class Attributes:
    user: User
    verb: str
    resource_request: bool = True
    namespace: str = ""
    group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""


def request_attributes(user: User, method: str, path: str, query) -> Attributes:
    """What a request asks, parsed from its URL as the API server's RequestInfoFactory does."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3 or parts[0] not in ("api", "apis") or (parts[0] == "apis" and len(parts) < 4):
        return Attributes(user, method.lower(), False, path=path)
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    verb = _METHOD_VERBS.get(method, "")
    if rest[0] in ("watch", "proxy") and len(rest) > 1:  # the deprecated /watch/ and /proxy/ prefixes
        verb, rest = rest[0], rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 and verb != "proxy" else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch") in ("1", "true") else "list"
        name = _exact_name(query.get("fieldSelector") or "")
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(user, verb, True, namespace, group, resource, sub, name)


def _exact_name(selector: str) -> str:
    for term in selector.split(","):
        key, op, value = term.replace("==", "=").partition("=")
        if op and key.strip() == "metadata.name" and not key.endswith("!"):
            return value.strip()
    return ""


# -- RBAC ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    verbs: frozenset[str]
    groups: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    urls: tuple[str, ...] = ()

    @classmethod
    def of(cls, rule: dict) -> Rule:
        return cls(frozenset(rule.get("verbs") or ()), frozenset(rule.get("apiGroups") or ()),
                   frozenset(rule.get("resources") or ()), frozenset(rule.get("resourceNames") or ()),
                   tuple(rule.get("nonResourceURLs") or ()))

    def allows(self, a: Attributes) -> bool:
        if "*" not in self.verbs and a.verb not in self.verbs:
            return False
        if not a.resource_request:
            return any(u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u[:-1]))
                       for u in self.urls)
        if "*" not in self.groups and a.group not in self.groups:
            return False
        combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        if not ("*" in self.resources or combined in self.resources
                or (a.subresource and f"*/{a.subresource}" in self.resources)):
            return False
        return not self.names or a.name in self.names

    def as_review(self) -> dict:
        if self.urls:
            return {"verbs": sorted(self.verbs), "nonResourceURLs": list(self.urls)}
        out = {"verbs": sorted(self.verbs), "apiGroups": sorted(self.groups), "resources": sorted(self.resources)}
        if self.names:
            out["resourceNames"] = sorted(self.names)
        return out


@dataclass
class Grant:
    """The rules one binding gives one subject (or why it gives none: its role does not exist)."""
    source: str
    rules: list[Rule] = field(default_factory=list)
    error: str = ""


def _subject_key(subject: dict, namespace: str) -> str:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "ServiceAccount":
        return f"User:{SA_PREFIX}{subject.get('namespace') or namespace}:{name}"
    return f"{kind}:{name}"


def _describe(subject: dict, namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{subject.get("name", "")}/{subject.get("namespace") or namespace}"'
    return f'{subject.get("kind")} "{subject.get("name", "")}"'


class Index:
    """Who is granted what, per subject: the cluster-wide grants and those of each namespace."""

    def __init__(self, store: Store) -> None:
        roles, cluster_roles = (store.resource_for(p, RBAC) for p in ("roles", "clusterroles"))
        self.cluster: dict[str, list[Grant]] = {}
        self.namespaced: dict[str, dict[str, list[Grant]]] = {}
        for binding in store.list(store.resource_for("clusterrolebindings", RBAC)):
            self._add(store, binding, "", cluster_roles, roles, self.cluster)
        for binding in store.list(store.resource_for("rolebindings", RBAC)):
            ns = binding["metadata"]["namespace"]
            self._add(store, binding, ns, cluster_roles, roles, self.namespaced.setdefault(ns, {}))

    @staticmethod
    def _add(store: Store, binding: dict, ns: str, cluster_roles, roles, into: dict) -> None:
        ref = binding.get("roleRef") or {}
        kind, name = ref.get("kind", ""), ref.get("name", "")
        role = (store.get(cluster_roles, None, name) if kind == "ClusterRole" else
                store.get(roles, ns, name) if kind == "Role" and ns else None)
        bname = binding["metadata"]["name"]
        for subject in binding.get("subjects") or []:
            described = _describe(subject, ns)
            source = (f'RoleBinding "{bname}/{ns}" of {kind} "{name}" to {described}' if ns else
                      f'ClusterRoleBinding "{bname}" of ClusterRole "{name}" to {described}')
            if role is None:
                grant = Grant(source, error=f'{kind.lower()}.{RBAC} "{name}" not found')
            else:
                grant = Grant(source, [Rule.of(r) for r in role.get("rules") or []])
            into.setdefault(_subject_key(subject, ns), []).append(grant)

    def grants(self, user: User, namespace: str):
        keys = [f"User:{user.name}", *(f"Group:{g}" for g in user.groups)]
        for table in (self.cluster, self.namespaced.get(namespace, {}) if namespace else {}):
            for key in keys:
                yield from table.get(key, ())


class Authorizer:
    """``mode`` "RBAC" (the twin's, as k3s') or "AlwaysAllow" (for benchmarks side by side)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.mode = "RBAC"
        self._index: Index | None = None
        self._seen: tuple[int, ...] = ()

    def index(self) -> Index:
        seen = tuple(self.store.changed(key) for key in _RBAC_KEYS)
        if self._index is None or seen != self._seen:
            self._index, self._seen = Index(self.store), seen
        return self._index

    def authorize(self, a: Attributes) -> tuple[bool, str]:
        """(allowed, reason), the reason worded as the real authorizers word it."""
        if self.mode == "AlwaysAllow" or MASTERS in a.user.groups:
            return True, ""
        errors = []
        for grant in self.index().grants(a.user, a.namespace):
            if grant.error:
                errors.append(grant.error)
            elif any(rule.allows(a) for rule in grant.rules):
                return True, f"RBAC: allowed by {grant.source}"
        if not errors:
            return False, ""
        return False, "RBAC: " + (errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")

    def rules(self, user: User, namespace: str) -> tuple[list[dict], list[dict], list[str]]:
        """The resource rules, non-resource rules and resolution errors that apply to a user."""
        resource, urls, errors = [], [], []
        for grant in self.index().grants(user, namespace):
            if grant.error:
                errors.append(grant.error)
            for rule in grant.rules:
                (urls if rule.urls else resource).append(rule.as_review())
        return resource, urls, errors

    def check(self, a: Attributes) -> None:
        allowed, reason = self.authorize(a)
        if not allowed:
            raise forbidden(a, reason)

    def may_impersonate(self, user: User, resource: str, group: str, name: str, namespace: str | None,
                        sub: str) -> None:
        self.check(Attributes(user, "impersonate", True, namespace or "", group, resource, sub, name))


def forbidden(a: Attributes, reason: str = "") -> StoreError:
    """The 403 of a denied request, as the API server words it."""
    if not a.resource_request:
        text = f'User "{a.user.name}" cannot {a.verb} path "{a.path}"'
    else:
        resource = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        where = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
        text = f'User "{a.user.name}" cannot {a.verb} resource "{resource}" in API group "{a.group}" {where}'
    if reason:
        text = f"{text}: {reason}"
    qualified = f"{a.resource}.{a.group}" if a.group else a.resource
    if not qualified:
        message = f"forbidden: {text}"
    elif a.name:
        message = f'{qualified} "{a.name}" is forbidden: {text}'
    else:
        message = f"{qualified} is forbidden: {text}"
    details = {k: v for k, v in (("name", a.name), ("group", a.group), ("kind", a.resource)) if v}
    return StoreError(403, "Forbidden", message, details=details)


# -- access reviews -----------------------------------------------------------------------------
def review(authorizer: Authorizer, user: User, obj: dict, namespace: str | None) -> dict:
    """The answer to an authorization.k8s.io review or authentication.k8s.io SelfSubjectReview
    created by ``user`` (``namespace``: the URL's, for LocalSubjectAccessReview)."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "SelfSubjectReview":
        return {**obj, "status": {"userInfo": user.info()}}
    if kind == "SelfSubjectRulesReview":
        resource, urls, errors = authorizer.rules(user, spec.get("namespace") or "")
        status: dict = {"resourceRules": resource, "nonResourceRules": urls, "incomplete": bool(errors)}
        if errors:
            status["evaluationError"] = "; ".join(errors)
        return {**obj, "status": status}
    if kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
        extra = tuple((k, tuple(v)) for k, v in sorted((spec.get("extra") or {}).items()))
        user = User(spec.get("user") or "", tuple(spec.get("groups") or ()), spec.get("uid") or "", extra)
    allowed, reason = authorizer.authorize(_review_attributes(obj, user, namespace))
    status = {"allowed": allowed}
    if reason:
        status["reason"] = reason
    return {**obj, "status": status}


def _review_attributes(obj: dict, user: User, namespace: str | None) -> Attributes:
    spec = obj.get("spec") or {}
    res, non = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if (res is None) == (non is None):
        raise StoreError(422, "Invalid", f'{obj.get("kind")}.authorization.k8s.io "" is invalid: '
                         "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes "
                         "or resourceAttributes must be specified")
    if non is not None:
        return Attributes(user, non.get("verb") or "", False, path=non.get("path") or "")
    ns = res.get("namespace") or ""
    if namespace is not None:  # LocalSubjectAccessReview: the URL's namespace
        if ns and ns != namespace:
            raise StoreError(400, "BadRequest", f'spec.resourceAttributes.namespace must match namespace: '
                             f'{namespace}')
        ns = namespace
    return Attributes(user, res.get("verb") or "", True, ns, res.get("group") or "", res.get("resource") or "",
                      res.get("subresource") or "", res.get("name") or "")
