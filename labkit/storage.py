"""Storage from the NAS (notebook 03): the nfs-subdir-external-provisioner's StorageClass as the
cluster's default, proved by using it: a claim binds, a pod on one node writes a file, a pod on
another node reads it back, and the NAS shows the volume's folder in its export (over SSH).

The chart itself goes through ``labkit.charts`` (its values derived from the lab file's ``nfs``
section); this module adds what the chart does not do and the checks that use it.
"""

from __future__ import annotations

import shlex
import uuid
from dataclasses import dataclass, replace

import pandas as pd
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from labkit import kube
from labkit.changes import Change, Check, Plan
from labkit.errors import KubeError, LabError
from labkit.infra import PROBE_NAMESPACE
from labkit.params import Lab
from labkit.ssh import NAS, Session

DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
LOCAL_PATH = "local-path"  # k3s' own default StorageClass
PROBE = "labkit-probe"
PROBE_FILE = "probe.txt"
PROBE_IMAGE = "busybox:1.37"


class StorageError(LabError):
    """The NFS storage class did not provision, or the volume did not hold the data."""


# -- the nodes' NFS client --------------------------------------------------------------------------
NFS_CLIENT = "nfs-common"  # mount.nfs, which the kubelet mounts NFS volumes with, and showmount


def plan_nfs_client(session: Session, lab: Lab, *, timeout: float = 60) -> Plan[Change]:
    """nfs-common on every node: the kubelet mounts the export on whichever node a pod lands, with
    nfs-common's mount.nfs; the nodes without it get it installed."""
    missing = _nodes_without(session, [n.name for n in lab.nodes], f"dpkg-query -W -f '${{Status}}' {NFS_CLIENT}",
                             "install ok installed", f"whether {NFS_CLIENT} is installed", timeout)
    return Plan([Change(f"{NFS_CLIENT}/{name}", "install", "the kubelet mounts NFS volumes with its mount.nfs")
                 for name in missing])


def apply_nfs_client(session: Session, plan: Plan[Change], *, dry_run: bool = False,
                     timeout: float = 600) -> list[Change]:
    """``apt-get install -y nfs-common`` on the nodes the plan names."""
    if dry_run or not plan.items:
        return []
    _run_on_planned(session, plan, f"apt-get install -y {NFS_CLIENT}", f"installing {NFS_CLIENT}", timeout,
                    ". Check the node's apt sources and network (sudo apt-get update), then run again")
    return list(plan.changes())


def _nodes_without(session: Session, nodes: list[str], command: str, expected: str, what: str,
                   timeout: float) -> list[str]:
    """The nodes where ``command`` does not print ``expected``; a node that cannot be asked stops the plan."""
    missing = []
    for name, probe in session.collect(nodes, {"probe": command}, timeout=timeout).items():
        if probe.error:
            raise StorageError(f"{name}: cannot ask {what}: {probe.error}")
        if probe.stdout("probe").strip() != expected:
            missing.append(name)
    return missing


def _run_on_planned(session: Session, plan: Plan[Change], command: str, what: str, timeout: float,
                    hint: str = "") -> None:
    """``command`` as root on the node each planned ``<thing>/<node>`` names; failures named per node."""
    nodes = [c.target.split("/", 1)[1] for c in plan.items]
    results = session.fan_out(nodes, command, sudo=True, timeout=timeout, check=False)
    failed = {name: _last_line(r.stderr or r.stdout) for name, r in results.items() if not r.ok}
    if failed:
        raise StorageError(f"{what} failed on " + "; ".join(f"{n}: {why}" for n, why in failed.items()) + hint)


def verify_exports(session: Session, lab: Lab, *, timeout: float = 60) -> Check:
    """The NAS exports ``nfs.path`` to every node: ``showmount -e`` (the NFS MOUNT protocol's
    export list, what a mount asks for first) from each node lists it."""
    server, path = lab.nfs.server, lab.nfs.path
    probes = session.collect([n.name for n in lab.nodes],
                             {"exports": f"showmount -e --no-headers {shlex.quote(server)}"}, timeout=timeout)
    problems = []
    for name, probe in probes.items():
        result = probe.results.get("exports")
        if probe.error or result is None:
            problems.append(f"{name}: {probe.error}")
        elif not result.ok:
            problems.append(f"{name}: showmount -e {server}: {_last_line(result.stderr or result.stdout)}")
        elif path not in (listed := [line.split()[0] for line in result.stdout.splitlines() if line.strip()]):
            problems.append(f"{name}: {server} exports {', '.join(listed) or 'nothing'}, not {path}")
    remedy = (f". Check that the NAS answers NFS and exports {path} to the nodes' addresses (Synology: Shared "
              "Folder > Edit > NFS Permissions), and that nfs.server/nfs.path are right") if problems else ""
    return Check(f"the NAS exports {path} to every node (showmount -e)", not problems,
                 "; ".join(problems) + remedy or f"listed from {len(probes)} nodes")


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no output"


# -- the default class ------------------------------------------------------------------------------


def plan_default_class(api: client.ApiClient, lab: Lab) -> Plan[Change]:
    """With ``nfs.default_class``, k3s' local-path must stop being a default too: a cluster with two
    default classes gives a claim without a class whichever was made last."""
    if not lab.nfs.default_class:
        return Plan([])
    found = _storage_class(api, LOCAL_PATH)
    if found is None or (found.metadata.annotations or {}).get(DEFAULT_CLASS) != "true":
        return Plan([Change(f"StorageClass/{LOCAL_PATH}", "unchanged", "not a default class")])
    return Plan([Change(f"StorageClass/{LOCAL_PATH}", "update",
                        f"no longer the default class: {lab.nfs.storage_class} is")])


def apply_default_class(api: client.ApiClient, plan_: Plan[Change], *, dry_run: bool = False) -> list[Change]:
    done = [c for c in plan_.changes() if c.is_change and not dry_run]
    patch = {"metadata": {"annotations": {DEFAULT_CLASS: "false"}}}
    if done:
        kube.request("demote local-path", lambda: client.StorageV1Api(api).patch_storage_class(LOCAL_PATH, patch))
    return done


# k3s writes and applies its packaged local-storage.yaml at every start (a reboot, an upgrade, 07's
# etcd restore), which makes local-path a default class again (k3s-io/k3s#4083). A ``.skip`` file
# beside it, k3s' own switch for a packaged manifest, keeps the demotion.
LOCAL_STORAGE_SKIP = "/var/lib/rancher/k3s/server/manifests/local-storage.yaml.skip"


def plan_local_storage_skip(session: Session, lab: Lab, *, timeout: float = 60) -> Plan[Change]:
    """With ``nfs.default_class``: the servers without the ``.skip`` file get it."""
    if not lab.nfs.default_class:
        return Plan([])
    missing = _nodes_without(session, [n.name for n in lab.servers],
                             f"test -e {LOCAL_STORAGE_SKIP} && echo present || echo absent", "present",
                             f"whether {LOCAL_STORAGE_SKIP} exists", timeout)
    return Plan([Change(f"local-storage.yaml.skip/{name}", "create",
                        "k3s no longer re-applies local-path as a default class when it starts") for name in missing])


def apply_local_storage_skip(session: Session, plan: Plan[Change], *, dry_run: bool = False,
                             timeout: float = 60) -> list[Change]:
    if dry_run or not plan.items:
        return []
    _run_on_planned(session, plan, f"touch {LOCAL_STORAGE_SKIP}", f"creating {LOCAL_STORAGE_SKIP}", timeout)
    return list(plan.changes())


def _storage_class(api: client.ApiClient, name: str) -> client.V1StorageClass | None:
    try:
        return client.StorageV1Api(api).read_storage_class(name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise KubeError(f"read StorageClass {name}: API server answered {exc.status} {exc.reason}") from None


def classes(api: client.ApiClient) -> pd.DataFrame:
    """StorageClasses: name, provisioner, default, reclaim policy, binding mode."""
    found = kube.request("list storage classes", lambda: client.StorageV1Api(api).list_storage_class()).items
    rows = [{"name": sc.metadata.name, "provisioner": sc.provisioner,
             "default": (sc.metadata.annotations or {}).get(DEFAULT_CLASS) == "true",
             "reclaim_policy": sc.reclaim_policy, "binding_mode": sc.volume_binding_mode,
             "archive_on_delete": (sc.parameters or {}).get("archiveOnDelete", "")} for sc in found]
    return pd.DataFrame(rows, columns=["name", "provisioner", "default", "reclaim_policy", "binding_mode",
                                       "archive_on_delete"])


def verify_class(api: client.ApiClient, lab: Lab) -> list[Check]:
    table = classes(api)
    mine = table[table["name"] == lab.nfs.storage_class]
    defaults = sorted(table[table["default"]]["name"])
    want_default = [lab.nfs.storage_class] if lab.nfs.default_class else defaults
    return [
        Check(f"StorageClass {lab.nfs.storage_class} exists", not mine.empty,
              mine.iloc[0]["provisioner"] if not mine.empty else "absent: is the NFS provisioner chart installed?"),
        Check("default StorageClass as the lab file says", defaults == want_default,
              f"default: {', '.join(defaults) or 'none'}"),
    ]


# -- the probe: bind, write on one node, read on another -----------------------------------------------


@dataclass(frozen=True)
class VolumeProbe:
    claim: str
    storage_class: str
    volume: str = ""
    folder: str = ""  # the volume's folder on the NAS (the PV's nfs.path)
    writer_node: str = ""
    reader_node: str = ""
    written: str = ""
    read: str = ""
    error: str = ""  # why it did not get further ("not probed: dry run")

    def checks(self) -> list[Check]:
        return [
            Check(f"PVC on {self.storage_class} binds", bool(self.volume), f"{self.claim} -> {self.volume or self.error}"),
            Check("a pod on another node reads what one wrote", bool(self.written) and self.read.strip() == self.written,
                  f"written on {self.writer_node}, read on {self.reader_node}: {self.read.strip()[:60]!r}"
                  if self.written else self.error),
        ]


def probe_volume(api: client.ApiClient, lab: Lab, *, timeout: float = 180, dry_run: bool = False) -> VolumeProbe:
    """A claim on the NFS class, written by a pod on one node and read by a pod on another (a dry
    run probes nothing)."""
    probe = VolumeProbe(f"{PROBE_NAMESPACE}/{PROBE}", lab.nfs.storage_class)
    if dry_run:
        return replace(probe, error="not probed: dry run")
    writer, reader = _two_nodes(api)
    kube.ensure_namespace(api, PROBE_NAMESPACE)
    _create_claim(api, lab)
    volume = wait_bound(api, PROBE_NAMESPACE, PROBE, timeout=timeout)
    run = uuid.uuid4().hex[:12]  # in the pods' names too: a run never reads an earlier run's pod or log
    token = f"written by labkit {run}"
    kube.run_pod(api, _pod(f"write-{run}", writer, f"echo {shlex.quote(token)} > /data/{PROBE_FILE}"), timeout=timeout)
    read = kube.run_pod(api, _pod(f"read-{run}", reader, f"cat /data/{PROBE_FILE}"), timeout=timeout)
    pv = client.CoreV1Api(api).read_persistent_volume(volume)
    return replace(probe, volume=volume, folder=pv.spec.nfs.path if pv.spec.nfs else "", writer_node=writer,
                   reader_node=reader, written=token, read=read)


def _two_nodes(api: client.ApiClient) -> tuple[str, str]:
    nodes = kube.node_table(api)
    ready = list(nodes[nodes["ready"] & ~nodes["unschedulable"]]["name"])
    if len(ready) < 2:
        raise StorageError(f"the volume probe needs two Ready, schedulable nodes; found {', '.join(ready) or 'none'}")
    return ready[-1], ready[-2]  # workers first (sorted names: k3s-master comes first)


def _create_claim(api: client.ApiClient, lab: Lab) -> None:
    try:
        client.CoreV1Api(api).create_namespaced_persistent_volume_claim(PROBE_NAMESPACE, _claim(lab))
    except ApiException as exc:
        if exc.status != 409:  # 409: kept from an earlier run (keep_probes)
            raise KubeError(f"create the probe PVC: API server answered {exc.status} {exc.reason}") from None


def _claim(lab: Lab) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": PROBE, "namespace": PROBE_NAMESPACE, "labels": {"app": PROBE}},
            "spec": {"storageClassName": lab.nfs.storage_class, "accessModes": ["ReadWriteMany"],
                     "resources": {"requests": {"storage": "16Mi"}}}}


def _pod(role: str, node: str, script: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{PROBE}-{role}", "namespace": PROBE_NAMESPACE, "labels": {"app": PROBE}},
            "spec": {"restartPolicy": "Never", "nodeSelector": {"kubernetes.io/hostname": node},
                     "containers": [{"name": role.split("-")[0], "image": PROBE_IMAGE, "command": ["sh", "-c", script],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": PROBE}}]}}


def wait_bound(api: client.ApiClient, namespace: str, name: str, *, timeout: float = 180) -> str:
    """Wait for a claim to bind; returns its volume's name. A claim that does not bind in time
    raises StorageError with what the provisioner said (its Warning events)."""
    core = client.CoreV1Api(api)

    def bound(claims) -> str | None:
        claim = next(iter(claims.items), None)
        return claim.spec.volume_name if claim and claim.status.phase == "Bound" else None

    try:
        return kube.until(core.list_namespaced_persistent_volume_claim, bound, what=f"PVC {namespace}/{name} to bind",
                          timeout=timeout, namespace=namespace, field_selector=f"metadata.name={name}")
    except KubeError:
        said = kube.warnings(api, namespace, name) or ["no Warning event: is the provisioner's pod running?"]
        raise StorageError(f"PVC {namespace}/{name} did not bind within {timeout:.0f} s; the provisioner says: "
                           f"{said[-1]}\nCheck that the NAS exports nfs.server:nfs.path to the nodes, then run "
                           "again (the claim is kept and binds once it can)") from None


# -- what the cluster and the NAS hold ------------------------------------------------------------------


def volumes(api: client.ApiClient) -> pd.DataFrame:
    """PersistentVolumes: name, class, size (MiB), claim, phase, reclaim policy and NAS folder."""
    found = kube.request("list volumes", lambda: client.CoreV1Api(api).list_persistent_volume()).items
    rows = [{"name": pv.metadata.name, "storage_class": pv.spec.storage_class_name or "",
             "size_mib": kube.memory_bytes((pv.spec.capacity or {}).get("storage", "0")) / 2**20,
             "claim": f"{pv.spec.claim_ref.namespace}/{pv.spec.claim_ref.name}" if pv.spec.claim_ref else "",
             "phase": pv.status.phase, "reclaim_policy": pv.spec.persistent_volume_reclaim_policy,
             "folder": pv.spec.nfs.path if pv.spec.nfs else ""} for pv in found]
    return pd.DataFrame(rows, columns=["name", "storage_class", "size_mib", "claim", "phase", "reclaim_policy", "folder"])


@dataclass(frozen=True)
class NasView:
    export: str
    folders: list[str]
    size_bytes: int
    used_bytes: int
    probe_content: str | None  # the probe's file as the NAS holds it (None: no probe, or not there)

    def usage(self) -> pd.DataFrame:
        return pd.DataFrame([{"export": self.export, "folders": len(self.folders), "used_gib": self.used_bytes / 2**30,
                              "free_gib": (self.size_bytes - self.used_bytes) / 2**30}])


def nas_view(session: Session, lab: Lab, probe: VolumeProbe | None = None, timeout: float = 60) -> NasView:
    """The export as the NAS sees it, over SSH: its folders, its volume's usage and, for a probe,
    the probe's file in the probe's folder (read-only)."""
    export = lab.nfs.path
    listing = session.run(NAS, f"ls -1 {shlex.quote(export)}", timeout=timeout)
    df = session.run(NAS, f"df -B1 {shlex.quote(export)}", timeout=timeout)
    size, used = _df(df.stdout)
    content = None
    if probe is not None and probe.folder:
        found = session.run(NAS, f"cat {shlex.quote(probe.folder + '/' + PROBE_FILE)}", timeout=timeout, check=False)
        content = found.stdout.strip() if found.ok else None
    return NasView(export, sorted(line for line in listing.stdout.splitlines() if line.strip()), size, used, content)


def _df(text: str) -> tuple[int, int]:
    """Size and used bytes from ``df -B1``'s last line."""
    fields = text.strip().splitlines()[-1].split() if text.strip() else []
    try:
        return int(fields[1]), int(fields[2])
    except (IndexError, ValueError):
        return 0, 0


def nas_checks(view: NasView, probe: VolumeProbe) -> list[Check]:
    folder = probe.folder.rstrip("/").rsplit("/", 1)[-1]
    return [Check("the NAS shows the volume's folder", folder in view.folders, f"{view.export}/{folder}"),
            Check("the NAS holds what the pod wrote", view.probe_content == probe.written,
                  repr((view.probe_content or "(missing)")[:60]))]
