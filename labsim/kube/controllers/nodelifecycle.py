"""The node lifecycle controller: taints nodes by condition (not-ready / unreachable, and
unschedulable when cordoned), marks the pods of a node that stopped reporting not Ready, and
evicts them once their NoExecute toleration runs out (300 s by default, on the lab clock), so
their controllers recreate them elsewhere."""

from __future__ import annotations

from labsim.kube.controllers.events import EventRecorder
from labsim.kube.controllers.placement import NO_EXECUTE, tolerates
from labsim.kube.controllers.pods import TERMINAL, condition, set_condition
from labsim.kube.controllers.times import parse_rfc3339, rfc3339
from labsim.kube.controllers.workqueue import Controller, Key

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
_MANAGED = (NOT_READY, UNREACHABLE, UNSCHEDULABLE)


class NodeLifecycleController(Controller):
    name = "node-lifecycle-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.nodes = self.res("v1", "Node")
        self.pods = self.res("v1", "Pod")
        self.events = EventRecorder(self.store, self.clock, self.name)
        self._down: set[str] = set()
        self._last_ready: dict[str, str] = {}

    def watches(self):
        return [(self.nodes, self._node_event), (self.pods, self._pod_event)]

    def _node_event(self, event_type: str, node: dict) -> list[Key]:
        return [(None, node["metadata"]["name"])]

    def _pod_event(self, event_type: str, pod: dict) -> list[Key]:
        node = (pod.get("spec") or {}).get("nodeName")
        return [(None, node)] if node in self._down and event_type != "DELETED" else []

    async def reconcile(self, key: Key) -> None:
        node = self.store.get(self.nodes, *key)
        if node is None:
            self._down.discard(key[1])
            self._last_ready.pop(key[1], None)
            return
        ready = (condition(node, "Ready") or {}).get("status", "Unknown")
        if self._last_ready.get(key[1], "True") != ready:
            status = "NodeReady" if ready == "True" else "NodeNotReady"
            self.events.record(node, status, f"Node {key[1]} status is now: {status}")
        self._last_ready[key[1]] = ready
        node = self._taint(node, ready)
        if ready == "True":
            self._down.discard(key[1])
            return
        self._down.add(key[1])
        self._handle_pods(node, key)

    def _taint(self, node: dict, ready: str) -> dict:
        """Keep the condition taints in line with the node's Ready condition and cordon."""
        now = rfc3339(self.clock.now())
        current = node["spec"].get("taints") or []
        kept = [t for t in current if t.get("key") not in _MANAGED]
        wanted = []
        if node["spec"].get("unschedulable"):
            wanted.append({"key": UNSCHEDULABLE, "effect": "NoSchedule"})
        if ready != "True":
            key = NOT_READY if ready == "False" else UNREACHABLE
            wanted.append({"key": key, "effect": "NoSchedule"})
            wanted.append({"key": key, "effect": NO_EXECUTE, "timeAdded": now})
        for taint in wanted:  # an existing taint keeps its timeAdded
            old = next((t for t in current if t.get("key") == taint["key"] and t.get("effect") == taint["effect"]), None)
            kept.append(old or taint)
        if sorted(map(str, kept)) == sorted(map(str, current)):
            return node
        if kept:
            node["spec"]["taints"] = kept
        else:
            node["spec"].pop("taints", None)
        return self.store.update(node)

    def _handle_pods(self, node: dict, key: Key) -> None:
        name, now = node["metadata"]["name"], self.clock.now()
        taints = [t for t in node["spec"].get("taints") or [] if t.get("effect") == NO_EXECUTE]
        for pod in self.store.list(self.pods, fields={"spec.nodeName": name}):
            if (pod.get("status") or {}).get("phase") in TERMINAL or pod["metadata"].get("deletionTimestamp"):
                continue
            evict_at = _eviction_time(pod, taints)
            if evict_at is not None and evict_at <= now:
                self.store.delete(self.pods, pod["metadata"]["namespace"], pod["metadata"]["name"])
                self.events.record(pod, "TaintManagerEviction",
                                   f"Marking for deletion Pod {pod['metadata']['namespace']}/{pod['metadata']['name']}")
                continue
            if evict_at is not None:
                self.at(evict_at, key)
            self._mark_not_ready(pod, now)

    def _mark_not_ready(self, pod: dict, now: float) -> None:
        status = pod.setdefault("status", {})
        if (condition(pod, "Ready") or {}).get("status") == "False":
            return
        status["conditions"] = set_condition(status.get("conditions") or [], "Ready", "False", now, probe_time=True)
        for container in status.get("containerStatuses") or []:
            container["ready"] = False
        self.store.update(pod, subresource="status")


def _eviction_time(pod: dict, taints: list[dict]) -> float | None:
    """When the node's NoExecute taints evict ``pod`` (lab time), or None if it tolerates them for good."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    latest: float | None = None
    for taint in taints:
        matching = [t for t in tolerations if tolerates(t, taint)]
        added = parse_rfc3339(taint["timeAdded"]) if taint.get("timeAdded") else 0.0
        if not matching:
            return added
        if any(t.get("tolerationSeconds") is None for t in matching):
            continue
        ends = added + min(int(t["tolerationSeconds"]) for t in matching)
        latest = ends if latest is None else min(latest, ends)
    return latest
