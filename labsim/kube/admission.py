"""Admission: the defaults the real API server fills in, and the validation it refuses writes with.

Defaults matter to clients: kubectl's `rollout status` reads StatefulSet `updateStrategy`, the
Python client deserializes required fields, and `kubectl get` shows defaulted columns.
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING

from labsim.kube import schemas
from labsim.kube.resources import Resource

if TYPE_CHECKING:
    from labsim.kube.store import Store

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kinds whose names must be DNS labels (the rest: DNS subdomains; RBAC and a few allow more).
_LABEL_NAMED = {"Namespace", "Service"}
_FREE_NAMED = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Event"}


def admit(store: Store, res: Resource, obj: dict, old: dict | None) -> None:
    """Fill in defaults (create: old is None; update: the stored object)."""
    defaulter = _DEFAULTS.get((res.group, res.kind))
    if defaulter:
        defaulter(obj)
    if res.schema:
        prune(res.schema, obj)
        _schema_defaults(res.schema, obj)
    if old is None and res.kind in ("Pod",) and res.group == "":
        obj.setdefault("status", {}).setdefault("phase", "Pending")
        obj["status"].setdefault("qosClass", _qos_class(obj["spec"]))


def validate(res: Resource, obj: dict) -> list[tuple[str, str]]:
    """The (field, message) causes of a 422 Invalid, empty if the object is fine."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    causes: list[tuple[str, str]] = []
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif res.kind not in _FREE_NAMED and ":" not in name:
        pattern = _DNS_LABEL if res.kind in _LABEL_NAMED else _DNS_SUBDOMAIN
        if not pattern.match(name) or len(name) > (63 if res.kind in _LABEL_NAMED else 253):
            causes.append(("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 '
                           f'{"label" if res.kind in _LABEL_NAMED else "subdomain"} must consist of lower case '
                           "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"))
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63:
            causes.append((f"metadata.labels.{key}", f"Invalid value: {value!r}: must be 63 characters or less"))
    if res.group == "" and res.kind == "Pod" and not (obj.get("spec") or {}).get("containers"):
        causes.append(("spec.containers", "Required value"))
    if res.group in ("apps", "batch") and res.kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"):
        causes += _validate_workload(obj)
    if res.group == "batch" and res.kind == "Job":
        causes += _job_restart_policy(obj.get("spec") or {}, "spec")
    if res.group == "batch" and res.kind == "CronJob":
        job_spec = ((obj.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}
        causes += _job_restart_policy(job_spec, "spec.jobTemplate.spec")
    return causes


# (group, kind) -> paths an update may not change
_IMMUTABLE = {
    ("apps", "Deployment"): ("spec.selector",), ("apps", "ReplicaSet"): ("spec.selector",),
    ("apps", "StatefulSet"): ("spec.selector", "spec.serviceName", "spec.volumeClaimTemplates"),
    ("apps", "DaemonSet"): ("spec.selector",),
    ("batch", "Job"): ("spec.selector", "spec.template", "spec.completionMode"),
    ("", "PersistentVolumeClaim"): ("spec.accessModes", "spec.storageClassName", "spec.volumeMode"),
    ("storage.k8s.io", "StorageClass"): ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"),
    ("rbac.authorization.k8s.io", "RoleBinding"): ("roleRef",),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): ("roleRef",),
}


def _at(obj: dict, path: str):
    node = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _may_fill(res: Resource, path: str, old: dict) -> bool:
    """A claim without a class may get the default one later (retroactive default assignment)."""
    return res.kind == "PersistentVolumeClaim" and path == "spec.storageClassName" and _at(old, path) is None


def validate_update(res: Resource, old: dict, new: dict) -> list[tuple[str, str]]:
    """What an update may not change, as the real API's update validation refuses it."""
    causes = [(path, "Invalid value: field is immutable") for path in _IMMUTABLE.get((res.group, res.kind), ())
              if _at(old, path) != _at(new, path) and not _may_fill(res, path, old)]
    if res.group == "" and res.kind in ("ConfigMap", "Secret") and old.get("immutable"):
        for field in ("data", "binaryData", "stringData", "immutable"):
            if old.get(field) != new.get(field):
                causes.append((field, "Forbidden: field is immutable when `immutable` is set"))
    if res.group == "" and res.kind == "Service":
        old_ip, new_ip = _at(old, "spec.clusterIP"), _at(new, "spec.clusterIP")
        if old_ip and new_ip != old_ip and _at(new, "spec.type") != "ExternalName":
            causes.append(("spec.clusterIPs[0]", "Invalid value: field is immutable"))
    return causes


def _validate_workload(obj: dict) -> list[tuple[str, str]]:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector:
        return [("spec.selector", "Required value")]
    wanted = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in wanted.items()):
        return [("spec.template.metadata.labels", f"Invalid value: {labels}: `selector` does not match "
                 "template `labels`")]
    return []


def _job_restart_policy(job_spec: dict, path: str) -> list[tuple[str, str]]:
    """A Job's pods must run to completion. The pod defaulting fills in ``Always`` when the
    template says nothing, so the real job validation refuses both as a missing value."""
    policy = ((job_spec.get("template") or {}).get("spec") or {}).get("restartPolicy") or ""
    where = f"{path}.template.spec.restartPolicy"
    if policy in ("", "Always"):
        return [(where, 'Required value: valid values: "OnFailure", "Never"')]
    if policy in ("OnFailure", "Never"):
        return []
    return [(where, f'Unsupported value: "{policy}": supported values: "Always", "OnFailure", "Never"'),
            (where, f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"')]


# -- defaults per kind -----------------------------------------------------------------------------
def _container(c: dict) -> None:
    image = c.get("image", "")
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in c:
            for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                               ("failureThreshold", 3)):
                c[probe].setdefault(key, value)
    for env in c.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef")
        if ref:
            ref.setdefault("apiVersion", "v1")


def pod_spec(spec: dict) -> None:
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        _container(c)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    if "serviceAccountName" in spec or "serviceAccount" in spec:
        spec.setdefault("serviceAccountName", spec.get("serviceAccount"))
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
    for vol in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            if source in vol:
                vol[source].setdefault("defaultMode", 420)


def _template(obj: dict) -> None:
    template = obj.setdefault("spec", {}).setdefault("template", {})
    template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    pod_spec(template.setdefault("spec", {}))


def _pod(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    pod_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    tolerations = spec.setdefault("tolerations", [])
    for effect_key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == effect_key for t in tolerations):
            tolerations.append({"key": effect_key, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": 300})


def _qos_class(spec: dict) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k) and (r.get("requests") or r.get("limits") or {}).get(k)
        == (r.get("limits") or {}).get(k) for r in resources for k in ("cpu", "memory"))
    return "Guaranteed" if guaranteed else "Burstable"


def _deployment(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template(obj)


def _replicaset(obj: dict) -> None:
    obj.setdefault("spec", {}).setdefault("replicas", 1)
    _template(obj)


def _statefulset(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    for claim in spec.get("volumeClaimTemplates") or []:
        claim.setdefault("apiVersion", "v1")
        claim.setdefault("kind", "PersistentVolumeClaim")
        claim.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
        claim.setdefault("status", {"phase": "Pending"})
    _template(obj)


def _daemonset(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    _template(obj)


def _job(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    uid = (obj.get("metadata") or {}).get("uid")
    if uid and not spec.get("manualSelector") and "selector" not in spec:
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
        labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name":
                       obj["metadata"].get("name", ""), "controller-uid": uid,
                       "job-name": obj["metadata"].get("name", "")})
    _template(obj)


def _cronjob(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job = spec.setdefault("jobTemplate", {})
    job.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    jspec = job.setdefault("spec", {})
    jspec.setdefault("template", {}).setdefault("metadata", {}).setdefault("creationTimestamp", None)
    pod_spec(jspec["template"].setdefault("spec", {}))


def _service(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    if spec["type"] == "ExternalName":
        return
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def _namespace(obj: dict) -> None:
    name = obj["metadata"].get("name", "")
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def _secret(obj: dict) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _pvc(obj: dict) -> None:
    obj.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    obj.setdefault("status", {}).setdefault("phase", "Pending")


def _pv(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    obj.setdefault("status", {}).setdefault("phase", "Pending")


def _pdb(obj: dict) -> None:
    obj.setdefault("status", {}).update({k: obj.get("status", {}).get(k, 0) for k in (
        "disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods")})
    # metav1.Condition has no omitempty on reason and message: the server always writes them
    for cond in obj["status"].get("conditions") or []:
        cond.setdefault("reason", "")
        cond.setdefault("message", "")


def _crd(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    names = spec.setdefault("names", {})
    names.setdefault("singular", names.get("kind", "").lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    spec.setdefault("scope", "Namespaced")
    spec.setdefault("conversion", {"strategy": "None"})


_DEFAULTS = {
    ("", "Pod"): _pod,
    ("", "Service"): _service,
    ("", "Namespace"): _namespace,
    ("", "Secret"): _secret,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "PersistentVolume"): _pv,
    ("", "ReplicationController"): _replicaset,
    ("", "PodTemplate"): _template,
    ("apps", "Deployment"): _deployment,
    ("apps", "ReplicaSet"): _replicaset,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("batch", "Job"): _job,
    ("batch", "CronJob"): _cronjob,
    ("policy", "PodDisruptionBudget"): _pdb,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
}


_ROOT_FIELDS = {"apiVersion", "kind", "metadata"}


def unknown_fields(schema: dict, value: object, path: str = "", root: bool = True) -> list[str]:
    """Fields of ``value`` a structural schema does not declare (what fieldValidation=Strict refuses)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if root and key in _ROOT_FIELDS:
                continue
            if props is not None and key in props:
                found += unknown_fields(props[key], item, where, False)
            elif isinstance(extra, dict):
                found += unknown_fields(extra, item, where, False)
            elif extra is not True and (props is not None or schema.get("type") == "object"):
                found.append(where)  # structural schemas prune what they do not declare
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_fields(schema["items"], item, f"{path}[{i}]", False)
    return found


def prune(schema: dict, obj: dict) -> None:
    """Drop undeclared fields, as the API server prunes custom resources with structural schemas."""
    schemas.prune(obj, unknown_fields(schema, obj))


def _schema_defaults(schema: dict, value: object) -> None:
    """Apply `default:` values of a structural schema (CRDs) to an object, recursively."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = _copy(sub["default"])
            if key in value:
                _schema_defaults(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in props:
                    _schema_defaults(extra, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _schema_defaults(schema["items"], item)


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
