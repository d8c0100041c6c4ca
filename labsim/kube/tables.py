"""Server-side printing: `Accept: application/json;as=Table;g=meta.k8s.io;v=v1` gets a Table with
the columns `kubectl get` shows for each kind (priority 1 columns appear with -o wide)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from labsim.kube.resources import Resource
from labsim.kube.selectors import selector_string

if TYPE_CHECKING:
    from labsim.kube.cluster import Cluster

Column = tuple[str, str, int]  # name, type, priority
Row = Callable[[dict, float], list]


def wanted(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, as kubectl prints ages."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y{d % 365}d" if d % 365 else f"{d // 365}y"


def _age(obj: dict, now: float, field: str = "creationTimestamp") -> str:
    when = _parse_time((obj.get("metadata") or {}).get(field))
    return "<unknown>" if when is None else human_duration(now - when)


def _ready_containers(pod: dict) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def pod_status(pod: dict) -> str:
    """The STATUS column of a pod, as kubectl's printer derives it."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for s in status.get("initContainerStatuses") or []:
        state = s.get("state") or {}
        if (state.get("terminated") or {}).get("exitCode", 0) == 0 and "terminated" in state:
            continue
        if "waiting" in state and state["waiting"].get("reason", "PodInitializing") != "PodInitializing":
            reason = f"Init:{state['waiting']['reason']}"
        else:
            reason = "Init:0/1"
        break
    else:
        for s in reversed(status.get("containerStatuses") or []):
            state = s.get("state") or {}
            if state.get("waiting", {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated", {}).get("reason"):
                reason = state["terminated"]["reason"]
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _restarts(pod: dict) -> int:
    return sum(s.get("restartCount", 0) for s in (pod.get("status") or {}).get("containerStatuses") or [])


def _containers(obj: dict, path=("spec", "template", "spec")) -> list[dict]:
    node = obj
    for part in path:
        node = (node or {}).get(part) or {}
    return node.get("containers") or []


def _names(obj, path=("spec", "template", "spec")) -> str:
    return ",".join(c["name"] for c in _containers(obj, path))


def _images(obj, path=("spec", "template", "spec")) -> str:
    return ",".join(c.get("image", "") for c in _containers(obj, path))


def _node_status(node: dict) -> str:
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    text = "Ready" if ready and ready.get("status") == "True" else "NotReady" if ready else "Unknown"
    if (node.get("spec") or {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _node_roles(node: dict) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    return ",".join(roles) or "<none>"


def _address(node: dict, kind: str) -> str:
    for addr in (node.get("status") or {}).get("addresses") or []:
        if addr.get("type") == kind:
            return addr.get("address", "")
    return "<none>"


def _ports(svc: dict) -> str:
    out = []
    for p in (svc.get("spec") or {}).get("ports") or []:
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        out.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _external_ip(svc: dict) -> str:
    spec = svc.get("spec") or {}
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ips = [i.get("ip") or i.get("hostname") for i in ingress] + (spec.get("externalIPs") or [])
    if spec.get("type") == "LoadBalancer":
        return ",".join(ips) or "<pending>"
    if spec.get("type") == "ExternalName":
        return spec.get("externalName", "")
    return ",".join(ips) or "<none>"


def _or_none(value) -> str:
    return "<none>" if value in (None, "", [], {}) else str(value)


def _job_status(job: dict) -> str:
    conditions = {c.get("type"): c.get("status") for c in (job.get("status") or {}).get("conditions") or []}
    if conditions.get("Complete") == "True":
        return "Complete"
    if conditions.get("Failed") == "True":
        return "Failed"
    if (job.get("spec") or {}).get("suspend"):
        return "Suspended"
    return "Running"


def _job_duration(job: dict, now: float) -> str:
    status = job.get("status") or {}
    start = _parse_time(status.get("startTime"))
    if start is None:
        return ""
    end = _parse_time(status.get("completionTime")) or now
    return human_duration(end - start)


_S, _I, _D = "string", "integer", "date"
_TABLES: dict[tuple[str, str], tuple[list[Column], Row]] = {
    ("", "Pod"): ([("Ready", _S, 0), ("Status", _S, 0), ("Restarts", _S, 0), ("Age", _S, 0), ("IP", _S, 1),
                   ("Node", _S, 1), ("Nominated Node", _S, 1), ("Readiness Gates", _S, 1)],
                  lambda o, now: [_ready_containers(o), pod_status(o), _restarts(o), _age(o, now),
                                  _or_none((o.get("status") or {}).get("podIP")),
                                  _or_none((o.get("spec") or {}).get("nodeName")), "<none>", "<none>"]),
    ("", "Node"): ([("Status", _S, 0), ("Roles", _S, 0), ("Age", _S, 0), ("Version", _S, 0),
                    ("Internal-IP", _S, 1), ("External-IP", _S, 1), ("OS-Image", _S, 1), ("Kernel-Version", _S, 1),
                    ("Container-Runtime", _S, 1)],
                   lambda o, now: [_node_status(o), _node_roles(o), _age(o, now),
                                   ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", ""),
                                   _address(o, "InternalIP"), _address(o, "ExternalIP"),
                                   *(((o.get("status") or {}).get("nodeInfo") or {}).get(k, "<unknown>")
                                     for k in ("osImage", "kernelVersion", "containerRuntimeVersion"))]),
    ("", "Namespace"): ([("Status", _S, 0), ("Age", _S, 0)],
                        lambda o, now: [(o.get("status") or {}).get("phase", ""), _age(o, now)]),
    ("", "Service"): ([("Type", _S, 0), ("Cluster-IP", _S, 0), ("External-IP", _S, 0), ("Port(s)", _S, 0),
                       ("Age", _S, 0), ("Selector", _S, 1)],
                      lambda o, now: [o["spec"].get("type", ""), o["spec"].get("clusterIP") or "<none>",
                                      _external_ip(o), _ports(o), _age(o, now),
                                      ",".join(f"{k}={v}" for k, v in sorted((o["spec"].get("selector") or {}).items()))
                                      or "<none>"]),
    ("", "ConfigMap"): ([("Data", _I, 0), ("Age", _S, 0)],
                        lambda o, now: [len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o, now)]),
    ("", "Secret"): ([("Type", _S, 0), ("Data", _I, 0), ("Age", _S, 0)],
                     lambda o, now: [o.get("type", ""), len(o.get("data") or {}), _age(o, now)]),
    ("", "ServiceAccount"): ([("Secrets", _I, 0), ("Age", _S, 0)],
                             lambda o, now: [len(o.get("secrets") or []), _age(o, now)]),
    ("", "PersistentVolumeClaim"): (
        [("Status", _S, 0), ("Volume", _S, 0), ("Capacity", _S, 0), ("Access Modes", _S, 0),
         ("StorageClass", _S, 0), ("VolumeAttributesClass", _S, 0), ("Age", _S, 0), ("VolumeMode", _S, 1)],
        lambda o, now: [(o.get("status") or {}).get("phase", ""), o["spec"].get("volumeName", ""),
                        ((o.get("status") or {}).get("capacity") or {}).get("storage", ""),
                        _access_modes((o.get("status") or {}).get("accessModes")),
                        o["spec"].get("storageClassName") or "<unset>", "<unset>", _age(o, now),
                        o["spec"].get("volumeMode", "Filesystem")]),
    ("", "PersistentVolume"): (
        [("Capacity", _S, 0), ("Access Modes", _S, 0), ("Reclaim Policy", _S, 0), ("Status", _S, 0),
         ("Claim", _S, 0), ("StorageClass", _S, 0), ("VolumeAttributesClass", _S, 0), ("Reason", _S, 0),
         ("Age", _S, 0)],
        lambda o, now: [(o["spec"].get("capacity") or {}).get("storage", ""), _access_modes(o["spec"].get("accessModes")),
                        o["spec"].get("persistentVolumeReclaimPolicy", ""), (o.get("status") or {}).get("phase", ""),
                        _claim(o), o["spec"].get("storageClassName", ""), "<unset>",
                        (o.get("status") or {}).get("reason", ""), _age(o, now)]),
    ("", "Event"): ([("Last Seen", _S, 0), ("Type", _S, 0), ("Reason", _S, 0), ("Object", _S, 0),
                     ("Message", _S, 0)],
                    lambda o, now: [_event_age(o, now), o.get("type", ""), o.get("reason", ""),
                                    f"{(o.get('involvedObject') or {}).get('kind', '').lower()}/"
                                    f"{(o.get('involvedObject') or {}).get('name', '')}", o.get("message", "")]),
    ("apps", "Deployment"): ([("Ready", _S, 0), ("Up-to-date", _I, 0), ("Available", _I, 0), ("Age", _S, 0),
                              ("Containers", _S, 1), ("Images", _S, 1), ("Selector", _S, 1)],
                             lambda o, now: [f"{_st(o, 'readyReplicas')}/{o['spec'].get('replicas', 0)}",
                                             _st(o, "updatedReplicas"), _st(o, "availableReplicas"), _age(o, now),
                                             _names(o), _images(o), selector_string(o["spec"].get("selector"))]),
    ("apps", "ReplicaSet"): ([("Desired", _I, 0), ("Current", _I, 0), ("Ready", _I, 0), ("Age", _S, 0),
                              ("Containers", _S, 1), ("Images", _S, 1), ("Selector", _S, 1)],
                             lambda o, now: [o["spec"].get("replicas", 0), _st(o, "replicas"), _st(o, "readyReplicas"),
                                             _age(o, now), _names(o), _images(o),
                                             selector_string(o["spec"].get("selector"))]),
    ("apps", "StatefulSet"): ([("Ready", _S, 0), ("Age", _S, 0), ("Containers", _S, 1), ("Images", _S, 1)],
                              lambda o, now: [f"{_st(o, 'readyReplicas')}/{o['spec'].get('replicas', 0)}",
                                              _age(o, now), _names(o), _images(o)]),
    ("apps", "DaemonSet"): ([("Desired", _I, 0), ("Current", _I, 0), ("Ready", _I, 0), ("Up-to-date", _I, 0),
                             ("Available", _I, 0), ("Node Selector", _S, 0), ("Age", _S, 0), ("Containers", _S, 1),
                             ("Images", _S, 1), ("Selector", _S, 1)],
                            lambda o, now: [_st(o, "desiredNumberScheduled"), _st(o, "currentNumberScheduled"),
                                            _st(o, "numberReady"), _st(o, "updatedNumberScheduled"),
                                            _st(o, "numberAvailable"),
                                            ",".join(f"{k}={v}" for k, v in sorted(
                                                ((o["spec"].get("template") or {}).get("spec") or {}).get(
                                                    "nodeSelector", {}).items())) or "<none>",
                                            _age(o, now), _names(o), _images(o),
                                            selector_string(o["spec"].get("selector"))]),
    ("batch", "Job"): ([("Status", _S, 0), ("Completions", _S, 0), ("Duration", _S, 0), ("Age", _S, 0),
                        ("Containers", _S, 1), ("Images", _S, 1), ("Selector", _S, 1)],
                       lambda o, now: [_job_status(o), f"{_st(o, 'succeeded')}/{o['spec'].get('completions', 1)}",
                                       _job_duration(o, now), _age(o, now), _names(o), _images(o),
                                       selector_string(o["spec"].get("selector"))]),
    ("batch", "CronJob"): ([("Schedule", _S, 0), ("Timezone", _S, 0), ("Suspend", _S, 0), ("Active", _I, 0),
                            ("Last Schedule", _S, 0), ("Age", _S, 0)],
                           lambda o, now: [o["spec"].get("schedule", ""), o["spec"].get("timeZone") or "<none>",
                                           str(o["spec"].get("suspend", False)),
                                           len((o.get("status") or {}).get("active") or []),
                                           _since((o.get("status") or {}).get("lastScheduleTime"), now),
                                           _age(o, now)]),
    ("policy", "PodDisruptionBudget"): ([("Min Available", _S, 0), ("Max Unavailable", _S, 0),
                                         ("Allowed Disruptions", _I, 0), ("Age", _S, 0)],
                                        lambda o, now: [str(o["spec"].get("minAvailable", "N/A")),
                                                        str(o["spec"].get("maxUnavailable", "N/A")),
                                                        _st(o, "disruptionsAllowed"), _age(o, now)]),
    ("networking.k8s.io", "Ingress"): ([("Class", _S, 0), ("Hosts", _S, 0), ("Address", _S, 0), ("Ports", _S, 0),
                                        ("Age", _S, 0)],
                                       lambda o, now: [o["spec"].get("ingressClassName") or "<none>",
                                                       ",".join(r.get("host", "*") for r in o["spec"].get("rules") or [])
                                                       or "*", _lb_address(o),
                                                       "80, 443" if o["spec"].get("tls") else "80", _age(o, now)]),
    ("storage.k8s.io", "StorageClass"): ([("Provisioner", _S, 0), ("ReclaimPolicy", _S, 0),
                                          ("VolumeBindingMode", _S, 0), ("AllowVolumeExpansion", _S, 0),
                                          ("Age", _S, 0)],
                                         lambda o, now: [o.get("provisioner", ""), o.get("reclaimPolicy", "Delete"),
                                                         o.get("volumeBindingMode", "Immediate"),
                                                         str(o.get("allowVolumeExpansion", False)).lower(),
                                                         _age(o, now)]),
    ("", "Endpoints"): ([("Endpoints", _S, 0), ("Age", _S, 0)], lambda o, now: [_endpoints(o), _age(o, now)]),
    ("discovery.k8s.io", "EndpointSlice"): (
        [("AddressType", _S, 0), ("Ports", _S, 0), ("Endpoints", _S, 0), ("Age", _S, 0)],
        lambda o, now: [o.get("addressType", ""),
                        ",".join(str(p.get("port")) for p in o.get("ports") or []) or "<unset>",
                        ",".join(a for e in o.get("endpoints") or [] for a in e.get("addresses") or [])
                        or "<unset>", _age(o, now)]),
    ("rbac.authorization.k8s.io", "Role"): ([("Created At", _D, 0)], lambda o, now: [o["metadata"].get(
        "creationTimestamp", "")]),
    ("rbac.authorization.k8s.io", "ClusterRole"): ([("Created At", _D, 0)], lambda o, now: [o["metadata"].get(
        "creationTimestamp", "")]),
    ("rbac.authorization.k8s.io", "RoleBinding"): (
        [("Role", _S, 0), ("Age", _S, 0), ("Users", _S, 1), ("Groups", _S, 1), ("ServiceAccounts", _S, 1)],
        lambda o, now: [_role_ref(o), _age(o, now), *_subjects(o)]),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): (
        [("Role", _S, 0), ("Age", _S, 0), ("Users", _S, 1), ("Groups", _S, 1), ("ServiceAccounts", _S, 1)],
        lambda o, now: [_role_ref(o), _age(o, now), *_subjects(o)]),
    ("coordination.k8s.io", "Lease"): ([("Holder", _S, 0), ("Age", _S, 0)],
                                       lambda o, now: [(o.get("spec") or {}).get("holderIdentity", ""),
                                                       _age(o, now)]),
    ("networking.k8s.io", "IngressClass"): ([("Controller", _S, 0), ("Parameters", _S, 0), ("Age", _S, 0)],
                                            lambda o, now: [(o.get("spec") or {}).get("controller", ""),
                                                            "<none>", _age(o, now)]),
    ("scheduling.k8s.io", "PriorityClass"): ([("Value", _I, 0), ("Global-Default", _S, 0), ("Age", _S, 0),
                                              ("PreemptionPolicy", _S, 0)],
                                             lambda o, now: [o.get("value", 0),
                                                             str(o.get("globalDefault", False)).lower(),
                                                             _age(o, now),
                                                             o.get("preemptionPolicy", "PreemptLowerPriority")]),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): (
        [("Created At", _D, 0)], lambda o, now: [(o.get("metadata") or {}).get("creationTimestamp", "")]),
}


def _endpoints(ep: dict) -> str:
    addresses = [f"{a.get('ip')}:{p.get('port')}" for subset in ep.get("subsets") or []
                 for a in subset.get("addresses") or [] for p in subset.get("ports") or [{}]]
    return ",".join(addresses[:3]) + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "") or "<none>"


def _role_ref(binding: dict) -> str:
    ref = binding.get("roleRef") or {}
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


def _subjects(binding: dict) -> list[str]:
    subjects = binding.get("subjects") or []

    def names(kind: str) -> str:
        return ", ".join(s.get("name", "") if kind != "ServiceAccount" else f"{s.get('namespace', '')}/{s.get('name')}"
                         for s in subjects if s.get("kind") == kind)

    return [names("User"), names("Group"), names("ServiceAccount")]


def _st(obj: dict, key: str) -> int:
    return int((obj.get("status") or {}).get(key) or 0)


def _since(text: str | None, now: float) -> str:
    when = _parse_time(text)
    return "<none>" if when is None else human_duration(now - when)


def _event_age(event: dict, now: float) -> str:
    last = event.get("lastTimestamp") or event.get("eventTime") or (event.get("metadata") or {}).get("creationTimestamp")
    if last and "." in last:
        last = last.split(".")[0] + "Z"
    return _since(last, now)


def _access_modes(modes: list[str] | None) -> str:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return ",".join(short.get(m, m) for m in modes or [])


def _claim(pv: dict) -> str:
    ref = pv["spec"].get("claimRef") or {}
    return f"{ref.get('namespace')}/{ref.get('name')}" if ref else ""


def _lb_address(obj: dict) -> str:
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return ",".join(i.get("ip") or i.get("hostname", "") for i in ingress)


# The annotations marking the cluster's default StorageClass (GA and the beta one kubectl still reads).
_DEFAULT_CLASS = ("storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class")


def _display_name(res: Resource, obj: dict) -> str:
    """The NAME cell: kubectl's printer marks the default StorageClass, `local-path (default)` on k3s."""
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if (res.group, res.kind) == ("storage.k8s.io", "StorageClass") and any(
            (meta.get("annotations") or {}).get(key) == "true" for key in _DEFAULT_CLASS):
        return f"{name} (default)"
    return name


def _custom_columns(res: Resource) -> tuple[list[Column], Row]:
    """A CRD's additionalPrinterColumns; Age alone when it declares none (as the API server does)."""
    if not res.printer_columns:
        return [("Age", _D, 0)], lambda obj, now: [_age(obj, now)]
    columns = [(c["name"], c.get("type", "string"), int(c.get("priority", 0))) for c in res.printer_columns]
    paths = [c.get("jsonPath", "") for c in res.printer_columns]

    def row(obj: dict, now: float) -> list:
        cells = []
        for (_, kind, _), path in zip(columns, paths, strict=True):
            node = _json_path(obj, path)
            cells.append(human_duration(now - (_parse_time(node) or now)) if kind == "date" and node else node)
        return cells

    return columns, row


_STEP = re.compile(r'\.?([\w-]+)|\[\?\(@\.([\w-]+) *== *"([^"]*)"\)\]|\[(\d+)\]')


def _json_path(obj: dict, path: str):
    """The value at a printer column's JSONPath: fields, ``[N]`` and ``[?(@.field == "value")]``."""
    node = obj
    for field, key, wanted, index in _STEP.findall(path):
        if field:
            node = node.get(field) if isinstance(node, dict) else None
        elif key:
            node = next((i for i in node if isinstance(i, dict) and str(i.get(key)) == wanted), None) \
                if isinstance(node, list) else None
        else:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
    return node


def printed(res: Resource, objects: list[dict], now: float) -> tuple[list[Column], list[list]]:
    """The columns `kubectl get` prints for a kind, Name first, and each object's cells: one printer
    for the API's Table and for the nodes' own `k3s kubectl`."""
    if res.schema is not None:
        columns, row = _custom_columns(res)
    else:
        columns, row = _TABLES.get((res.group, res.kind), ([("Age", _S, 0)], lambda o, now: [_age(o, now)]))
    return [("Name", _S, 0), *columns], [[_display_name(res, obj), *row(obj, now)] for obj in objects]


def table(cluster: Cluster, res: Resource, objects: list[dict], request: web.Request) -> dict:
    now = cluster.clock.now() if cluster.clock is not None else dt.datetime.now(dt.UTC).timestamp()
    (_, *columns), cells = printed(res, objects, now)
    include = request.query.get("includeObject", "Metadata")
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name must be unique "
                    "within a namespace.", "priority": 0}]
    definitions += [{"name": n, "type": t, "format": "", "description": n, "priority": p} for n, t, p in columns]
    rows = []
    for obj, row in zip(objects, cells, strict=True):
        entry: dict = {"cells": row}
        if include == "Object":
            entry["object"] = obj
        elif include != "None":
            entry["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                               "metadata": obj.get("metadata", {})}
        rows.append(entry)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "columnDefinitions": definitions,
            "rows": rows}
