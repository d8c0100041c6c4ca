"""Validation of built-in kinds, as the registries' ValidateCreate/ValidateUpdate refuse writes:
the (field, message) causes of a 422 Invalid, worded as pkg/apis/*/validation words them."""

from __future__ import annotations

import re

from labsim.kube.admission import podspec
from labsim.kube.admission.podspec import go_value
from labsim.kube.resources import Resource

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                  "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                  "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
              "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
              "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                    "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
_NAME_PART_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                  "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                  "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
# Kinds whose names are DNS-1035 labels (Services) or RFC 1123 labels; most are subdomains; some free.
_NAME_RULES = {"Service": (_DNS1035, 63, _DNS1035_MSG), "Namespace": (_DNS_LABEL, 63, _LABEL_MSG)}
_FREE_NAMED = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Event"}
_WORKLOADS = {("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("apps", "DaemonSet"),
              ("", "ReplicationController")}
# Secret types and the keys their data must hold
_SECRET_KEYS = {"kubernetes.io/tls": ("tls.crt", "tls.key"), "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
                "kubernetes.io/dockercfg": (".dockercfg",), "kubernetes.io/ssh-auth": ("ssh-privatekey",)}

Causes = list[tuple[str, str]]


def validate(res: Resource, obj: dict) -> Causes:
    """The (field, message) causes of a 422 Invalid, empty if the object is fine."""
    causes = _metadata(res, obj.get("metadata") or {})
    spec = obj.get("spec") or {}
    kind = (res.group, res.kind)
    if kind == ("", "Pod"):
        causes += podspec.pod_spec(spec, "spec")
    if kind in _WORKLOADS:
        causes += _validate_workload(res, spec)
    if kind == ("batch", "Job"):
        causes += _job(spec, "spec")
    if kind == ("batch", "CronJob"):
        causes += _job(((spec.get("jobTemplate") or {}).get("spec") or {}), "spec.jobTemplate.spec")
    if kind == ("", "Service"):
        causes += _service(spec)
    if kind == ("", "Secret"):
        causes += _secret(obj)
    return causes


def _metadata(res: Resource, meta: dict) -> Causes:
    name = meta.get("name") or ""
    causes: Causes = []
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif res.kind not in _FREE_NAMED and ":" not in name:
        pattern, longest, message = _NAME_RULES.get(res.kind, (_DNS_SUBDOMAIN, 253, _SUBDOMAIN_MSG))
        if len(name) > longest:
            causes.append(("metadata.name", f"Invalid value: {go_value(name)}: must be no more than {longest} "
                           "characters"))
        if not pattern.match(name):
            causes.append(("metadata.name", f"Invalid value: {go_value(name)}: {message}"))
    causes += labels(meta.get("labels") or {}, "metadata.labels")
    return causes


def labels(values: dict, path: str) -> Causes:
    """Label keys (qualified names) and values, as ValidateLabels checks them."""
    causes: Causes = []
    for key, value in values.items():
        prefix, _, part = key.rpartition("/")
        if not part or not _QUALIFIED_NAME.match(part) or len(part) > 63 or (prefix and not _DNS_SUBDOMAIN.match(prefix)):
            causes.append((path, f"Invalid value: {go_value(key)}: {_NAME_PART_MSG}"))
        if not isinstance(value, str):
            causes.append((path, f"Invalid value: {go_value(value)}: must be a string"))
            continue
        if len(value) > 63:
            causes.append((path, f"Invalid value: {go_value(value)}: must be no more than 63 characters"))
        if not _LABEL_VALUE.match(value):
            causes.append((path, f"Invalid value: {go_value(value)}: {_LABEL_VALUE_MSG}"))
    return causes


def _nonnegative(spec: dict, path: str, fields: tuple[str, ...]) -> Causes:
    return [(f"{path}.{f}", f"Invalid value: {spec[f]}: must be greater than or equal to 0")
            for f in fields if isinstance(spec.get(f), int) and spec[f] < 0]


# (group, kind) -> paths an update may not change
_IMMUTABLE = {
    ("apps", "Deployment"): ("spec.selector",), ("apps", "ReplicaSet"): ("spec.selector",),
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
    if (res.group, res.kind) == ("apps", "StatefulSet"):
        causes += _statefulset_update(old.get("spec") or {}, new.get("spec") or {})
    if (res.group, res.kind) == ("", "Secret") and (old.get("type") or "Opaque") != (new.get("type") or "Opaque"):
        causes.append(("type", f"Invalid value: {go_value(new.get('type') or 'Opaque')}: field is immutable"))
    if res.group == "" and res.kind in ("ConfigMap", "Secret") and old.get("immutable"):
        for field in ("data", "binaryData", "stringData", "immutable"):
            if old.get(field) != new.get(field):
                causes.append((field, "Forbidden: field is immutable when `immutable` is set"))
    if res.group == "" and res.kind == "Service":
        old_ip, new_ip = _at(old, "spec.clusterIP"), _at(new, "spec.clusterIP")
        if old_ip and new_ip != old_ip and _at(new, "spec.type") != "ExternalName":
            causes.append(("spec.clusterIPs[0]", "Invalid value: field is immutable"))
    return causes


_STATEFULSET_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds")


def _statefulset_update(old: dict, new: dict) -> Causes:
    def fixed(spec: dict) -> dict:
        return {k: v for k, v in spec.items() if k not in _STATEFULSET_MUTABLE}

    if fixed(old) == fixed(new):
        return []
    return [("spec", "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
             "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' "
             "are forbidden")]


def _validate_workload(res: Resource, spec: dict) -> Causes:
    causes = _nonnegative(spec, "spec", ("replicas", "minReadySeconds", "revisionHistoryLimit"))
    template = spec.get("template") or {}
    causes += labels((template.get("metadata") or {}).get("labels") or {}, "spec.template.metadata.labels")
    causes += podspec.pod_spec(template.get("spec") or {}, "spec.template.spec")
    selector = spec.get("selector")
    template_labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        return [*causes, ("spec.selector", "Required value")]
    wanted = selector if res.kind == "ReplicationController" else selector.get("matchLabels") or {}
    if any(template_labels.get(k) != v for k, v in wanted.items()):
        causes.append(("spec.template.metadata.labels", f"Invalid value: {go_value(template_labels)}: "
                       "`selector` does not match template `labels`"))
    return causes


def _job(spec: dict, path: str) -> Causes:
    causes = _nonnegative(spec, path, ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds",
                                       "ttlSecondsAfterFinished"))
    causes += podspec.pod_spec((spec.get("template") or {}).get("spec") or {}, f"{path}.template.spec")
    return causes + _job_restart_policy(spec, path)


def _service(spec: dict) -> Causes:
    causes: Causes = []
    if spec.get("type") == "ExternalName":
        return causes
    for i, port in enumerate(spec.get("ports") or []):
        number = port.get("port")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            causes.append((f"spec.ports[{i}].port",
                           f"Invalid value: {go_value(number)}: must be between 1 and 65535, inclusive"))
        target = port.get("targetPort")
        if isinstance(target, int) and not 1 <= target <= 65535:
            causes.append((f"spec.ports[{i}].targetPort",
                           f"Invalid value: {target}: must be between 1 and 65535, inclusive"))
        node_port = port.get("nodePort")
        if isinstance(node_port, int) and node_port and not 1 <= node_port <= 65535:
            causes.append((f"spec.ports[{i}].nodePort",
                           f"Invalid value: {node_port}: must be between 1 and 65535, inclusive"))
    return causes


def _secret(obj: dict) -> Causes:
    kind, data = obj.get("type") or "Opaque", obj.get("data") or {}
    causes = [(f"data[{key}]", "Required value") for key in _SECRET_KEYS.get(kind, ()) if key not in data]
    if kind == "kubernetes.io/basic-auth" and "username" not in data and "password" not in data:
        causes += [("data[username]", "Required value"), ("data[password]", "Required value")]
    if kind == "kubernetes.io/service-account-token":
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if not annotations.get("kubernetes.io/service-account.name"):
            causes.append(("metadata.annotations[kubernetes.io/service-account.name]", "Required value"))
    return causes


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
