"""The DaemonSet controller: one pod on every node the template's selector, affinity and
tolerations admit, pinned there by node affinity (the scheduler binds it), with the tolerations
DaemonSet pods always get; rolling updates within maxUnavailable; the status
``kubectl rollout status ds`` reads."""

from __future__ import annotations

import copy

from labsim.kube.controllers.deployment import template_hash
from labsim.kube.controllers.events import EventRecorder
from labsim.kube.controllers.placement import NO_EXECUTE, SCHEDULING_EFFECTS, matches_node, untolerated_taints
from labsim.kube.controllers.pods import (
    controlled_by,
    int_or_percent,
    is_active,
    is_ready,
    pod_from_template,
)
from labsim.kube.controllers.revisions import ensure_revision
from labsim.kube.controllers.workqueue import Controller, Key, by_controller

REVISION_HASH = "controller-revision-hash"
TEMPLATE_GENERATION = "pod-template-generation"
# What the DaemonSet controller adds to every pod it makes, so daemons survive node trouble.
DAEMON_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]
_HOST_NETWORK_TOLERATION = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists",
                            "effect": "NoSchedule"}


class DaemonSetController(Controller):
    name = "daemonset-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.daemonsets = self.res("apps/v1", "DaemonSet")
        self.pods = self.res("v1", "Pod")
        self.nodes = self.res("v1", "Node")
        self.events = EventRecorder(self.store, self.clock, self.name)
        self._known: set[Key] = set()

    def watches(self):
        return [(self.daemonsets, self._ds_event), (self.pods, by_controller("DaemonSet")),
                (self.nodes, lambda event_type, node: list(self._known))]

    def _ds_event(self, event_type: str, ds: dict) -> list[Key]:
        key = (ds["metadata"]["namespace"], ds["metadata"]["name"])
        (self._known.discard if event_type == "DELETED" else self._known.add)(key)
        return [key]

    async def reconcile(self, key: Key) -> None:
        ds = self.store.get(self.daemonsets, *key)
        if ds is None or ds["metadata"].get("deletionTimestamp"):
            return
        template = _daemon_template(ds)
        revision = template_hash(template)
        ensure_revision(self.store, ds, f"{ds['metadata']['name']}-{revision}")
        pods = [p for p in self.store.list(self.pods, key[0], labels=ds["spec"]["selector"].get("matchLabels"))
                if controlled_by(p, ds) and is_active(p)]
        by_node: dict[str, list[dict]] = {}
        for pod in pods:
            by_node.setdefault(_target_node(pod), []).append(pod)
        nodes = self.store.list(self.nodes)
        # A daemon starts where its tolerations admit it, and keeps running where no NoExecute
        # taint evicts it (a node gone NotReady keeps its daemons).
        keep = {n["metadata"]["name"] for n in nodes if _should_run(template, n, (NO_EXECUTE,))}
        wanted_names = {n["metadata"]["name"] for n in nodes if _should_run(template, n)}
        wanted_names |= {name for name in keep if by_node.get(name)}
        for name in sorted(wanted_names):
            if not by_node.get(name):
                by_node[name] = [self._create(ds, template, revision, name)]
        for name, node_pods in by_node.items():
            surplus = node_pods if name not in wanted_names else sorted(
                node_pods, key=lambda p: p["metadata"]["creationTimestamp"])[1:]
            for pod in surplus:
                self._delete(ds, pod)
                node_pods.remove(pod)
        if ds["spec"]["updateStrategy"].get("type") == "RollingUpdate":
            self._roll(ds, revision, [p for n in wanted_names for p in by_node.get(n, [])], len(wanted_names))
        self._update_status(ds, revision, by_node, wanted_names)

    def _create(self, ds: dict, template: dict, revision: str, node: str) -> dict:
        pod = pod_from_template(template, ds, labels={REVISION_HASH: revision, TEMPLATE_GENERATION:
                                                      str(ds["metadata"].get("generation", 1))})
        pod["spec"].setdefault("affinity", {})["nodeAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}
        created = self.store.create(pod)
        self.events.record(ds, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        return created

    def _delete(self, ds: dict, pod: dict) -> None:
        self.store.delete(self.pods, pod["metadata"]["namespace"], pod["metadata"]["name"])
        self.events.record(ds, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")

    def _roll(self, ds: dict, revision: str, pods: list[dict], desired: int) -> None:
        """Replace old-revision pods, at most maxUnavailable nodes without a ready daemon at a time."""
        rolling = ds["spec"]["updateStrategy"].get("rollingUpdate") or {}
        budget = max(int_or_percent(rolling.get("maxUnavailable", 1), desired, round_up=True), 1)
        budget -= sum(1 for p in pods if not is_ready(p))
        old = [p for p in pods if (p["metadata"].get("labels") or {}).get(REVISION_HASH) != revision]
        for pod in sorted(old, key=is_ready)[:max(budget, 0)]:
            self._delete(ds, pod)

    def _update_status(self, ds: dict, revision: str, by_node: dict[str, list[dict]], wanted: set[str]) -> None:
        scheduled = [pods[0] for name, pods in by_node.items() if name in wanted and pods]
        ready = sum(1 for p in scheduled if is_ready(p))
        status = {
            "currentNumberScheduled": len(scheduled),
            "desiredNumberScheduled": len(wanted),
            "numberMisscheduled": sum(1 for name, pods in by_node.items() if name not in wanted and pods),
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": len(wanted) - ready,
            "updatedNumberScheduled": sum(1 for p in scheduled
                                          if (p["metadata"].get("labels") or {}).get(REVISION_HASH) == revision),
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        ds["status"] = {k: v for k, v in status.items() if v or k not in ("numberAvailable", "numberUnavailable")}
        self.store.update(ds, subresource="status")


def _daemon_template(ds: dict) -> dict:
    template = copy.deepcopy(ds["spec"]["template"])
    spec = template.setdefault("spec", {})
    tolerations = spec.setdefault("tolerations", [])
    extra = DAEMON_TOLERATIONS + ([_HOST_NETWORK_TOLERATION] if spec.get("hostNetwork") else [])
    for toleration in extra:
        if not any(t.get("key") == toleration["key"] and t.get("effect") == toleration["effect"]
                   for t in tolerations):
            tolerations.append(dict(toleration))
    return template


def _should_run(template: dict, node: dict, effects: tuple[str, ...] = SCHEDULING_EFFECTS) -> bool:
    return matches_node(template, node) and not untolerated_taints(template, node, effects)


def _target_node(pod: dict) -> str:
    """The node a daemon pod is for: where it is bound, else its node affinity."""
    if pod["spec"].get("nodeName"):
        return pod["spec"]["nodeName"]
    terms = ((((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
              .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or [])
    for term in terms:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("values"):
                return field["values"][0]
    return ""
