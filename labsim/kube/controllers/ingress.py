"""What an ingress controller reports back: an Ingress of a class served by a modelled
controller (Traefik, with ``--providers.kubernetesingress.ingressendpoint.publishedservice``)
gets the load-balancer addresses of that controller's published Service in its status, as
``kubectl get ingress`` shows them under ADDRESS."""

from __future__ import annotations

from labsim.kube.controllers.workqueue import Controller, Key

DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS = "kubernetes.io/ingress.class"
# IngressClass controller -> labels of the Service it publishes
PUBLISHED_SERVICES = {"traefik.io/ingress-controller": {"app.kubernetes.io/name": "traefik"}}


class IngressStatusController(Controller):
    name = "ingress-status"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.ingresses = self.res("networking.k8s.io/v1", "Ingress")
        self.classes = self.res("networking.k8s.io/v1", "IngressClass")
        self.services = self.res("v1", "Service")
        self._known: set[Key] = set()

    def watches(self):
        return [(self.ingresses, self._ingress_event), (self.classes, self._everything),
                (self.services, self._service_event)]

    def _ingress_event(self, event_type: str, ingress: dict) -> list[Key]:
        key = (ingress["metadata"]["namespace"], ingress["metadata"]["name"])
        (self._known.discard if event_type == "DELETED" else self._known.add)(key)
        return [key] if event_type != "DELETED" else []

    def _everything(self, event_type: str, obj: dict) -> list[Key]:
        return list(self._known)

    def _service_event(self, event_type: str, svc: dict) -> list[Key]:
        labels = svc["metadata"].get("labels") or {}
        published = any(all(labels.get(k) == v for k, v in wanted.items()) for wanted in PUBLISHED_SERVICES.values())
        return list(self._known) if published else []

    async def reconcile(self, key: Key) -> None:
        ingress = self.store.get(self.ingresses, *key)
        if ingress is None:
            return
        controller = self._controller_of(ingress)
        if controller not in PUBLISHED_SERVICES:
            return
        services = self.store.list(self.services, labels=PUBLISHED_SERVICES[controller])
        addresses = [{k: v for k, v in entry.items() if k in ("ip", "hostname")}
                     for svc in services for entry in
                     ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
        status = {"loadBalancer": {"ingress": addresses} if addresses else {}}
        if ingress.get("status") != status:
            ingress["status"] = status
            self.store.update(ingress, subresource="status")

    def _controller_of(self, ingress: dict) -> str | None:
        name = ingress["spec"].get("ingressClassName") or (ingress["metadata"].get("annotations") or {}).get(
            LEGACY_CLASS)
        if name:
            ingress_class = self.store.get(self.classes, None, name)
        else:
            ingress_class = next((c for c in self.store.list(self.classes)
                                  if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true"), None)
        return ((ingress_class or {}).get("spec") or {}).get("controller")
