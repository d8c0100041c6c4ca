"""Container filesystems: a folder per container, ``<cluster state>/pods/<uid>/<container>/root``,
laid out from the image model and the kubelet's own files (/etc/hosts, resolv.conf, hostname),
with the pod's volumes mounted as symlinks to their folders:

- emptyDir: ``pods/<uid>/volumes/<name>`` (gone with the pod);
- configMap, secret, downwardAPI, projected (the service-account token, ca.crt and namespace
  at /var/run/secrets/kubernetes.io/serviceaccount, as admission adds it): files written from
  the objects at container start;
- hostPath: ``nodes/<node>/<path>`` (the node's folder as the runtime sees it);
- nfs, and a persistentVolumeClaim bound to an NFS PV: the folder on the lab's NAS
  (labsim.nas.exports), shared by every pod on every node and seen from the NAS; an NFS server
  that is not the lab's NAS: ``nfs/<server>/<path>``;
- persistentVolumeClaim: its PersistentVolume's folder (hostPath on the pod's node, or NFS as
  above), so PVC data outlives pods and lab restarts.

readOnly mounts are writable here (not modelled).
"""

from __future__ import annotations

import base64
import errno
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from labsim.clock import Clock
from labsim.kube import tokens
from labsim.kube.controllers.quantity import parse_quantity
from labsim.nas import exports
from labsim.net import cidrs
from labsim.node.model import NodeModel, normpath
from labsim.node.spec import NodeSpec
from labsim.runtime.images import ImageModel, model_for
from labsim.runtime.podnet import PodNetwork

if TYPE_CHECKING:
    from labsim.kube.cluster import Cluster
    from labsim.runtime.tools import RealTools

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 3607  # what the kubelet asks for a projected token
# ...which the API server extends to a year (--service-account-extend-token-expiration, on by
# default), so a program reading the token once (Traefik) outlives a jump of the lab clock.
EXTENDED_SECONDS = 365 * 24 * 3600
_DIRECTORIES = ("/bin", "/usr/bin", "/usr/local/bin", "/etc", "/tmp", "/root", "/var", "/var/run", "/home", "/dev",
                "/proc")


class ContainerFS(NodeModel):
    """A container's files, as the node shell model works on them. Its processes run on real
    time (``sleep 3600`` in a container lasts an hour whatever the lab's time scale)."""

    def __init__(self, spec: NodeSpec, folder: Path, image: ImageModel, pod_network: PodNetwork) -> None:
        super().__init__(spec, None, folder)
        self.image, self.pod_network = image, pod_network  # what its curl and wget reach
        self.tools: RealTools | None = None  # a real program's client tools, run for real (labsim.runtime.tools)
        self._clock = Clock(1.0)

    @property
    def clock(self) -> Clock:
        return self._clock

    def write(self, path: str, data: bytes, *args, **kwargs) -> None:
        """As the node model's, but data written into the export of a full NAS fails as over NFS
        (ENOSPC; creating or truncating the file still works, as there)."""
        if data and exports.full(self.host_path(normpath(path)).resolve()):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        super().write(path, data, *args, **kwargs)

    def program_path(self, name: str) -> str | None:
        """Where ``name`` lives in this image, or None: the shell then answers "not found"."""
        base = name.rsplit("/", 1)[-1]
        if base not in self.image.programs and not (self.tools and self.tools.has(base)):
            return None
        return name if name.startswith("/") else f"/bin/{base}"


def pod_dir(cluster: Cluster, uid: str) -> Path:
    return cluster.state_dir / "pods" / uid


def build(cluster: Cluster, pod: dict, container: dict) -> ContainerFS:
    """The container's filesystem, (re)written from the pod and the objects its volumes name."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    folder = pod_dir(cluster, meta["uid"]) / container["name"]
    ip = status.get("podIP") or ""
    node = NodeSpec(vmid=0, name=meta["name"], ip=ip, user="root", authorized_keys=[], cores=1,
                    memory_mib=1024, disk_bytes=8 << 30)
    fs = ContainerFS(node, folder, model_for(container.get("image", "")), PodNetwork(cluster, ip))
    fs.root.mkdir(parents=True, exist_ok=True)
    for path in (*_DIRECTORIES, container.get("workingDir") or "/"):
        fs.host_path(path).mkdir(parents=True, exist_ok=True)
    os.chmod(fs.host_path("/tmp"), 0o1777)
    dns = _cluster_dns(cluster)
    files = {"/etc/os-release": fs.image.os_release, "/etc/hostname": f"{meta['name']}\n",
             "/etc/hosts": f"127.0.0.1\tlocalhost\n{ip}\t{meta['name']}\n" if ip else "127.0.0.1\tlocalhost\n",
             "/etc/resolv.conf": f"search {meta['namespace']}.svc.cluster.local svc.cluster.local cluster.local\n"
                                 f"nameserver {dns}\noptions ndots:5\n",
             "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
             "/etc/group": "root:x:0:\nnogroup:x:65534:\n"}
    files.update(_cgroup_files(cluster, pod, container))
    for path, text in files.items():
        fs.host_path(path).parent.mkdir(parents=True, exist_ok=True)
        fs.host_path(path).write_text(text)
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mounts = list(container.get("volumeMounts") or [])
    if spec.get("automountServiceAccountToken") is not False and not any(m["mountPath"] == SA_DIR for m in mounts):
        volumes["kube-api-access"] = {"name": "kube-api-access", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token"}}, {"configMap": {"name": "kube-root-ca.crt"}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
        mounts.append({"name": "kube-api-access", "mountPath": SA_DIR})
    for mount in mounts:
        volume = volumes.get(mount["name"])
        if volume is not None:
            _mount(fs, _volume_dir(cluster, pod, volume), mount)
    return fs


def remove(cluster: Cluster, uid: str) -> None:
    """A deleted pod's containers and emptyDirs go; PVC and hostPath folders stay."""
    shutil.rmtree(pod_dir(cluster, uid), ignore_errors=True)


def _mount(fs: ContainerFS, source: Path, mount: dict) -> None:
    if mount.get("subPath"):
        source = source / mount["subPath"]
        if not source.exists():
            source.mkdir(parents=True)
    target = fs.host_path(normpath(mount["mountPath"]))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    target.symlink_to(source.resolve())


def _volume_dir(cluster: Cluster, pod: dict, volume: dict) -> Path:
    meta = pod["metadata"]
    base = pod_dir(cluster, meta["uid"]) / "volumes" / volume["name"]
    if "hostPath" in volume:
        return _host_folder(cluster, pod["spec"].get("nodeName", ""), volume["hostPath"]["path"])
    if "persistentVolumeClaim" in volume:
        return _claim_folder(cluster, pod, volume["persistentVolumeClaim"]["claimName"], base)
    if "nfs" in volume:
        return _nfs_folder(cluster, volume["nfs"])
    base.mkdir(parents=True, exist_ok=True)
    if "emptyDir" in volume:
        return base
    for name, data in _projected_files(cluster, pod, volume).items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return base


def _host_folder(cluster: Cluster, node: str, path: str) -> Path:
    folder = cluster.state_dir / "nodes" / node / normpath(path).lstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _claim_folder(cluster: Cluster, pod: dict, claim: str, fallback: Path) -> Path:
    store = cluster.store
    pvc = store.get(store.resource("v1", "PersistentVolumeClaim"), pod["metadata"]["namespace"], claim) or {}
    pv_name = (pvc.get("spec") or {}).get("volumeName")
    pv = store.get(store.resource("v1", "PersistentVolume"), None, pv_name) if pv_name else None
    spec = (pv or {}).get("spec") or {}
    if "hostPath" in spec:
        return _host_folder(cluster, pod["spec"].get("nodeName", ""), spec["hostPath"]["path"])
    if "nfs" in spec:
        folder = _nfs_folder(cluster, spec["nfs"])
    elif "local" in spec:
        return _host_folder(cluster, pod["spec"].get("nodeName", ""), spec["local"]["path"])
    else:
        folder = cluster.state_dir / "volumes" / (pv_name or f"{pod['metadata']['namespace']}-{claim}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder if pv is not None else fallback


def _nfs_folder(cluster: Cluster, source: dict) -> Path:
    """An NFS mount: the lab's NAS serves it (a NAS that does not answer fails the mount), any
    other server is a folder of the cluster's own."""
    if exports.known(source["server"]):
        return exports.folder(source["server"], source["path"])
    return cluster.state_dir / "nfs" / source["server"] / source["path"].lstrip("/")


def _projected_files(cluster: Cluster, pod: dict, volume: dict) -> dict[str, bytes]:
    """The files of a configMap, secret, downwardAPI or projected volume."""
    sources = (volume.get("projected") or {}).get("sources") or [volume]
    files: dict[str, bytes] = {}
    for source in sources:
        if "serviceAccountToken" in source:
            files[source["serviceAccountToken"].get("path", "token")] = _token(cluster, pod, source)
        for kind, key in (("configMap", "name"), ("secret", "secretName"), ("secret", "name")):
            ref = source.get(kind)
            if ref and ref.get(key):
                files.update(_object_files(cluster, pod, kind, ref, ref[key]))
        for item in (source.get("downwardAPI") or {}).get("items") or []:
            field = (item.get("fieldRef") or {}).get("fieldPath", "")
            files[item["path"]] = field_value(pod, field).encode()
    return files


def _object_files(cluster: Cluster, pod: dict, kind: str, ref: dict, name: str) -> dict[str, bytes]:
    store = cluster.store
    obj = store.get(store.resource("v1", "ConfigMap" if kind == "configMap" else "Secret"),
                    pod["metadata"]["namespace"], name) or {}
    if kind == "configMap":
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    else:
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    items = ref.get("items")
    if items:
        return {item["path"]: data[item["key"]] for item in items if item["key"] in data}
    return data


def _token(cluster: Cluster, pod: dict, source: dict) -> bytes:
    store, meta = cluster.store, pod["metadata"]
    account = pod["spec"].get("serviceAccountName") or "default"
    sa = store.get(store.resource("v1", "ServiceAccount"), meta["namespace"], account) or {}
    seconds = int(source["serviceAccountToken"].get("expirationSeconds") or TOKEN_SECONDS)
    seconds = EXTENDED_SECONDS if seconds == TOKEN_SECONDS else seconds
    audience = source["serviceAccountToken"].get("audience")
    token, _ = tokens.issue(cluster.token, meta["namespace"], account, (sa.get("metadata") or {}).get("uid", ""),
                            audiences=[audience] if audience else [], seconds=seconds, now=cluster.now())
    return token.encode()


def field_value(pod: dict, path: str) -> str:
    """A downward-API field: metadata.name/namespace/uid, spec.nodeName, status.podIP..."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    values = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
              "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
              "status.podIP": status.get("podIP", ""), "status.hostIP": status.get("hostIP", "")}
    if path in ("metadata.labels", "metadata.annotations"):
        return "\n".join(f'{k}="{v}"' for k, v in sorted((meta.get(path.split(".")[1]) or {}).items()))
    return values.get(path, "")


def _cluster_dns(cluster: Cluster) -> str:
    store = cluster.store
    dns = store.get(store.resource("v1", "Service"), "kube-system", "kube-dns")
    return ((dns or {}).get("spec") or {}).get("clusterIP") or cidrs.cluster_dns_ip(cluster.service_cidr)


def _cgroup_files(cluster: Cluster, pod: dict, container: dict) -> dict[str, str]:
    """What a container sees of its limits and its node: cgroup v2's memory.max and cpu.max from
    ``resources.limits`` ("max" without), /proc/meminfo and /proc/cpuinfo of its node's capacity
    (programs size themselves from these: Ollama reads memory.max, then /proc/meminfo)."""
    limits = (container.get("resources") or {}).get("limits") or {}
    cores, memory = node_capacity(cluster, pod["spec"].get("nodeName", ""))
    memory_max = str(int(parse_quantity(limits["memory"]))) if "memory" in limits else "max"
    cpu_max = f"{int(parse_quantity(limits['cpu']) * 100000)} 100000" if "cpu" in limits else "max 100000"
    kib = memory // 1024
    return {"/sys/fs/cgroup/memory.max": f"{memory_max}\n", "/sys/fs/cgroup/cpu.max": f"{cpu_max}\n",
            "/proc/meminfo": f"MemTotal:       {kib} kB\nMemFree:        {kib} kB\nMemAvailable:   {kib} kB\n",
            "/proc/cpuinfo": "".join(f"processor\t: {n}\nmodel name\t: QEMU Virtual CPU\n\n" for n in range(cores))}


def node_capacity(cluster: Cluster, node: str) -> tuple[int, int]:
    """(cores, memory bytes) of a node as its status reports them (1 core, 1 GiB if unknown)."""
    store = cluster.store
    found = store.get(store.resource("v1", "Node"), None, node) if node else None
    capacity = ((found or {}).get("status") or {}).get("capacity") or {}
    return (max(1, math.ceil(parse_quantity(capacity.get("cpu", "1")))),
            int(parse_quantity(capacity.get("memory", "1Gi"))))


def resource_value(cluster: Cluster, pod: dict, ref: dict) -> str:
    """A downward-API ``resourceFieldRef`` (limits.cpu, limits.memory, requests.*): the
    container's value in units of ``divisor``, rounded up; a limit not set is the node's
    capacity, as the kubelet reports allocatable."""
    containers = pod["spec"].get("containers") or []
    container = next((c for c in containers if c["name"] == ref.get("containerName")), containers[0] if containers else {})
    kind, _, resource = ref.get("resource", "").partition(".")
    resources = container.get("resources") or {}
    quantity = (resources.get(kind) or {}).get(resource)
    if quantity is None and kind == "requests":
        quantity = (resources.get("limits") or {}).get(resource)
    if quantity is None:
        cores, memory = node_capacity(cluster, pod["spec"].get("nodeName", ""))
        amount = float(cores if resource == "cpu" else memory)
    else:
        amount = parse_quantity(quantity)
    return str(math.ceil(amount / parse_quantity(ref.get("divisor") or "1")))
