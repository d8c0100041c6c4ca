"""One k3s cluster of the embedded lab: its store, PKI, API server, nodes and controllers.

State lives in ``<state_dir>`` (the registry gives each cluster ``<lab state>/kube/<node>/``):
cluster.json (what it was created with), the PKI, and store.json (the objects, saved when they
change), so a restarted lab resumes its clusters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import yaml

from labsim import pki
from labsim.kube import apply, rbac_defaults
from labsim.kube.apiserver import ApiServer, tls_context
from labsim.kube.logs import PodLogs
from labsim.kube.store import Store, StoreError
from labsim.net import cidrs
from labsim.node import image, nodefiles
from labsim.runtime.runtime import ContainerRuntime

log = logging.getLogger("labsim.kube.cluster")
API_PORT = 6443
SAVE_EVERY = 1.0  # real seconds between saves of a changed store
_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class Closable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=Closable)


class Cluster:
    def __init__(self, state_dir: Path, clock, *, name: str, version: str, token: str, server_ip: str,
                 embedded_etcd: bool = True, disable: list[str] | None = None, tls_san: list[str] | None = None,
                 port: int = API_PORT, run_controllers: bool = True, cluster_cidr: str = cidrs.SIM_CLUSTER_CIDR,
                 service_cidr: str = cidrs.SIM_SERVICE_CIDR) -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.name, self.version, self.token, self.server_ip = name, version, token, server_ip
        self.embedded_etcd, self.disable, self.tls_san = embedded_etcd, list(disable or []), list(tls_san or [])
        self.port, self.run_controllers = port, run_controllers
        self.cluster_cidr, self.service_cidr = cluster_cidr, service_cidr
        self.store = Store(clock)
        self.logs = PodLogs(self.store.now)
        self.runtime = ContainerRuntime(self)
        self._api = ApiServer(self)
        self._tasks: list[asyncio.Task] = []
        self._saved_rv = -1
        self._reaped = False
        # What k3s' process leaves behind besides the containers (kube-proxy's rules), by owner: closed by ``close``.
        self.outliving: dict[str, Closable] = {}
        self.machine_runs: Callable[[str], bool] = lambda ip: True  # the lab's answer: is the machine at ip up
        self._ca, self._server_cert, self._admin = self._load_pki()

    # -- persistence ----------------------------------------------------------------------------
    def _load_pki(self) -> tuple[pki.KeyPair, pki.KeyPair, pki.KeyPair]:
        d = self.state_dir / "tls"
        pairs = {}
        for item in ("ca", "server", "admin"):
            cert, key = d / f"{item}.crt", d / f"{item}.key"
            if cert.exists() and key.exists():
                pairs[item] = pki.KeyPair.load(cert, key)
        if "ca" not in pairs:
            pairs = {"ca": pki.make_ca(f"k3s-server-ca@{self.name}")}
        sans = [self.server_ip, "127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
                "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", self.service_ip, self.name, *self.tls_san]
        server = pairs.get("server")
        if server is None or set(_sans(server)) != set(sans):
            pairs["server"] = pki.issue(pairs["ca"], "k3s", sans=sans)
        if "admin" not in pairs:
            pairs["admin"] = pki.issue(pairs["ca"], "system:admin", client=True, org="system:masters")
        for item, pair in pairs.items():
            pair.save(d / f"{item}.crt", d / f"{item}.key")
        return pairs["ca"], pairs["server"], pairs["admin"]

    def save(self) -> None:
        """Write the cluster's description and its objects (if they changed since the last save)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        meta = self.state_dir / "cluster.json"
        meta.touch(mode=0o600)
        meta.write_text(json.dumps({
            "name": self.name, "version": self.version, "token": self.token, "server_ip": self.server_ip,
            "embedded_etcd": self.embedded_etcd, "disable": self.disable, "tls_san": self.tls_san,
            "port": self.port, "cluster_cidr": self.cluster_cidr, "service_cidr": self.service_cidr}, indent=1))
        if self.store.resource_version != self._saved_rv:
            tmp = self.state_dir / "store.json.tmp"
            # The store holds Secrets (tokens, keys): owner-only, as etcd's data is on a k3s server.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # a leftover tmp file keeps its mode through O_CREAT
            with os.fdopen(fd, "wb") as out:
                out.write(self.store.snapshot())
            tmp.replace(self.state_dir / "store.json")
            self._saved_rv = self.store.resource_version
        kubeconfig = self.state_dir / "kubeconfig"
        if not kubeconfig.exists():  # the admin kubeconfig for the operator, server on the node's IP
            kubeconfig.touch(mode=0o600)
            kubeconfig.write_text(self.kubeconfig_yaml(f"https://{self.server_ip}:{self.port}"))

    @classmethod
    def load(cls, state_dir: Path, clock, **overrides) -> Cluster:
        meta = json.loads((Path(state_dir) / "cluster.json").read_text())
        cluster = cls(state_dir, clock, **{**meta, **overrides})
        data = Path(state_dir) / "store.json"
        if data.exists():
            cluster.store.restore(data.read_bytes())
            cluster._saved_rv = cluster.store.resource_version
        return cluster

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY)
            if self.store.resource_version != self._saved_rv:
                self.save()

    # -- identity -------------------------------------------------------------------------------
    def now(self) -> float:
        """Lab time in epoch seconds."""
        return self.clock.now() if self.clock is not None else time.time()

    @property
    def service_ip(self) -> str:
        """The kubernetes Service's ClusterIP: the service CIDR's first address."""
        return cidrs.kubernetes_ip(self.service_cidr)

    def ca_pem(self) -> bytes:
        return self._ca.cert_pem

    def version_info(self) -> dict:
        m = re.match(r"v(\d+)\.(\d+)\.(\d+)", self.version)
        major, minor = (m.group(1), m.group(2)) if m else ("1", "34")
        return {"major": major, "minor": minor, "emulationMajor": major, "emulationMinor": minor,
                "minCompatibilityMajor": major, "minCompatibilityMinor": str(max(int(minor) - 1, 0)),
                "gitVersion": self.version, "gitCommit": hashlib.sha1(self.version.encode()).hexdigest(),
                "gitTreeState": "clean", "buildDate": "2025-12-10T00:00:00Z", "goVersion": "go1.24.11",
                "compiler": "gc", "platform": "linux/amd64"}

    def kubeconfig_yaml(self, server: str = "https://127.0.0.1:6443") -> str:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
               "clusters": [{"name": "default", "cluster": {"certificate-authority-data": b64(self._ca.cert_pem),
                                                             "server": server}}],
               "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
               "current-context": "default",
               "users": [{"name": "default", "user": {"client-certificate-data": b64(self._admin.cert_pem),
                                                       "client-key-data": b64(self._admin.key_pem)}}]}
        return yaml.safe_dump(doc, sort_keys=False)

    # -- API server and controllers -------------------------------------------------------------
    async def start_api(self) -> None:
        if self._tasks:
            return
        self._bootstrap()
        if not self._reaped:  # before this lab process runs a container: what a lab killed with -9 left
            await self.runtime.reap()
            self._reaped = True
        # Containers ran on while k3s was stopped; those of pods the store no longer has go.
        pods = self.store.list(self.store.resource("v1", "Pod"))
        if swept := self.runtime.sweep({p["metadata"]["uid"] for p in pods}):
            log.info("cluster %s: stopped the containers of %d pods it no longer has", self.name, len(swept))
        d = self.state_dir / "tls"
        tls = tls_context(str(d / "server.crt"), str(d / "server.key"), str(d / "ca.crt"))
        await self._api.start(self.server_ip, self.port, tls)
        self.save()
        self._tasks.append(asyncio.create_task(self._save_loop(), name=f"kube-save-{self.name}"))
        for controller in self._controllers():
            self._tasks.append(asyncio.create_task(self._run(controller), name=f"kube-{self.name}"))

    def _controllers(self) -> list:
        if not self.run_controllers:
            return []
        try:
            from labsim.apps import APPS
            from labsim.kube.controllers import CONTROLLERS, run_controller
        except ImportError:
            log.warning("labsim.kube.controllers is not available: the cluster runs without controllers")
            return []
        return list(CONTROLLERS) + [run_controller(app) for app in APPS]  # the modelled apps' pods

    async def _run(self, controller) -> None:
        try:
            await controller(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("controller %r of cluster %s failed", controller, self.name)

    async def stop_api(self) -> None:
        """k3s stops: its API server and controllers (the kubelets with them). The containers run
        on, as under k3s' KillMode=process; ``close`` stops them too."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._api.stop()
        self.save()

    async def close(self) -> None:
        """The lab stops, or the cluster is uninstalled: k3s and every container of the cluster."""
        await self.stop_api()
        self.close_outliving()
        await self.runtime.close()

    def outlive(self, name: str, make: Callable[[], T]) -> T:
        """What ``name`` left when k3s last stopped (its servers, its rules), else ``make()``'s, kept
        until ``close_outliving``."""
        if name not in self.outliving:
            self.outliving[name] = make()
        return self.outliving[name]

    def close_outliving(self) -> None:
        """What k3s' process left behind (kube-proxy's rules) goes: its machine stopped, the cluster closes."""
        outliving, self.outliving = self.outliving, {}
        for item in outliving.values():
            item.close()

    @property
    def authorizer(self):
        """The API server's authorizer (its ``mode`` is "RBAC", as k3s', or "AlwaysAllow")."""
        return self._api.rest.authorizer

    @property
    def api_running(self) -> bool:
        return bool(self._tasks)

    def _bootstrap(self) -> None:
        """What a fresh API server creates by itself: system namespaces, the default RBAC roles and
        bindings, the kubernetes Service and its endpoints (refreshed at every start: the server's
        address may have changed)."""
        store = self.store
        ns_res = store.resource("v1", "Namespace")
        for ns in _SYSTEM_NAMESPACES:
            if store.get(ns_res, None, ns) is None:
                store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for obj in rbac_defaults.objects():
            res, meta = store.resource(obj["apiVersion"], obj["kind"]), obj["metadata"]
            if store.get(res, meta.get("namespace"), meta["name"]) is None:
                store.create(obj)
        if store.get(store.resource("v1", "Service"), "default", "kubernetes") is None:
            store.create({"apiVersion": "v1", "kind": "Service", "metadata": {
                "name": "kubernetes", "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": self.service_ip, "clusterIPs": [self.service_ip],
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.port}]}})
        # The API server keeps the endpoints of its own Service (it has no selector).
        port = {"name": "https", "port": self.port, "protocol": "TCP"}
        endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {
            "name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": self.server_ip}], "ports": [port]}]}
        endpoint_slice = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {
            "name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4", "endpoints": [{"addresses": [self.server_ip], "conditions": {"ready": True}}],
            "ports": [port]}
        for obj in (endpoints, endpoint_slice):
            res = store.resource(obj["apiVersion"], obj["kind"])
            current = store.get(res, "default", "kubernetes")
            if current is None:
                store.create(obj)
            elif current.get("subsets", current.get("endpoints")) != obj.get("subsets", obj.get("endpoints")):
                store.update({**current, **{k: v for k, v in obj.items() if k != "metadata"}})

    # -- nodes ------------------------------------------------------------------------------------
    async def join_node(self, *, name: str, ip: str, role: str, version: str, labels: dict, taints: list[dict],
                        cores: int, memory_mib: int, disk_bytes: int, boot_id: str | None = None) -> None:
        """Register (or refresh, after a restart) the Node a k3s server or agent reports.

        ``boot_id`` is the machine's (its /proc/sys/kernel/random/boot_id): the kubelet reports
        it, and a changed one tells the cluster the machine rebooted. Without it the Node keeps
        the one it has: a restarted k3s is not a reboot."""
        res = self.store.resource("v1", "Node")
        existing = self.store.get(res, None, name)
        known = ((existing or {}).get("status") or {}).get("nodeInfo", {}).get("bootID")
        node = _node_object(name=name, ip=ip, role=role, version=version, labels=labels, taints=taints,
                            cores=cores, memory_mib=memory_mib, disk_bytes=disk_bytes, now=self.store.now(),
                            etcd=self.embedded_etcd, pod_cidr=self._pod_cidr(existing),
                            boot_id=boot_id or known or str(uuid.uuid4()))
        folder = self.state_dir / "nodes" / name
        if existing is None or not (folder / "proc/stat").exists() or (boot_id and boot_id != known):
            nodefiles.write(folder, cores=cores, memory_mib=memory_mib, disk_bytes=disk_bytes,
                            boot_time=self.clock.now(), hostname=name)
        if existing is None:
            self.store.create(node)
            return
        existing["metadata"].setdefault("labels", {}).update(node["metadata"]["labels"])
        existing["spec"].pop("taints", None)
        if taints:
            existing["spec"]["taints"] = taints
        updated = self.store.update(existing)
        updated["status"] = {**node["status"], "conditions": updated["status"].get("conditions")
                             or node["status"]["conditions"]}
        self.store.update(updated, subresource="status")
        await self.set_node_ready(name, True)

    def _pod_cidr(self, existing: dict | None) -> str:
        """A node keeps its podCIDR; a new one gets the next free /24 of the cluster CIDR."""
        if existing is not None and (existing.get("spec") or {}).get("podCIDR"):
            return existing["spec"]["podCIDR"]
        nodes = self.store.list(self.store.resource("v1", "Node"))
        return cidrs.node_cidr(self.cluster_cidr, ((n.get("spec") or {}).get("podCIDR") for n in nodes))

    async def set_node_ready(self, name: str, ready: bool) -> None:
        res = self.store.resource("v1", "Node")
        node = self.store.get(res, None, name)
        if node is None:
            raise StoreError.not_found(res, name)
        now = self.store.now()
        status = "True" if ready else "Unknown"
        reason, message = (("KubeletReady", "kubelet is posting ready status") if ready else
                           ("NodeStatusUnknown", "Kubelet stopped posting node status."))
        conditions = node["status"].setdefault("conditions", [])
        for cond in conditions:
            if cond["type"] == "Ready":
                if cond["status"] != status:
                    cond["lastTransitionTime"] = now
                cond.update(status=status, reason=reason, message=message, lastHeartbeatTime=now)
        self.store.update(node, subresource="status")

    async def set_node_version(self, name: str, version: str) -> None:
        res = self.store.resource("v1", "Node")
        node = self.store.get(res, None, name)
        if node is None:
            raise StoreError.not_found(res, name)
        # The machine did not reboot: its boot ID stays, and so do its containers (only k3s restarted).
        node["status"]["nodeInfo"].update(kubeletVersion=version, kubeProxyVersion=version)
        self.store.update(node, subresource="status")

    # -- snapshots and manifests -------------------------------------------------------------------
    def snapshot(self) -> bytes:
        return self.store.snapshot()

    async def restore(self, data: bytes) -> None:
        self.store.restore(data)
        self.save()

    async def apply_manifest(self, obj: dict) -> None:
        """Create or update an object as k3s' deploy controller does with server/manifests files."""
        res = self.store.resource(obj.get("apiVersion", ""), obj.get("kind", ""))
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            meta.setdefault("namespace", "default")
        current = self.store.get(res, meta.get("namespace"), meta.get("name", ""))
        result = apply.server_side_apply(current or {}, obj, manager="deploy@" + self.name, group=res.group,
                                         kind=res.kind, force=True, now=self.store.now())
        result["metadata"].pop("resourceVersion", None)
        if current is None:
            self.store.create(result)
        else:
            self.store.update(result)

    async def delete_manifest(self, obj: dict) -> None:
        res = self.store.resource(obj.get("apiVersion", ""), obj.get("kind", ""))
        meta = obj.get("metadata") or {}
        self.store.delete(res, meta.get("namespace") or "default", meta.get("name", ""))


def _sans(pair: pki.KeyPair) -> list[str]:
    from cryptography import x509

    try:
        ext = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.get_values_for_type(x509.IPAddress)] + ext.get_values_for_type(x509.DNSName)


def _node_object(*, name: str, ip: str, role: str, version: str, labels: dict, taints: list[dict], cores: int,
                 memory_mib: int, disk_bytes: int, now: str, etcd: bool, pod_cidr: str, boot_id: str) -> dict:
    node_labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/instance-type": "k3s",
                   "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
                   "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "k3s"}
    if role == "server":
        node_labels.update({"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true"})
        if etcd:
            node_labels["node-role.kubernetes.io/etcd"] = "true"
    node_labels.update(labels)
    capacity = {"cpu": str(cores), "memory": f"{memory_mib * 1024}Ki", "ephemeral-storage": f"{disk_bytes // 1024}Ki",
                "pods": "110", "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    allocatable = {**capacity, "ephemeral-storage": str(int(disk_bytes * 0.97))}
    condition_rows = (("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                      ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                      ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                      ("Ready", "True", "KubeletReady", "kubelet is posting ready status"))
    spec: dict = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "providerID": f"k3s://{name}"}
    if taints:
        spec["taints"] = taints
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": node_labels, "annotations": {
            "k3s.io/hostname": name, "k3s.io/internal-ip": ip, "node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": spec,
        "status": {
            "capacity": capacity, "allocatable": allocatable,
            "conditions": [{"type": t, "status": s, "reason": r, "message": m, "lastHeartbeatTime": now,
                            "lastTransitionTime": now} for t, s, r, m in condition_rows],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex, "systemUUID": str(
                uuid.uuid5(uuid.NAMESPACE_URL, name)), "bootID": boot_id,
                "kernelVersion": image.KERNEL, "osImage": image.OS_NAME,
                "containerRuntimeVersion": "containerd://2.1.5-k3s1", "kubeletVersion": version,
                "kubeProxyVersion": version, "operatingSystem": "linux", "architecture": "amd64"},
            "images": [],
        },
    }
