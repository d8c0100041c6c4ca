"""k3s' ServiceLB (klipper-lb), run by the server unless `--disable servicelb`: for every
Service of type LoadBalancer without a loadBalancerClass it keeps a DaemonSet
`svclb-<service>-<uid[:8]>` in kube-system whose pods hold the Service's ports on each node, and
publishes the addresses of the nodes where those pods run as the Service's load-balancer ingress."""

from __future__ import annotations

from labsim.k3s.addons import CRITICAL
from labsim.kube.controllers.pods import is_ready
from labsim.kube.controllers.workqueue import Controller, Key, by_name

NAMESPACE = "kube-system"
IMAGE = "rancher/klipper-lb:v0.4.13"
SVC_NAME = "svccontroller.k3s.cattle.io/svcname"
SVC_NAMESPACE = "svccontroller.k3s.cattle.io/svcnamespace"


def daemonset_name(svc: dict) -> str:
    return f"svclb-{svc['metadata']['name']}-{svc['metadata']['uid'][:8]}"


def wants_lb(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    return (spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")
            and not svc["metadata"].get("deletionTimestamp"))


def daemonset(svc: dict) -> dict:
    name = daemonset_name(svc)
    labels = {"app": name, SVC_NAME: svc["metadata"]["name"], SVC_NAMESPACE: svc["metadata"]["namespace"]}
    containers = []
    for port in svc["spec"].get("ports") or []:
        proto = port.get("protocol", "TCP")
        port_name = f"lb-{proto.lower()}-{port['port']}"
        containers.append({
            "name": port_name, "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": port_name, "containerPort": port["port"], "hostPort": port["port"], "protocol": proto}],
            "env": [{"name": "SRC_PORT", "value": str(port["port"])}, {"name": "SRC_RANGES", "value": "0.0.0.0/0"},
                    {"name": "DEST_PROTO", "value": proto}, {"name": "DEST_PORT", "value": str(port.get("nodePort", ""))},
                    {"name": "DEST_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIPs"}}}],
            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}},
        })
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"automountServiceAccountToken": False, "serviceAccountName": "svclb",
                                       "priorityClassName": "system-node-critical", "tolerations": CRITICAL,
                                       "containers": containers}}},
    }


class ServiceLB(Controller):
    name = "servicelb"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.services = self.res("v1", "Service")
        self.pods = self.res("v1", "Pod")
        self.nodes = self.res("v1", "Node")
        self.daemonsets = self.res("apps/v1", "DaemonSet")

    def watches(self):
        return [(self.services, by_name), (self.pods, self._svclb_pod), (self.daemonsets, self._svclb_pod)]

    @staticmethod
    def _svclb_pod(event_type: str, obj: dict) -> list[Key]:
        labels = obj["metadata"].get("labels") or {}
        return [(labels[SVC_NAMESPACE], labels[SVC_NAME])] if SVC_NAME in labels else []

    async def reconcile(self, key: Key) -> None:
        svc = self.store.get(self.services, *key)
        wanted = daemonset(svc) if svc is not None and wants_lb(svc) else None
        for stale in self.store.list(self.daemonsets, NAMESPACE, labels={SVC_NAMESPACE: key[0], SVC_NAME: key[1]}):
            if wanted is None or stale["metadata"]["name"] != wanted["metadata"]["name"]:
                self.store.delete(self.daemonsets, NAMESPACE, stale["metadata"]["name"])
        if wanted is None:
            return
        self._ensure(wanted)
        self._publish(svc, wanted["metadata"]["name"])

    def _ensure(self, wanted: dict) -> None:
        accounts = self.res("v1", "ServiceAccount")
        if self.store.get(accounts, NAMESPACE, "svclb") is None:  # the account its pods run as, as k3s makes it
            self.store.create({"apiVersion": "v1", "kind": "ServiceAccount",
                               "metadata": {"name": "svclb", "namespace": NAMESPACE}})
        current = self.store.get(self.daemonsets, NAMESPACE, wanted["metadata"]["name"])
        if current is None:
            self.store.create(wanted)
        elif current["spec"]["template"] != wanted["spec"]["template"]:
            current["spec"]["template"] = wanted["spec"]["template"]
            self.store.update(current)

    def _publish(self, svc: dict, ds_name: str) -> None:
        """The Service's ingress: the nodes whose svclb pod is ready (ExternalIP before InternalIP)."""
        hosts = {p["spec"].get("nodeName") for p in self.store.list(self.pods, NAMESPACE, labels={"app": ds_name})
                 if is_ready(p)}
        ips = sorted(ip for ip in (self._node_ip(n) for n in hosts if n) if ip)
        ingress = [{"ip": ip, "ipMode": "VIP"} for ip in ips]
        status = svc.setdefault("status", {}).setdefault("loadBalancer", {})
        if status.get("ingress", []) != ingress:
            status["ingress"] = ingress
            if not ingress:
                del status["ingress"]
            self.store.update(svc, subresource="status")

    def _node_ip(self, name: str) -> str | None:
        node = self.store.get(self.nodes, None, name) or {}
        addresses = {a["type"]: a["address"] for a in (node.get("status") or {}).get("addresses", [])}
        return addresses.get("ExternalIP") or addresses.get("InternalIP")
