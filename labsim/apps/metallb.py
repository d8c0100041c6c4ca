"""MetalLB's controller and speakers (L2 mode). While a Ready controller pod runs, every Service
of type LoadBalancer without a ``spec.loadBalancerClass`` (or with the one its ``--lb-class``
names) gets an address from the IPAddressPools of the controller's namespace: the one asked
for (annotation ``metallb.io/loadBalancerIPs`` or ``spec.loadBalancerIP``), else from the pool
named by ``metallb.io/address-pool``, else the first free one of the auto-assign pools.
``status.loadBalancer.ingress`` carries it (the twin's kube-proxy then listens on it and
forwards to the Service), annotation ``metallb.io/ip-allocated-from-pool`` the pool; a full
pool leaves the Service pending with the controller's ``AllocationFailed`` event. A speaker
announces an address covered by an L2Advertisement (event ``nodeAssigned``). The controller's
webhook judges IPAddressPools (ranges, CIDRs, overlaps) with MetalLB's messages."""

from __future__ import annotations

import ipaddress
from typing import Any

from labsim.apps.pods import labelled, ready_pods
from labsim.kube.admission.webhooks import WEBHOOKS, Webhook
from labsim.kube.controllers.events import WARNING, EventRecorder
from labsim.kube.controllers.workqueue import Controller, Key

CONTROLLER = {"app.kubernetes.io/name": "metallb", "app.kubernetes.io/component": "controller"}
SPEAKER = {"app.kubernetes.io/name": "metallb", "app.kubernetes.io/component": "speaker"}
LB_IPS = "metallb.io/loadBalancerIPs"
ADDRESS_POOL = "metallb.io/address-pool"
FROM_POOL = "metallb.io/ip-allocated-from-pool"
L2_NODE, L2_SERVICE_NAME, L2_SERVICE_NAMESPACE = "metallb.io/node", "metallb.io/service-name", "metallb.io/service-namespace"
_ALL = "all"  # one key: an allocation depends on every other Service's


class PoolError(ValueError):
    pass


def parse_addresses(text: str) -> list[ipaddress.IPv4Network]:
    """A pool entry (CIDR or FIRST-LAST) as networks, or MetalLB's ParseCIDR error."""
    if "-" not in text:
        try:
            return [ipaddress.ip_network(text.strip(), strict=False)]
        except ValueError:
            raise PoolError(f"invalid CIDR {text!r}".replace("'", '"')) from None
    first, last = (part.strip() for part in text.split("-", 1))
    ips = []
    for label, part in (("start", first), ("end", last)):
        try:
            ips.append(ipaddress.ip_address(part))
        except ValueError:
            raise PoolError(f'invalid IP range "{text}": invalid {label} IP "{part}"') from None
    if ips[0] > ips[1]:
        raise PoolError(f'invalid IP range "{text}": start IP "{ips[0]}" is after the end IP "{ips[1]}"')
    return list(ipaddress.summarize_address_range(ips[0], ips[1]))


def check_pool(store: Any, pool: dict) -> str | None:
    """The webhook's judgement of an IPAddressPool among the others of its namespace."""
    name, ns = pool["metadata"].get("name", ""), pool["metadata"].get("namespace", "")
    mine: list[ipaddress.IPv4Network] = []
    addresses = (pool.get("spec") or {}).get("addresses") or []
    if not addresses:
        return f"parsing address pool {name}: pool has no prefixes defined"
    for text in addresses:
        try:
            mine += parse_addresses(text)
        except PoolError as error:
            return f'parsing address pool {name}: invalid CIDR "{text}" in pool "{name}": {error}'
    for other in store.list(store.resource("metallb.io/v1beta1", "IPAddressPool"), ns):
        if other["metadata"]["name"] == name:
            continue
        for text in (other.get("spec") or {}).get("addresses") or []:
            try:
                theirs = parse_addresses(text)
            except PoolError:
                continue
            for cidr in mine:
                for taken in theirs:
                    if cidr.overlaps(taken):
                        return f'CIDR "{cidr}" in pool "{name}" overlaps with already defined CIDR "{taken}"'
    return None


WEBHOOKS["ipaddresspoolvalidationwebhook.metallb.io"] = Webhook(
    "ipaddresspoolvalidationwebhook.metallb.io", "metallb.io", "IPAddressPool", CONTROLLER, check_pool)


class Pool:
    def __init__(self, obj: dict) -> None:
        spec = obj.get("spec") or {}
        self.name = obj["metadata"]["name"]
        self.auto_assign = spec.get("autoAssign", True)
        self.networks = [n for text in spec.get("addresses") or [] for n in parse_addresses(text)]
        self.avoid_buggy = spec.get("avoidBuggyIPs", False)

    def __contains__(self, ip: ipaddress.IPv4Address) -> bool:
        return any(ip in n for n in self.networks)

    def addresses(self):
        for network in self.networks:
            for ip in (network if network.num_addresses > 1 else [network.network_address]):
                if not (self.avoid_buggy and ip.packed[-1] in (0, 255)):
                    yield ip


def _go_ips(ips: list) -> str:
    """A []net.IP as Go's %q prints it."""
    return "[" + " ".join(f'"{ip}"' for ip in ips) + "]"


class MetalLBController(Controller):
    name = "metallb-controller"

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self.services = self.res("v1", "Service")
        self.events = EventRecorder(self.store, self.clock, "metallb-controller")
        self.speaker_events = EventRecorder(self.store, self.clock, "metallb-speaker")
        self._announced: dict[str, tuple[str, str]] = {}  # Service uid -> (address, node) announced

    async def run(self) -> None:
        """MetalLB's kinds exist once its chart has installed their CRDs: wait for them."""
        subscription = self.store.subscribe(self.res("apiextensions.k8s.io/v1", "CustomResourceDefinition"))
        try:
            while not all(self.store.catalog.by_kind("metallb.io/v1beta1", k) for k in ("IPAddressPool", "L2Advertisement")):
                await subscription.next_event()
        finally:
            subscription.close()
        self.pools = self.res("metallb.io/v1beta1", "IPAddressPool")
        self.adverts = self.res("metallb.io/v1beta1", "L2Advertisement")
        await super().run()

    def watches(self):
        everything = lambda event_type, obj: [_ALL]  # noqa: E731
        return [(self.services, everything), (self.pools, everything), (self.adverts, everything),
                (self.res("v1", "Pod"), labelled({"app.kubernetes.io/name": "metallb"}))]

    async def reconcile(self, key: Key) -> None:
        controllers = ready_pods(self.store, CONTROLLER)
        if not controllers:
            return
        pod = controllers[0]
        ns = pod["metadata"]["namespace"]
        lb_class = next((a.split("=", 1)[1] for a in pod["spec"]["containers"][0].get("args") or []
                         if a.startswith("--lb-class=")), None)
        pools = []
        for obj in self.store.list(self.pools, ns):
            try:
                pools.append(Pool(obj))
            except PoolError:
                continue
        services = sorted(self.store.list(self.services),
                          key=lambda s: (s["metadata"].get("creationTimestamp", ""), s["metadata"]["name"]))
        mine = [s for s in services if (s.get("spec") or {}).get("type") == "LoadBalancer"
                and (s["spec"].get("loadBalancerClass") or None) == lb_class and not s["metadata"].get("deletionTimestamp")]
        used = {ip: svc_key(s) for s in mine for ip in _assigned(s, pools)}
        for svc in mine:
            self._converge(svc, pools, used)
        self._announce(mine, pools, ns)

    def _converge(self, svc: dict, pools: list[Pool], used: dict) -> None:
        key = svc_key(svc)
        current = _assigned(svc, pools)
        wanted, error = _requested(svc)
        if error:
            self.events.record(svc, "LoadBalancerFailed", f"invalid requested loadbalancer IPs: {error}", WARNING)
            return
        if current and (not wanted or wanted == current):
            return
        for ip in current:
            used.pop(ip, None)
        try:
            ip, pool = self._allocate(svc, pools, used, wanted)
        except PoolError as error:
            self.events.record(svc, "AllocationFailed", f'Failed to allocate IP for "{key}": {error}', WARNING)
            self._set(svc, None, None)
            return
        used[ip] = key
        self._set(svc, ip, pool)
        self.events.record(svc, "IPAllocated", f"Assigned IP {_go_ips([ip])}")

    @staticmethod
    def _allocate(svc: dict, pools: list[Pool], used: dict, wanted: list) -> tuple[Any, str]:
        if wanted:
            ip = wanted[0]
            pool = next((p for p in pools if ip in p), None)
            if pool is None:
                raise PoolError(f"{_go_ips(wanted)} is not allowed in config")
            if ip in used:
                raise PoolError(f'can\'t change sharing key for "{svc_key(svc)}", address also in use by {used[ip]}')
            return ip, pool.name
        asked = (svc["metadata"].get("annotations") or {}).get(ADDRESS_POOL)
        if asked:
            pool = next((p for p in pools if p.name == asked), None)
            if pool is None:
                raise PoolError(f'unknown pool "{asked}"')
            candidates = [pool]
        else:
            candidates = [p for p in pools if p.auto_assign]
        for pool in candidates:
            ip = next((ip for ip in pool.addresses() if ip not in used), None)
            if ip is not None:
                return ip, pool.name
        raise PoolError(f"no available IPs in pool {asked}" if asked else "no available IPs")

    def _set(self, svc: dict, ip, pool: str | None) -> None:
        annotations = dict(svc["metadata"].get("annotations") or {})
        if pool:
            annotations[FROM_POOL] = pool
        else:
            annotations.pop(FROM_POOL, None)
        if annotations != (svc["metadata"].get("annotations") or {}):
            svc["metadata"]["annotations"] = annotations
            svc = self.store.update(svc)
        ingress = [{"ip": str(ip), "ipMode": "VIP"}] if ip else []
        balancer = (svc.get("status") or {}).get("loadBalancer") or {}
        if (balancer.get("ingress") or []) != ingress:
            svc.setdefault("status", {})["loadBalancer"] = {"ingress": ingress} if ingress else {}
            self.store.update(svc, subresource="status")

    def _announce(self, services: list[dict], pools: list[Pool], ns: str) -> None:
        """A speaker announces the addresses of pools an L2Advertisement covers (event
        ``nodeAssigned``, a ServiceL2Status per Service); an address nobody announces is not
        reachable from the LAN (the twin's kube-proxy does not listen on it)."""
        speakers = ready_pods(self.store, SPEAKER)
        adverts = self.store.list(self.adverts, ns)
        named = {p for a in adverts for p in (a.get("spec") or {}).get("ipAddressPools") or []}
        every = any(not (a.get("spec") or {}).get("ipAddressPools") and not (a.get("spec") or {}).get(
            "ipAddressPoolSelectors") for a in adverts)
        announced = {}
        for svc in services if speakers else []:
            pool = (svc["metadata"].get("annotations") or {}).get(FROM_POOL)
            address = ",".join(map(str, _assigned(svc, pools)))
            if pool and address and (every or pool in named):
                announced[svc_key(svc)] = (svc, address)
        speaker = speakers[0] if speakers else None
        node = speaker["spec"].get("nodeName", "") if speaker else ""
        for svc, address in announced.values():
            if self._announced.get(svc["metadata"]["uid"]) != (address, node):
                self._announced[svc["metadata"]["uid"]] = (address, node)
                self.speaker_events.record(svc, "nodeAssigned", f'announcing from node "{node}" with protocol "layer2"')
        self._l2_statuses(ns, set(announced), speaker)

    def _l2_statuses(self, ns: str, announced: set[str], speaker: dict | None) -> None:
        """One ServiceL2Status per announced Service, owned by the announcing speaker pod."""
        statuses = self.res("metallb.io/v1beta1", "ServiceL2Status")
        have = {}
        for obj in self.store.list(statuses, ns):
            labels = obj["metadata"].get("labels") or {}
            key = f"{labels.get(L2_SERVICE_NAMESPACE)}/{labels.get(L2_SERVICE_NAME)}"
            if key in announced and key not in have and labels.get(L2_NODE) == speaker["spec"].get("nodeName"):
                have[key] = obj
            else:
                self.store.delete(statuses, ns, obj["metadata"]["name"])
        for key in sorted(announced - have.keys()):
            node, (svc_ns, svc_name) = speaker["spec"].get("nodeName", ""), key.split("/", 1)
            created = self.store.create({
                "apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status",
                "metadata": {"generateName": "l2-", "namespace": ns,
                             "labels": {L2_NODE: node, L2_SERVICE_NAME: svc_name, L2_SERVICE_NAMESPACE: svc_ns},
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": speaker["metadata"]["name"],
                                                  "uid": speaker["metadata"]["uid"]}]}})
            created["status"] = {"node": node, "serviceName": svc_name, "serviceNamespace": svc_ns,
                                 "interfaces": [{"name": "lo"}]}
            self.store.update(created, subresource="status")


def svc_key(svc: dict) -> str:
    return f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"


def _assigned(svc: dict, pools: list[Pool]) -> list:
    """The Service's current addresses that a pool still holds (others are cleared)."""
    found = []
    for entry in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        try:
            ip = ipaddress.ip_address(entry.get("ip", ""))
        except ValueError:
            continue
        if any(ip in p for p in pools):
            found.append(ip)
    return found


def _requested(svc: dict) -> tuple[list, str | None]:
    text = (svc["metadata"].get("annotations") or {}).get(LB_IPS, "")
    legacy = (svc.get("spec") or {}).get("loadBalancerIP", "")
    if text and legacy:
        return [], f"service can not have both {LB_IPS} and svc.Spec.LoadBalancerIP"
    try:
        return [ipaddress.ip_address(part.strip()) for part in (text or legacy).split(",") if part.strip()], None
    except ValueError:
        return [], f'invalid {LB_IPS}: "{text}"'
