"""The shape of built-in kinds that merging needs: which lists merge by which keys.

Strategic merge patch and server-side apply both merge lists of objects by key, and the key
belongs to the *type*, not to the field name: a Container's ``ports`` merge by containerPort,
a Service's by port. Lists not described here are atomic (replaced whole); maps merge.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ListRule:
    keys: tuple[str, ...]  # SSA's list-map keys (the first is the strategic merge key)
    item: str | None = None  # the type of the items, if it has rules of its own
    scalar_set: bool = False  # a list of scalars merged as a set (finalizers)


# type -> field -> ListRule (list fields) or str (the field's type, for maps with rules inside)
TYPES: dict[str, dict[str, ListRule | str]] = {
    "ObjectMeta": {"ownerReferences": ListRule(("uid",)), "finalizers": ListRule((), scalar_set=True)},
    "PodSpec": {
        "containers": ListRule(("name",), "Container"),
        "initContainers": ListRule(("name",), "Container"),
        "ephemeralContainers": ListRule(("name",), "Container"),
        "volumes": ListRule(("name",)),
        "imagePullSecrets": ListRule(("name",)),
        "hostAliases": ListRule(("ip",)),
        "resourceClaims": ListRule(("name",)),
        "schedulingGates": ListRule(("name",)),
        "topologySpreadConstraints": ListRule(("topologyKey", "whenUnsatisfiable")),
    },
    "Container": {
        "ports": ListRule(("containerPort", "protocol")),
        "env": ListRule(("name",)),
        "volumeMounts": ListRule(("mountPath",)),
        "volumeDevices": ListRule(("devicePath",)),
        "resizePolicy": ListRule(("resourceName",)),
    },
    "PodTemplateSpec": {"metadata": "ObjectMeta", "spec": "PodSpec"},
    "WorkloadSpec": {"template": "PodTemplateSpec"},
    "JobTemplateSpec": {"metadata": "ObjectMeta", "spec": "WorkloadSpec"},
    "CronJobSpec": {"jobTemplate": "JobTemplateSpec"},
    "ServiceSpec": {"ports": ListRule(("port", "protocol"))},
    "Status": {"conditions": ListRule(("type",))},
    "NodeStatus": {"conditions": ListRule(("type",)), "addresses": ListRule(("type",))},
    "PodStatus": {"conditions": ListRule(("type",)), "podIPs": ListRule(("ip",)),
                  "hostIPs": ListRule(("ip",))},
}

_KIND_SPEC = {
    ("", "Pod"): "PodSpec", ("", "Service"): "ServiceSpec", ("", "PodTemplate"): None,
    ("", "ReplicationController"): "WorkloadSpec", ("apps", "Deployment"): "WorkloadSpec",
    ("apps", "ReplicaSet"): "WorkloadSpec", ("apps", "StatefulSet"): "WorkloadSpec",
    ("apps", "DaemonSet"): "WorkloadSpec", ("batch", "Job"): "WorkloadSpec", ("batch", "CronJob"): "CronJobSpec",
}
_KIND_STATUS = {("", "Node"): "NodeStatus", ("", "Pod"): "PodStatus"}


def root_type(group: str, kind: str) -> dict[str, ListRule | str]:
    """The top-level fields with rules of one kind (metadata, spec, status, template)."""
    fields: dict[str, ListRule | str] = {"metadata": "ObjectMeta", "status": _KIND_STATUS.get((group, kind), "Status")}
    spec = _KIND_SPEC.get((group, kind))
    if spec:
        fields["spec"] = spec
    if (group, kind) == ("", "PodTemplate"):
        fields["template"] = "PodTemplateSpec"
    return fields


def field_rule(fields: dict[str, ListRule | str] | None, name: str) -> ListRule | str | None:
    return (fields or {}).get(name)


def type_fields(type_name: str | None) -> dict[str, ListRule | str] | None:
    return TYPES.get(type_name) if type_name else None


def item_key(rule: ListRule, item: object) -> tuple | None:
    """The identity of a list item under its rule (None if the item lacks the key)."""
    if not isinstance(item, dict) or not rule.keys:
        return None
    if rule.keys[0] not in item:
        return None
    # Defaulted key parts (protocol TCP) count as present, as the API defaults them.
    return tuple(item.get(k, "TCP" if k == "protocol" else None) for k in rule.keys)
