"""kube-controller-manager's resource quota controller: each ResourceQuota's ``status.hard`` and
``status.used`` kept current as the objects of its namespace come and go."""

from __future__ import annotations

from labsim.kube.admission import resourcequota
from labsim.kube.controllers.workqueue import Controller, Key

# What quotas count (the reconcile of a namespace recounts everything its quotas name).
_WATCHED = (("v1", "Pod"), ("v1", "Service"), ("v1", "ConfigMap"), ("v1", "Secret"),
            ("v1", "PersistentVolumeClaim"), ("v1", "ReplicationController"), ("apps/v1", "Deployment"),
            ("apps/v1", "ReplicaSet"), ("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet"), ("batch/v1", "Job"),
            ("batch/v1", "CronJob"))


class ResourceQuotaController(Controller):
    name = "resourcequota-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.quotas = self.res("v1", "ResourceQuota")

    def watches(self):
        def namespace(event_type: str, obj: dict) -> list[Key]:
            ns = obj["metadata"].get("namespace")
            return [ns] if ns and self.store.list(self.quotas, ns) else []

        return [(self.quotas, namespace)] + [(self.res(*kind), namespace) for kind in _WATCHED]

    async def reconcile(self, key: Key) -> None:
        for quota in self.store.list(self.quotas, key):
            hard = (quota.get("spec") or {}).get("hard") or {}
            used = resourcequota.usage(self.store, key, list(hard))
            status = {"hard": dict(hard), "used": {k: resourcequota.show(k, v) for k, v in used.items()}}
            if quota.get("status") != status:
                quota["status"] = status
                self.store.update(quota, subresource="status")
