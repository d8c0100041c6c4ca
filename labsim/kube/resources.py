"""The resource catalog of one cluster: built-in resources and those CRDs register at runtime.

A ``Resource`` names one kind in one group/version (what discovery lists and what the REST
paths address). Objects are stored per (group, plural), whatever the version they were
written in, as the real API server stores one version per resource.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
VERBS_NO_COLLECTION = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale", "log", "eviction", "binding", "finalize"
    verbs: tuple[str, ...] = VERBS
    # CRDs only: the version's openAPIV3Schema (for defaults) and its scale subresource paths.
    schema: dict | None = field(default=None, compare=False, hash=False)
    scale_paths: tuple[str, str, str] | None = None  # specReplicasPath, statusReplicasPath, labelSelectorPath
    printer_columns: tuple[dict, ...] = field(default=(), compare=False, hash=False)
    storage: bool = True  # the CRD version objects are stored in (built-ins: the only version)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: one collection per (group, plural), shared by all its versions."""
        return (self.group, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


def _r(gv: str, kind: str, plural: str, *, cluster: bool = False, short: str = "", cats: str = "",
       sub: str = "", verbs: tuple[str, ...] = VERBS) -> Resource:
    group, _, version = gv.rpartition("/")
    return Resource(group, version, kind, plural, not cluster, tuple(short.split()), tuple(cats.split()),
                    tuple(sub.split()), verbs)


BUILTINS: tuple[Resource, ...] = (
    # core/v1
    _r("v1", "Pod", "pods", short="po", cats="all", sub="status log eviction binding ephemeralcontainers exec attach portforward"),
    _r("v1", "Service", "services", short="svc", cats="all", sub="status proxy"),
    _r("v1", "Endpoints", "endpoints", short="ep"),
    _r("v1", "Namespace", "namespaces", cluster=True, short="ns", sub="status finalize",
       verbs=VERBS_NO_COLLECTION),
    _r("v1", "Node", "nodes", cluster=True, short="no", sub="status proxy"),
    _r("v1", "ConfigMap", "configmaps", short="cm"),
    _r("v1", "Secret", "secrets"),
    _r("v1", "ServiceAccount", "serviceaccounts", short="sa", sub="token"),
    _r("v1", "PersistentVolume", "persistentvolumes", cluster=True, short="pv", sub="status"),
    _r("v1", "PersistentVolumeClaim", "persistentvolumeclaims", short="pvc", sub="status"),
    _r("v1", "Event", "events", short="ev"),
    _r("v1", "LimitRange", "limitranges", short="limits"),
    _r("v1", "ResourceQuota", "resourcequotas", short="quota", sub="status"),
    _r("v1", "ReplicationController", "replicationcontrollers", short="rc", cats="all", sub="status scale"),
    _r("v1", "PodTemplate", "podtemplates"),
    # apps/v1
    _r("apps/v1", "Deployment", "deployments", short="deploy", cats="all", sub="status scale"),
    _r("apps/v1", "ReplicaSet", "replicasets", short="rs", cats="all", sub="status scale"),
    _r("apps/v1", "StatefulSet", "statefulsets", short="sts", cats="all", sub="status scale"),
    _r("apps/v1", "DaemonSet", "daemonsets", short="ds", cats="all", sub="status"),
    _r("apps/v1", "ControllerRevision", "controllerrevisions"),
    # batch/v1
    _r("batch/v1", "Job", "jobs", cats="all", sub="status"),
    _r("batch/v1", "CronJob", "cronjobs", short="cj", cats="all", sub="status"),
    # autoscaling
    _r("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short="hpa", cats="all",
       sub="status"),
    # policy/v1
    _r("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", short="pdb", sub="status"),
    # rbac
    _r("rbac.authorization.k8s.io/v1", "Role", "roles"),
    _r("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    _r("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", cluster=True),
    _r("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", cluster=True),
    # storage
    _r("storage.k8s.io/v1", "StorageClass", "storageclasses", cluster=True, short="sc"),
    _r("storage.k8s.io/v1", "CSIDriver", "csidrivers", cluster=True),
    _r("storage.k8s.io/v1", "CSINode", "csinodes", cluster=True),
    _r("storage.k8s.io/v1", "VolumeAttachment", "volumeattachments", cluster=True, sub="status"),
    # networking
    _r("networking.k8s.io/v1", "Ingress", "ingresses", short="ing", sub="status"),
    _r("networking.k8s.io/v1", "IngressClass", "ingressclasses", cluster=True),
    _r("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", short="netpol"),
    _r("discovery.k8s.io/v1", "EndpointSlice", "endpointslices"),
    # apiextensions
    _r("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", cluster=True,
       short="crd crds", cats="api-extensions", sub="status"),
    # cluster plumbing
    _r("coordination.k8s.io/v1", "Lease", "leases"),
    _r("events.k8s.io/v1", "Event", "events", short="ev"),
    _r("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", cluster=True, short="pc"),
    _r("node.k8s.io/v1", "RuntimeClass", "runtimeclasses", cluster=True),
    _r("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations",
       cluster=True, cats="api-extensions"),
    _r("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration",
       "validatingwebhookconfigurations", cluster=True, cats="api-extensions"),
    _r("authorization.k8s.io/v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", cluster=True,
       verbs=("create",)),
    _r("authorization.k8s.io/v1", "SubjectAccessReview", "subjectaccessreviews", cluster=True,
       verbs=("create",)),
    _r("authorization.k8s.io/v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", verbs=("create",)),
    _r("authorization.k8s.io/v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", cluster=True,
       verbs=("create",)),
    _r("authentication.k8s.io/v1", "TokenReview", "tokenreviews", cluster=True, verbs=("create",)),
    _r("authentication.k8s.io/v1", "SelfSubjectReview", "selfsubjectreviews", cluster=True, verbs=("create",)),
    # served by k3s' metrics-server through an APIService (labsim.kube.metrics)
    _r("metrics.k8s.io/v1beta1", "NodeMetrics", "nodes", cluster=True, verbs=("get", "list")),
    _r("metrics.k8s.io/v1beta1", "PodMetrics", "pods", verbs=("get", "list")),
)

# Group order of discovery: the order kubectl prints and prefers (core first, as the real server).
_GROUP_ORDER = ["", "apiregistration.k8s.io", "apps", "events.k8s.io", "authentication.k8s.io",
                "authorization.k8s.io", "autoscaling", "batch", "certificates.k8s.io", "networking.k8s.io",
                "policy", "rbac.authorization.k8s.io", "storage.k8s.io", "admissionregistration.k8s.io",
                "apiextensions.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "node.k8s.io",
                "discovery.k8s.io", "metrics.k8s.io"]


class Catalog:
    """Every resource one cluster serves, looked up by kind or by REST path."""

    def __init__(self) -> None:
        self._resources: list[Resource] = list(BUILTINS)

    def __iter__(self):
        return iter(list(self._resources))

    def by_kind(self, api_version: str, kind: str) -> Resource | None:
        for res in self._resources:
            if res.api_version == api_version and res.kind == kind:
                return res
        return None

    def by_plural(self, group: str, version: str | None, plural: str) -> Resource | None:
        """The resource at /apis/<group>/<version>/<plural> (version None: the preferred one)."""
        matches = [r for r in self._resources if r.group == group and r.plural == plural
                   and (version is None or r.version == version)]
        if not matches:
            return None
        return next((r for r in matches if r.storage), matches[0])

    def versions_of(self, key: tuple[str, str]) -> list[Resource]:
        return [r for r in self._resources if r.key == key]

    def groups(self) -> dict[str, list[str]]:
        """group -> its versions, preferred first, in discovery order."""
        found: dict[str, list[str]] = {}
        for res in self._resources:
            versions = found.setdefault(res.group, [])
            if res.version not in versions:
                versions.append(res.version)
        order = {g: i for i, g in enumerate(_GROUP_ORDER)}
        return dict(sorted(found.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))

    def in_group_version(self, group: str, version: str) -> list[Resource]:
        return [r for r in self._resources if r.group == group and r.version == version]

    def register_crd(self, crd: dict) -> list[Resource]:
        """Add (or replace) the resources a CustomResourceDefinition serves."""
        resources = crd_resources(crd)
        key = resources[0].key if resources else None
        self._resources = [r for r in self._resources if r.key != key] + resources
        return resources

    def unregister(self, key: tuple[str, str]) -> None:
        self._resources = [r for r in self._resources if r.key != key or r in BUILTINS]


def crd_resources(crd: dict) -> list[Resource]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for ver in spec.get("versions") or []:
        if not ver.get("served", True):
            continue
        subs = ver.get("subresources") or {}
        scale = subs.get("scale")
        out.append(Resource(
            group=spec.get("group", ""),
            version=ver["name"],
            kind=names.get("kind", ""),
            plural=names.get("plural", ""),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=tuple(s for s in ("status", "scale") if s in subs),
            schema=(ver.get("schema") or {}).get("openAPIV3Schema"),
            scale_paths=(scale.get("specReplicasPath", ".spec.replicas"),
                         scale.get("statusReplicasPath", ".status.replicas"),
                         scale.get("labelSelectorPath", "")) if scale else None,
            printer_columns=tuple(ver.get("additionalPrinterColumns") or ()),
            storage=bool(ver.get("storage", True)),
        ))
    return out
