"""The RBAC objects a fresh k3s 1.34 API server creates for itself: Kubernetes' bootstrap policy
(cluster-admin, the aggregated admin/edit/view, the system:* roles of the components and their
bindings) plus the k3s ones. The admin/edit/view rules are filled by aggregation
(controllers/clusterroles.py), as kube-controller-manager does.

A rule is written ``(api groups, resources, verbs)`` as space-separated words, or
``("url:", paths, verbs)`` for non-resource URLs, or with a fourth item: resource names.
"""

from __future__ import annotations

RBAC = "rbac.authorization.k8s.io"
_BOOTSTRAP = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
_RW = "create delete deletecollection patch update"
_RO = "get list watch"

_AGGREGATE_TO_VIEW = [
    ("", "configmaps endpoints persistentvolumeclaims persistentvolumeclaims/status pods replicationcontrollers "
         "replicationcontrollers/scale serviceaccounts services services/status", _RO),
    ("", "bindings events limitranges namespaces/status pods/log pods/status replicationcontrollers/status "
         "resourcequotas resourcequotas/status", _RO),
    ("", "namespaces", _RO),
    ("discovery.k8s.io", "endpointslices", _RO),
    ("apps", "controllerrevisions daemonsets daemonsets/status deployments deployments/scale deployments/status "
             "replicasets replicasets/scale replicasets/status statefulsets statefulsets/scale statefulsets/status",
     _RO),
    ("autoscaling", "horizontalpodautoscalers horizontalpodautoscalers/status", _RO),
    ("batch", "cronjobs cronjobs/status jobs jobs/status", _RO),
    ("extensions", "daemonsets daemonsets/status deployments deployments/scale deployments/status ingresses "
                   "ingresses/status networkpolicies replicasets replicasets/scale replicasets/status "
                   "replicationcontrollers/scale", _RO),
    ("policy", "poddisruptionbudgets poddisruptionbudgets/status", _RO),
    ("networking.k8s.io", "ingresses ingresses/status networkpolicies", _RO),
]
_AGGREGATE_TO_EDIT = [
    ("", "pods/attach pods/exec pods/portforward pods/proxy secrets services/proxy", _RO),
    ("", "serviceaccounts", "impersonate"),
    ("", "pods pods/attach pods/exec pods/portforward pods/proxy", _RW),
    ("", "pods/eviction", "create"),
    ("", "configmaps events persistentvolumeclaims replicationcontrollers replicationcontrollers/scale secrets "
         "serviceaccounts services services/proxy", _RW),
    ("", "serviceaccounts/token", "create"),
    ("apps", "daemonsets deployments deployments/rollback deployments/scale replicasets replicasets/scale "
             "statefulsets statefulsets/scale", _RW),
    ("autoscaling", "horizontalpodautoscalers", _RW),
    ("batch", "cronjobs jobs", _RW),
    ("extensions", "daemonsets deployments deployments/rollback deployments/scale ingresses networkpolicies "
                   "replicasets replicasets/scale replicationcontrollers/scale", _RW),
    ("policy", "poddisruptionbudgets", _RW),
    ("networking.k8s.io", "ingresses networkpolicies", _RW),
    ("coordination.k8s.io", "leases", f"{_RW} get list watch"),
]
_AGGREGATE_TO_ADMIN = [
    ("authorization.k8s.io", "localsubjectaccessreviews", "create"),
    (RBAC, "rolebindings roles", f"{_RW} get list watch"),
]
_EVENTS = ("\"\" events.k8s.io", "events", "create patch update")

CLUSTER_ROLES: dict[str, list[tuple]] = {
    "cluster-admin": [("*", "*", "*"), ("url:", "*", "*")],
    "system:aggregate-to-admin": _AGGREGATE_TO_ADMIN,
    "system:aggregate-to-edit": _AGGREGATE_TO_EDIT,
    "system:aggregate-to-view": _AGGREGATE_TO_VIEW,
    "system:auth-delegator": [("authentication.k8s.io", "tokenreviews", "create"),
                              ("authorization.k8s.io", "subjectaccessreviews", "create")],
    "system:basic-user": [("authorization.k8s.io", "selfsubjectaccessreviews selfsubjectrulesreviews", "create"),
                          ("authentication.k8s.io", "selfsubjectreviews", "create")],
    "system:discovery": [("url:", "/api /api/* /apis /apis/* /healthz /livez /openapi /openapi/* /readyz "
                                  "/version /version/", "get")],
    "system:public-info-viewer": [("url:", "/healthz /livez /readyz /version /version/", "get")],
    "system:monitoring": [("url:", "/healthz /healthz/* /livez /livez/* /metrics /metrics/slis /readyz /readyz/*",
                           "get")],
    "system:service-account-issuer-discovery": [("url:", "/.well-known/openid-configuration /openid/v1/jwks",
                                                 "get")],
    "system:kube-controller-manager": [
        _EVENTS, ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "get update", "kube-controller-manager"),
        ("", "secrets serviceaccounts", "create"), ("", "secrets", "delete"),
        ("", "configmaps namespaces secrets serviceaccounts", "get"), ("", "secrets serviceaccounts", "update"),
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"), ("*", "*", "list watch"),
        ("", "serviceaccounts/token", "create")],
    "system:kube-scheduler": [
        _EVENTS, ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "get update", "kube-scheduler"),
        ("", "nodes", _RO), ("", "pods", "delete get list watch"), ("", "bindings pods/binding", "create"),
        ("", "pods/status", "patch update"), ("", "replicationcontrollers services", _RO),
        ("apps extensions", "replicasets", _RO), ("apps", "statefulsets", _RO),
        ("policy", "poddisruptionbudgets", _RO), ("", "persistentvolumeclaims persistentvolumes", _RO),
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
        ("storage.k8s.io", "csinodes", _RO), ("", "namespaces", _RO), ("storage.k8s.io", "csidrivers", _RO),
        ("storage.k8s.io", "csistoragecapacities", _RO)],
    "system:volume-scheduler": [("", "persistentvolumes", "get list patch update watch"),
                                ("storage.k8s.io", "storageclasses", _RO),
                                ("", "persistentvolumeclaims", "get list patch update watch")],
    "system:kube-dns": [("", "endpoints services", "list watch")],
    "system:kubelet-api-admin": [("", "nodes", _RO), ("", "nodes", "proxy"),
                                 ("", "nodes/log nodes/metrics nodes/proxy nodes/stats", "*")],
    "system:node": [
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "localsubjectaccessreviews subjectaccessreviews", "create"),
        ("", "services", _RO), ("", "nodes", "create get list watch"), ("", "nodes/status", "patch update"),
        ("", "nodes", "patch update"), ("", "events", "create patch update"), ("", "pods", _RO),
        ("", "pods", "create delete"), ("", "pods/status", "patch update"), ("", "pods/eviction", "create"),
        ("", "configmaps secrets", _RO), ("", "persistentvolumeclaims persistentvolumes", "get"),
        ("", "endpoints", "get"), ("certificates.k8s.io", "certificatesigningrequests", "create get list watch"),
        ("coordination.k8s.io", "leases", "create delete get patch update"),
        ("storage.k8s.io", "volumeattachments", "get"), ("", "serviceaccounts/token", "create"),
        ("", "persistentvolumeclaims/status", "get patch update"), ("storage.k8s.io", "csidrivers", _RO),
        ("storage.k8s.io", "csinodes", "create delete get patch update"), ("node.k8s.io", "runtimeclasses", _RO)],
    "system:node-proxier": [("", "endpoints services", "list watch"), ("", "nodes", _RO), _EVENTS,
                            ("discovery.k8s.io", "endpointslices", "list watch")],
    "system:persistent-volume-provisioner": [
        ("", "persistentvolumes", "create delete get list watch"),
        ("", "persistentvolumeclaims", "get list update watch"), ("storage.k8s.io", "storageclasses", _RO),
        ("", "events", "watch"), _EVENTS],
    # k3s' own: its supervisor's controllers and its cloud controller manager
    "system:k3s-controller": [("", "nodes", _RO), ("", "namespaces", _RO), ("", "services", _RO),
                              ("discovery.k8s.io", "endpointslices", _RO), ("", "endpoints", _RO),
                              ("", "pods", _RO), ("", "configmaps secrets", _RO)],
    "k3s-cloud-controller-manager": [("", "nodes", "*"), ("", "nodes/status", "patch"),
                                     ("", "services", _RO), ("", "services/status", "patch update"),
                                     ("", "serviceaccounts", "create"), ("", "configmaps", "get"),
                                     ("coordination.k8s.io", "leases", "*"), _EVENTS, ("", "pods", "*"),
                                     ("", "namespaces", "*"), ("apps", "daemonsets", "*"),
                                     ("discovery.k8s.io", "endpointslices", _RO)],
}
# Aggregated roles: (selector label, own labels); their rules come from the roles they select.
AGGREGATED = {
    "admin": ("rbac.authorization.k8s.io/aggregate-to-admin", {}),
    "edit": ("rbac.authorization.k8s.io/aggregate-to-edit", {"rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
    "view": ("rbac.authorization.k8s.io/aggregate-to-view", {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
}
_LABELS = {"system:aggregate-to-admin": {"rbac.authorization.k8s.io/aggregate-to-admin": "true"},
           "system:aggregate-to-edit": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"},
           "system:aggregate-to-view": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}

# binding name: (cluster role, subjects as "Kind:name" or "ServiceAccount:namespace:name")
CLUSTER_ROLE_BINDINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cluster-admin": ("cluster-admin", ("Group:system:masters",)),
    "system:basic-user": ("system:basic-user", ("Group:system:authenticated",)),
    "system:discovery": ("system:discovery", ("Group:system:authenticated",)),
    "system:public-info-viewer": ("system:public-info-viewer",
                                  ("Group:system:authenticated", "Group:system:unauthenticated")),
    "system:monitoring": ("system:monitoring", ("Group:system:monitoring",)),
    "system:service-account-issuer-discovery": ("system:service-account-issuer-discovery",
                                                ("Group:system:serviceaccounts",)),
    "system:kube-controller-manager": ("system:kube-controller-manager", ("User:system:kube-controller-manager",)),
    "system:kube-scheduler": ("system:kube-scheduler", ("User:system:kube-scheduler",)),
    "system:volume-scheduler": ("system:volume-scheduler", ("User:system:kube-scheduler",)),
    "system:kube-dns": ("system:kube-dns", ("ServiceAccount:kube-system:kube-dns",)),
    "system:node": ("system:node", ()),  # nodes are authorized by the Node authorizer, not this binding
    "system:node-proxier": ("system:node-proxier", ("User:system:kube-proxy",)),
    "kube-apiserver-kubelet-admin": ("system:kubelet-api-admin", ("User:kube-apiserver",)),
    "system:k3s-controller": ("system:k3s-controller", ("User:system:k3s-controller",)),
    "k3s-cloud-controller-manager": ("k3s-cloud-controller-manager", ("User:k3s-cloud-controller-manager",)),
}
# kube-system roles the API server creates (metrics-server and other aggregated servers bind to the first)
ROLES = {
    ("kube-system", "extension-apiserver-authentication-reader"): [
        ("", "configmaps", "get list watch", "extension-apiserver-authentication")],
}


def rule(spec: tuple) -> dict:
    groups, names, verbs, *resource_names = spec
    out: dict = {"verbs": verbs.split()}
    if groups == "url:":
        out["nonResourceURLs"] = names.split()
        return out
    out["apiGroups"] = ["" if g == '""' else g for g in groups.split()] if groups else [""]
    out["resources"] = names.split()
    if resource_names:
        out["resourceNames"] = resource_names[0].split()
    return out


def _meta(name: str, labels: dict | None = None, namespace: str | None = None) -> dict:
    meta: dict = {"name": name, "labels": {**_BOOTSTRAP, **(labels or {})}, "annotations": dict(_AUTOUPDATE)}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _subject(text: str) -> dict:
    kind, _, rest = text.partition(":")
    if kind == "ServiceAccount":
        namespace, _, name = rest.partition(":")
        return {"kind": kind, "name": name, "namespace": namespace}
    return {"kind": kind, "apiGroup": RBAC, "name": rest}


def objects() -> list[dict]:
    """Every default object, as the API server's RBAC bootstrap writes them."""
    api = f"{RBAC}/v1"
    out = [{"apiVersion": api, "kind": "ClusterRole", "metadata": _meta(name, _LABELS.get(name)),
            "rules": [rule(r) for r in rules]} for name, rules in CLUSTER_ROLES.items()]
    out += [{"apiVersion": api, "kind": "ClusterRole", "metadata": _meta(name, labels),
             "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {selector: "true"}}]}, "rules": []}
            for name, (selector, labels) in AGGREGATED.items()]
    out += [{"apiVersion": api, "kind": "ClusterRoleBinding", "metadata": _meta(name),
             "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
             "subjects": [_subject(s) for s in subjects]}
            for name, (role, subjects) in CLUSTER_ROLE_BINDINGS.items()]
    out += [{"apiVersion": api, "kind": "Role", "metadata": _meta(name, namespace=namespace),
             "rules": [rule(r) for r in rules]} for (namespace, name), rules in ROLES.items()]
    return out
