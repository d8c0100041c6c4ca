"""What every namespace gets from kube-controller-manager: the ``default`` ServiceAccount (the
serviceaccount controller) and the ``kube-root-ca.crt`` ConfigMap with the cluster CA (the
root-ca-cert-publisher), recreated if deleted."""

from __future__ import annotations

from labsim.kube.controllers.workqueue import Controller, Key

ROOT_CA = "kube-root-ca.crt"


class ServiceAccountController(Controller):
    name = "serviceaccount-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.namespaces = self.res("v1", "Namespace")
        self.accounts = self.res("v1", "ServiceAccount")
        self.configmaps = self.res("v1", "ConfigMap")

    def watches(self):
        return [(self.namespaces, lambda event_type, ns: [ns["metadata"]["name"]]),
                (self.accounts, _default_named("default")), (self.configmaps, _default_named(ROOT_CA))]

    async def reconcile(self, key: Key) -> None:
        space = self.store.get(self.namespaces, None, key)
        if space is None or space["metadata"].get("deletionTimestamp"):
            return
        if self.store.get(self.accounts, key, "default") is None:
            self.store.create({"apiVersion": "v1", "kind": "ServiceAccount",
                               "metadata": {"name": "default", "namespace": key}})
        ca = self.cluster.ca_pem().decode()
        current = self.store.get(self.configmaps, key, ROOT_CA)
        wanted = {"ca.crt": ca}
        if current is None:
            self.store.create({"apiVersion": "v1", "kind": "ConfigMap", "data": wanted, "metadata": {
                "name": ROOT_CA, "namespace": key,
                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the "
                                "kube-apiserver when using internal endpoints such as the internal service IP or "
                                "kubernetes.default.svc. No other usage is guaranteed across distributions of "
                                "Kubernetes clusters."}}})
        elif current.get("data") != wanted:
            current["data"] = wanted
            self.store.update(current)


def _default_named(name: str):
    def mapper(event_type: str, obj: dict) -> list[Key]:
        return [obj["metadata"]["namespace"]] if obj["metadata"]["name"] == name else []

    return mapper
