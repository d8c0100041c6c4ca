"""Services: a ClusterIP from the cluster's service CIDR (and NodePorts) for each Service, and the Endpoints
and EndpointSlices of the pods its selector picks, ready or not, with named target ports
resolved against each pod's containers."""

from __future__ import annotations

import random

from labsim.kube.controllers.pods import TERMINAL, controller_ref, is_ready, is_terminating
from labsim.kube.controllers.workqueue import Controller, Key
from labsim.kube.store import StoreError
from labsim.net import cidrs

NODE_PORTS = range(30000, 32768)
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"


class ServiceController(Controller):
    name = "endpoint-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.services = self.res("v1", "Service")
        self.pods = self.res("v1", "Pod")
        self.endpoints = self.res("v1", "Endpoints")
        self.slices = self.res("discovery.k8s.io/v1", "EndpointSlice")
        self._selectors: dict[str, dict[str, dict]] = {}  # namespace -> service -> selector
        self._member_of: dict[Key, set[Key]] = {}  # pod -> services whose endpoints list it
        self._ips: set[str] = set()
        self._node_ports: set[int] = set()
        self._rng = random.Random()

    def watches(self):
        return [(self.services, self._service_event), (self.pods, self._pod_event)]

    def _service_event(self, event_type: str, svc: dict) -> list[Key]:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        spec = svc.get("spec") or {}
        ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None"]
        ports = [p["nodePort"] for p in spec.get("ports") or [] if p.get("nodePort")]
        if event_type == "DELETED":
            self._selectors.get(ns, {}).pop(name, None)
            self._ips.difference_update(ips)
            self._node_ports.difference_update(ports)
            return [(ns, name)]
        self._ips.update(ips)
        self._node_ports.update(ports)
        self._selectors.setdefault(ns, {})[name] = spec.get("selector") or {}
        return [(ns, name)]

    def _pod_event(self, event_type: str, pod: dict) -> list[Key]:
        ns = pod["metadata"]["namespace"]
        pod_key = (ns, pod["metadata"]["name"])
        labels = pod["metadata"].get("labels") or {}
        selecting = {(ns, svc) for svc, selector in self._selectors.get(ns, {}).items()
                     if selector and all(labels.get(k) == v for k, v in selector.items())}
        before = self._member_of.pop(pod_key, set()) if event_type == "DELETED" else self._member_of.get(pod_key, set())
        return list(selecting | before)

    async def reconcile(self, key: Key) -> None:
        svc = self.store.get(self.services, *key)
        if svc is None:  # its EndpointSlices go with it (ownerReferences), its Endpoints here
            self.store.delete(self.endpoints, *key)
            return
        svc = self._allocate(svc)
        selector = svc["spec"].get("selector")
        if key == ("default", "kubernetes") and not selector:
            self._write_api_server_endpoints(svc)
            return
        if not selector or svc["spec"].get("type") == "ExternalName":
            return
        pods = [p for p in self.store.list(self.pods, key[0], labels=selector)
                if (p.get("status") or {}).get("podIP") and (p.get("status") or {}).get("phase") not in TERMINAL]
        for members in self._member_of.values():
            members.discard(key)
        for pod in pods:
            self._member_of.setdefault((key[0], pod["metadata"]["name"]), set()).add(key)
        groups = _group_by_ports(svc, pods)
        self._write_endpoints(svc, groups)
        self._write_slices(svc, groups)

    # -- allocation -----------------------------------------------------------------------------
    def _allocate(self, svc: dict) -> dict:
        spec = svc["spec"]
        changed = False
        if spec.get("type", "ClusterIP") != "ExternalName" and not spec.get("clusterIP"):
            ip = self._free_ip()
            spec.update(clusterIP=ip, clusterIPs=[ip])
            changed = True
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            for port in spec.get("ports") or []:
                if not port.get("nodePort"):
                    port["nodePort"] = self._free_node_port()
                    changed = True
        return self.store.update(svc) if changed else svc

    def _free_ip(self) -> str:
        # Dynamic allocation stays above the static band (kubernetes .1, kube-dns .10), as the
        # real allocator prefers.
        network = cidrs.network(self.cluster.service_cidr)
        while True:
            ip = str(network[self._rng.randrange(cidrs.static_band(self.cluster.service_cidr), network.num_addresses - 1)])
            if ip not in self._ips:
                self._ips.add(ip)
                return ip

    def _free_node_port(self) -> int:
        while True:
            port = self._rng.choice(NODE_PORTS)
            if port not in self._node_ports:
                self._node_ports.add(port)
                return port

    # -- endpoints ------------------------------------------------------------------------------
    def _write_endpoints(self, svc: dict, groups: list[tuple[list[dict], list[dict]]]) -> None:
        publish_all = bool(svc["spec"].get("publishNotReadyAddresses"))
        subsets = []
        for ports, pods in groups:
            live = [p for p in pods if not is_terminating(p)]
            subset: dict = {}
            ready = [_address(p) for p in live if publish_all or is_ready(p)]
            not_ready = [_address(p) for p in live if not (publish_all or is_ready(p))]
            if ready:
                subset["addresses"] = ready
            if not_ready:
                subset["notReadyAddresses"] = not_ready
            if subset:
                subset["ports"] = ports
                subsets.append(subset)
        meta = svc["metadata"]
        endpoints = {"apiVersion": "v1", "kind": "Endpoints",
                     "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                                  "labels": dict(meta.get("labels") or {})}}
        if subsets:
            endpoints["subsets"] = subsets
        self._put(self.endpoints, endpoints)

    def _write_slices(self, svc: dict, groups: list[tuple[list[dict], list[dict]]]) -> None:
        meta = svc["metadata"]
        existing = self.store.list(self.slices, meta["namespace"], labels={SERVICE_NAME: meta["name"]})
        wanted = []
        for ports, pods in groups or [([], [])]:
            wanted.append({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"namespace": meta["namespace"], "generateName": f"{meta['name']}-",
                             "labels": {**(meta.get("labels") or {}), SERVICE_NAME: meta["name"],
                                        MANAGED_BY: SLICE_CONTROLLER},
                             "ownerReferences": [controller_ref(svc)]},
                "addressType": "IPv4",
                "endpoints": [_endpoint(p) for p in pods],
                "ports": [{"name": p.get("name", ""), "port": p["port"], "protocol": p["protocol"],
                           **({"appProtocol": p["appProtocol"]} if p.get("appProtocol") else {})} for p in ports],
            })
        for current, desired in zip(existing, wanted, strict=False):
            current.update({k: desired[k] for k in ("addressType", "endpoints", "ports")})
            current["metadata"]["labels"] = desired["metadata"]["labels"]
            self.store.update(current)
        for desired in wanted[len(existing):]:
            self.store.create(desired)
        for extra in existing[len(wanted):]:
            self.store.delete(self.slices, extra["metadata"]["namespace"], extra["metadata"]["name"])

    def _write_api_server_endpoints(self, svc: dict) -> None:
        """default/kubernetes: the API server's own address, as its endpoint reconciler keeps it."""
        port = (svc["spec"].get("ports") or [{}])[0]
        ports = [{"name": port.get("name", "https"), "port": int(port.get("targetPort") or 6443), "protocol": "TCP"}]
        ip = self.cluster.server_ip
        self._put(self.endpoints, {"apiVersion": "v1", "kind": "Endpoints", "metadata": {
            "name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": ip}], "ports": ports}]})
        current = self.store.get(self.slices, "default", "kubernetes")
        wanted = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                  "metadata": {"name": "kubernetes", "namespace": "default", "labels": {SERVICE_NAME: "kubernetes"}},
                  "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}], "ports": ports}
        if current is None:
            self.store.create(wanted)
        else:
            current.update({k: wanted[k] for k in ("endpoints", "ports")})
            self.store.update(current)

    def _put(self, res, obj: dict) -> None:
        current = self.store.get(res, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if current is None:
            try:
                self.store.create(obj)
            except StoreError as err:
                if err.code != 403:  # the namespace is terminating
                    raise
            return
        current["metadata"]["labels"] = obj["metadata"]["labels"]
        current.pop("subsets", None)
        current.update({k: v for k, v in obj.items() if k == "subsets"})
        self.store.update(current)


def _group_by_ports(svc: dict, pods: list[dict]) -> list[tuple[list[dict], list[dict]]]:
    """Pods grouped by their resolved endpoint ports (a named targetPort may differ per pod)."""
    groups: dict[tuple, list[dict]] = {}
    for pod in pods:
        ports = []
        for port in svc["spec"].get("ports") or []:
            target = _resolve(port.get("targetPort", port.get("port")), pod)
            if target is None:
                continue
            entry = {"port": target, "protocol": port.get("protocol", "TCP")}
            if port.get("name"):
                entry["name"] = port["name"]
            if port.get("appProtocol"):
                entry["appProtocol"] = port["appProtocol"]
            ports.append(tuple(sorted(entry.items())))
        groups.setdefault(tuple(ports), []).append(pod)
    return [([dict(p) for p in ports], members) for ports, members in groups.items()]


def _resolve(target: int | str | None, pod: dict) -> int | None:
    if isinstance(target, int):
        return target
    if target is None:
        return None
    if str(target).isdigit():
        return int(target)
    for container in pod["spec"].get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def _target_ref(pod: dict) -> dict:
    meta = pod["metadata"]
    return {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}


def _address(pod: dict) -> dict:
    address = {"ip": pod["status"]["podIP"], "nodeName": pod["spec"].get("nodeName"), "targetRef": _target_ref(pod)}
    if pod["spec"].get("hostname"):
        address["hostname"] = pod["spec"]["hostname"]
    return address


def _endpoint(pod: dict) -> dict:
    ready, terminating = is_ready(pod), is_terminating(pod)
    endpoint = {"addresses": [pod["status"]["podIP"]],
                "conditions": {"ready": ready and not terminating, "serving": ready, "terminating": terminating},
                "nodeName": pod["spec"].get("nodeName"), "targetRef": _target_ref(pod)}
    if pod["spec"].get("hostname"):
        endpoint["hostname"] = pod["spec"]["hostname"]
    return endpoint
