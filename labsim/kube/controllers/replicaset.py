"""The ReplicaSet controller: keeps ``spec.replicas`` active pods, adopting matching orphans,
removing the least useful pods first, and reports replica counts in status."""

from __future__ import annotations

from labsim.kube.controllers.events import EventRecorder
from labsim.kube.controllers.pods import (
    controlled_by,
    controller_ref,
    is_active,
    is_ready,
    pod_from_template,
    ready_since,
)
from labsim.kube.controllers.times import parse_rfc3339
from labsim.kube.controllers.workqueue import Controller, Key, by_controller, by_name
from labsim.kube.selectors import match_label_selector

BURST = 500  # pods created per pass at most, as the real controller's slow-start caps it


class ReplicaSetController(Controller):
    name = "replicaset-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.replicasets = self.res("apps/v1", "ReplicaSet")
        self.pods = self.res("v1", "Pod")
        self.events = EventRecorder(self.store, self.clock, self.name)

    def watches(self):
        return [(self.replicasets, by_name), (self.pods, by_controller("ReplicaSet"))]

    async def reconcile(self, key: Key) -> None:
        rs = self.store.get(self.replicasets, *key)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        pods = self._claim_pods(rs)
        active = [p for p in pods if is_active(p)]
        diff = int(rs["spec"].get("replicas", 1)) - len(active)
        if diff > 0:
            for _ in range(min(diff, BURST)):
                pod = self.store.create(pod_from_template(rs["spec"]["template"], rs))
                active.append(pod)
                self.events.record(rs, "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        elif diff < 0:
            for pod in sorted(active, key=_deletion_cost)[:-diff]:
                self.store.delete(self.pods, key[0], pod["metadata"]["name"])
                active.remove(pod)
                self.events.record(rs, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
        self._update_status(rs, key, active)

    def _claim_pods(self, rs: dict) -> list[dict]:
        """Pods this ReplicaSet controls, after adopting pods that match its selector and have no
        controller (as after ``kubectl delete rs --cascade=orphan`` and re-create)."""
        selector = rs["spec"].get("selector")
        owned = []
        for pod in self.store.list(self.pods, rs["metadata"]["namespace"],
                                   labels=(selector or {}).get("matchLabels")):
            if controlled_by(pod, rs):
                owned.append(pod)
            elif is_active(pod) and match_label_selector(selector, pod["metadata"].get("labels") or {}) and not any(
                    ref.get("controller") for ref in pod["metadata"].get("ownerReferences") or ()):
                pod["metadata"]["ownerReferences"] = [*(pod["metadata"].get("ownerReferences") or []),
                                                      controller_ref(rs)]
                owned.append(self.store.update(pod))
        return owned

    def _update_status(self, rs: dict, key: Key, active: list[dict]) -> None:
        now = self.clock.now()
        min_ready = int(rs["spec"].get("minReadySeconds") or 0)
        ready = [p for p in active if is_ready(p)]
        available = 0
        for pod in ready:
            since = parse_rfc3339(ready_since(pod) or "1970-01-01T00:00:00Z") + min_ready
            if since <= now:
                available += 1
            else:
                self.at(since, key)
        labels = (rs["spec"].get("template") or {}).get("metadata", {}).get("labels") or {}
        fully = sum(1 for p in active if all((p["metadata"].get("labels") or {}).get(k) == v
                                             for k, v in labels.items()))
        status = {"replicas": len(active), "fullyLabeledReplicas": fully, "readyReplicas": len(ready),
                  "availableReplicas": available, "observedGeneration": rs["metadata"].get("generation", 1)}
        rs["status"] = {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")}
        self.store.update(rs, subresource="status")


def _deletion_cost(pod: dict) -> tuple:
    """Which pods go first when scaling down: unscheduled, then pending, then not ready, then newest."""
    status = pod.get("status") or {}
    return (bool(pod["spec"].get("nodeName")), status.get("phase") == "Running", is_ready(pod),
            _negated(pod["metadata"].get("creationTimestamp", "")))


def _negated(timestamp: str) -> float:
    return -parse_rfc3339(timestamp) if timestamp else 0.0
