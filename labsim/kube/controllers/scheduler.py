"""The scheduler: binds each pending pod to a node that passes the filters (Ready, cordon,
taints/tolerations, nodeSelector and node affinity, requests against allocatable, local volumes'
node affinity) and scores best (fewest replicas of the same owner, then least requested).

Like kube-scheduler it keeps a cache of what each node already carries, fed by pod events and
by its own bindings ("assumed" pods), so scheduling a pod costs no list of all pods.
"""

from __future__ import annotations

from collections import Counter

from labsim.kube.controllers.events import WARNING, EventRecorder
from labsim.kube.controllers.placement import matches_node, node_ready, untolerated_taints
from labsim.kube.controllers.pods import TERMINAL, is_terminating, set_condition
from labsim.kube.controllers.quantity import parse_quantity, pod_requests
from labsim.kube.controllers.workqueue import Controller, Key

SCHEDULER_NAME = "default-scheduler"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
_UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
_NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}


class Scheduler(Controller):
    name = SCHEDULER_NAME

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.pods = self.res("v1", "Pod")
        self.nodes = self.res("v1", "Node")
        self.events = EventRecorder(self.store, self.clock, SCHEDULER_NAME)
        self._pending: set[Key] = set()
        # node -> pod key -> what the pod takes there: requests, owner uid, host ports.
        self._load: dict[str, dict[Key, tuple[dict[str, float], str, frozenset]]] = {}
        self._reported: dict[Key, str] = {}

    def watches(self):
        return [(self.pods, self._on_pod), (self.nodes, self._on_node)]

    def _on_pod(self, event_type: str, pod: dict) -> list[Key]:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        spec, phase = pod.get("spec") or {}, (pod.get("status") or {}).get("phase")
        for load in self._load.values():
            load.pop(key, None)
        gone = event_type == "DELETED" or phase in TERMINAL
        if spec.get("nodeName") and not gone:
            self._load.setdefault(spec["nodeName"], {})[key] = _footprint(pod)
        if not gone and not spec.get("nodeName") and not is_terminating(pod) \
                and spec.get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME:
            self._pending.add(key)
            return [key]
        self._pending.discard(key)
        self._reported.pop(key, None)
        return list(self._pending) if gone and spec.get("nodeName") else []

    def _on_node(self, event_type: str, node: dict) -> list[Key]:
        if event_type == "DELETED":
            self._load.pop(node["metadata"]["name"], None)
        return list(self._pending)

    async def reconcile(self, key: Key) -> None:
        pod = self.store.get(self.pods, *key)
        if pod is None or pod["spec"].get("nodeName") or is_terminating(pod):
            self._pending.discard(key)
            return
        nodes = self.store.list(self.nodes)
        fits, reasons = [], Counter()
        for node in nodes:
            reason = self._filter(pod, node)
            if reason:
                reasons[reason] += 1
            else:
                fits.append(node)
        if not fits:
            self._unschedulable(pod, key, len(nodes), reasons)
            return
        self._bind(pod, key, min(fits, key=lambda n: self._score(pod, n)))

    # -- filters and scores ---------------------------------------------------------------------
    def _filter(self, pod: dict, node: dict) -> str | None:
        """Why ``pod`` cannot go to ``node`` (the scheduler's wording), or None if it can."""
        taints = list((node.get("spec") or {}).get("taints") or [])
        if node["spec"].get("unschedulable"):
            taints.append(_UNSCHEDULABLE_TAINT)
        if not node_ready(node) and not any(t.get("key") == _NOT_READY_TAINT["key"] for t in taints):
            taints.append(_NOT_READY_TAINT)
        blocked = untolerated_taints(pod, {"spec": {"taints": taints}})
        if any(t is _UNSCHEDULABLE_TAINT for t in blocked):
            return "node(s) were unschedulable"
        if not matches_node(pod, node):
            return "node(s) didn't match Pod's node affinity/selector"
        if blocked:
            taint = blocked[0]
            return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
        taken = {port for _, _, ports in self._load.get(node["metadata"]["name"], {}).values() for port in ports}
        if _host_ports(pod) & taken:
            return "node(s) didn't have free ports for the requested pod ports"
        if self._volume_conflict(pod, node):
            return "node(s) had volume node affinity conflict"
        return self._insufficient(pod, node)

    def _insufficient(self, pod: dict, node: dict) -> str | None:
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        load = self._load.get(node["metadata"]["name"], {})
        if len(load) + 1 > parse_quantity(allocatable.get("pods", "110")):
            return "Too many pods"
        used: Counter = Counter()
        for requests, _, _ in load.values():
            used.update(requests)
        for resource, amount in pod_requests(pod).items():
            if amount > 0 and used[resource] + amount > parse_quantity(allocatable.get(resource, 0)):
                return f"Insufficient {resource}"
        return None

    def _volume_conflict(self, pod: dict, node: dict) -> bool:
        """A claim already bound to a local volume pins the pod to that volume's node."""
        for claim in _claims(pod):
            pvc = self.store.get(self.res("v1", "PersistentVolumeClaim"), pod["metadata"]["namespace"], claim)
            pv_name = ((pvc or {}).get("spec") or {}).get("volumeName")
            pv = self.store.get(self.res("v1", "PersistentVolume"), None, pv_name) if pv_name else None
            required = (((pv or {}).get("spec") or {}).get("nodeAffinity") or {}).get("required")
            if required and not matches_node(
                    {"spec": {"affinity": {"nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": required}}}}, node):
                return True
        return False

    def _score(self, pod: dict, node: dict) -> tuple:
        """Lower is better: spread an owner's replicas, then balance requested cpu and memory."""
        name = node["metadata"]["name"]
        load = self._load.get(name, {})
        owner = _owner_uid(pod)
        same_owner = sum(1 for _, uid, _ in load.values() if owner and uid == owner)
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        used: Counter = Counter()
        for requests, _, _ in load.values():
            used.update(requests)
        used.update(pod_requests(pod))
        share = sum(used[r] / parse_quantity(allocatable[r]) for r in ("cpu", "memory")
                    if parse_quantity(allocatable.get(r, 0)) > 0)
        return (same_owner, round(share, 3), len(load), name)

    # -- outcomes -------------------------------------------------------------------------------
    def _bind(self, pod: dict, key: Key, node: dict) -> None:
        node_name = node["metadata"]["name"]
        pod["spec"]["nodeName"] = node_name
        bound = self.store.update(pod)
        status = bound.setdefault("status", {})
        status["conditions"] = set_condition(status.get("conditions") or [], "PodScheduled", "True",
                                             self.clock.now(), probe_time=True)
        self.store.update(bound, subresource="status")
        self._load.setdefault(node_name, {})[key] = _footprint(pod)  # assumed
        self._pending.discard(key)
        self._reported.pop(key, None)
        self._select_node_for_claims(pod, node_name)
        self.events.record(bound, "Scheduled", f"Successfully assigned {key[0]}/{key[1]} to {node_name}")

    def _select_node_for_claims(self, pod: dict, node_name: str) -> None:
        """WaitForFirstConsumer claims learn their node from their first pod's binding."""
        pvcs = self.res("v1", "PersistentVolumeClaim")
        for claim in _claims(pod):
            pvc = self.store.get(pvcs, pod["metadata"]["namespace"], claim)
            if pvc is None or pvc["spec"].get("volumeName"):
                continue
            annotations = pvc["metadata"].setdefault("annotations", {})
            if annotations.get(SELECTED_NODE) != node_name:
                annotations[SELECTED_NODE] = node_name
                self.store.update(pvc)

    def _unschedulable(self, pod: dict, key: Key, total: int, reasons: Counter) -> None:
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        message = (f"0/{total} nodes are available: {detail}. preemption: 0/{total} nodes are available: "
                   f"{total} Preemption is not helpful for scheduling.") if total else "no nodes available to schedule pods"
        status = pod.setdefault("status", {})
        status["conditions"] = set_condition(status.get("conditions") or [], "PodScheduled", "False",
                                             self.clock.now(), "Unschedulable", message, probe_time=True)
        self.store.update(pod, subresource="status")
        if self._reported.get(key) != message:
            self._reported[key] = message
            self.events.record(pod, "FailedScheduling", message, WARNING)


def _footprint(pod: dict) -> tuple[dict[str, float], str, frozenset]:
    return pod_requests(pod), _owner_uid(pod), _host_ports(pod)


def _host_ports(pod: dict) -> frozenset:
    return frozenset((port.get("hostIP", "0.0.0.0"), port.get("protocol", "TCP"), port["hostPort"])
                     for container in (pod.get("spec") or {}).get("containers") or []
                     for port in container.get("ports") or [] if port.get("hostPort"))


def _owner_uid(pod: dict) -> str:
    refs = pod["metadata"].get("ownerReferences") or []
    return next((r.get("uid", "") for r in refs if r.get("controller")), "")


def _claims(pod: dict) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in (pod.get("spec") or {}).get("volumes") or []
            if v.get("persistentVolumeClaim")]
