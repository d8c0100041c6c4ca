"""kube-controller-manager's clusterrole-aggregation controller: a ClusterRole with an
``aggregationRule`` gets the rules of every ClusterRole its selectors match (admin/edit/view
grow with the ``aggregate-to-*`` roles charts add)."""

from __future__ import annotations

from labsim.kube.controllers.workqueue import Controller, Key
from labsim.kube.selectors import match_label_selector


class ClusterRoleAggregationController(Controller):
    name = "clusterrole-aggregation-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.roles = self.res("rbac.authorization.k8s.io/v1", "ClusterRole")

    def watches(self):
        return [(self.roles, self._aggregators)]

    def _aggregators(self, event_type: str, obj: dict) -> list[Key]:
        """Any change may add or remove rules of any aggregated role."""
        return [r["metadata"]["name"] for r in self.store.list(self.roles) if r.get("aggregationRule")]

    async def reconcile(self, key: Key) -> None:
        role = self.store.get(self.roles, None, key)
        if role is None or not role.get("aggregationRule"):
            return
        selectors = role["aggregationRule"].get("clusterRoleSelectors") or []
        rules: list[dict] = []
        for other in self.store.list(self.roles):  # sorted by name, as the real controller does
            labels = other["metadata"].get("labels") or {}
            if other["metadata"]["name"] == key or not any(match_label_selector(s, labels) for s in selectors):
                continue
            rules += [rule for rule in other.get("rules") or [] if rule not in rules]
        if (role.get("rules") or []) != rules:
            role["rules"] = rules
            self.store.update(role)
