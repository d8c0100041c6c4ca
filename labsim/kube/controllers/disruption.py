"""The disruption controller: keeps each PodDisruptionBudget's status (expected and healthy
pods, disruptionsAllowed, the DisruptionAllowed condition) current, as ``kubectl get pdb``
shows it and as evictions during ``kubectl drain`` see it."""

from __future__ import annotations

from labsim.kube.controllers.pods import TERMINAL, int_or_percent, is_ready, set_condition
from labsim.kube.controllers.workqueue import Controller, Key
from labsim.kube.selectors import match_label_selector

_SCALED = {("apps/v1", "ReplicaSet"), ("apps/v1", "StatefulSet"), ("apps/v1", "Deployment"),
           ("v1", "ReplicationController")}


class DisruptionController(Controller):
    name = "disruption-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.budgets = self.res("policy/v1", "PodDisruptionBudget")
        self.pods = self.res("v1", "Pod")
        self._selectors: dict[str, dict[str, dict | None]] = {}  # namespace -> budget -> selector
        self._covering: dict[Key, set[Key]] = {}  # pod -> the budgets that selected it last

    def watches(self):
        return [(self.budgets, self._budget_event), (self.pods, self._pod_event)]

    def _budget_event(self, event_type: str, pdb: dict) -> list[Key]:
        ns, name = pdb["metadata"]["namespace"], pdb["metadata"]["name"]
        budgets = self._selectors.setdefault(ns, {})
        if event_type == "DELETED":
            budgets.pop(name, None)
        else:
            budgets[name] = (pdb.get("spec") or {}).get("selector")
        return [(ns, name)]

    def _pod_event(self, event_type: str, pod: dict) -> list[Key]:
        """The budgets selecting the pod now, and those that did (its labels may have changed)."""
        ns, labels = pod["metadata"]["namespace"], pod["metadata"].get("labels") or {}
        pod_key = (ns, pod["metadata"]["name"])
        now = {(ns, name) for name, selector in self._selectors.get(ns, {}).items()
               if match_label_selector(selector, labels)}
        before = self._covering.pop(pod_key, set())
        if event_type != "DELETED" and now:
            self._covering[pod_key] = now
        return list(now | before)

    async def reconcile(self, key: Key) -> None:
        pdb = self.store.get(self.budgets, *key)
        if pdb is None:
            return
        selector = pdb["spec"].get("selector")
        pods = [p for p in self.store.list(self.pods, key[0], labels=(selector or {}).get("matchLabels"))
                if match_label_selector(selector, p["metadata"].get("labels") or {})
                and (p.get("status") or {}).get("phase") not in TERMINAL and not p["metadata"].get("deletionTimestamp")]
        expected = self._expected(pods)
        healthy = sum(1 for p in pods if is_ready(p))
        spec = pdb["spec"]
        if spec.get("maxUnavailable") is not None:
            desired = max(expected - int_or_percent(spec["maxUnavailable"], expected, round_up=True), 0)
        else:
            desired = int_or_percent(spec.get("minAvailable", 1), expected, round_up=True)
        allowed = max(healthy - desired, 0)
        status = pdb.setdefault("status", {})
        status.update(observedGeneration=pdb["metadata"].get("generation", 1), expectedPods=expected,
                      currentHealthy=healthy, desiredHealthy=desired, disruptionsAllowed=allowed)
        status["conditions"] = set_condition(
            status.get("conditions") or [], "DisruptionAllowed", "True" if allowed else "False", self.clock.now(),
            "SufficientPods" if allowed else "InsufficientPods")
        self.store.update(pdb, subresource="status")

    def _expected(self, pods: list[dict]) -> int:
        """Pods the budget should see: the scale of their controllers (a Deployment's, through its
        ReplicaSet), or the pods themselves when they have none."""
        owners: dict[str, int] = {}
        loose = 0
        for pod in pods:
            ref = next((r for r in pod["metadata"].get("ownerReferences") or () if r.get("controller")), None)
            scale = self._scale(ref, pod["metadata"]["namespace"]) if ref else None
            if scale is None:
                loose += 1
            else:
                owners[scale[0]] = scale[1]
        return loose + sum(owners.values())

    def _scale(self, ref: dict, namespace: str) -> tuple[str, int] | None:
        if (ref.get("apiVersion"), ref.get("kind")) not in _SCALED:
            return None
        owner = self.store.get(self.res(ref["apiVersion"], ref["kind"]), namespace, ref["name"])
        if owner is None:
            return None
        parent = next((r for r in owner["metadata"].get("ownerReferences") or () if r.get("controller")), None)
        if parent and (parent.get("apiVersion"), parent.get("kind")) in _SCALED:
            return self._scale(parent, namespace) or (owner["metadata"]["uid"], int(owner["spec"].get("replicas", 1)))
        return owner["metadata"]["uid"], int(owner["spec"].get("replicas", 1))
