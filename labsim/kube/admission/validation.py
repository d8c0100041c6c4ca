"""Validation of built-in kinds, as the registries' ValidateCreate/ValidateUpdate refuse writes:
the (field, message) causes of a 422 Invalid, worded as pkg/apis/*/validation words them."""

from __future__ import annotations

import re

from labsim.kube.resources import Resource

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kinds whose names must be DNS labels (the rest: DNS subdomains; RBAC and a few allow more).
_LABEL_NAMED = {"Namespace", "Service"}
_FREE_NAMED = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Event"}


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
