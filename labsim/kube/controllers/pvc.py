"""Volume binding and dynamic provisioning: the PV controller's claim binding (static PVs first,
the default StorageClass for claims without one) and the provisioners' side, with k3s'
local-path provisioner modelled: WaitForFirstConsumer claims get a volume on the node their
first pod was scheduled to (a hostPath PV pinned there by node affinity). A claim in use is
protected (``kubernetes.io/pvc-protection``: deleting it waits for its pods); a deleted claim's
volume is reclaimed by the PV's policy. ``PROVISIONERS`` maps a StorageClass provisioner to
its in-process model; any other provisioner is external (a pod, as the NFS provisioner in
labsim.apps): the claim is annotated for it, it creates a PV pre-bound to the claim (bound
here), and a released PV of its with policy Delete is left to it to delete."""

from __future__ import annotations

from collections.abc import Callable

from labsim.kube.controllers.events import WARNING, EventRecorder
from labsim.kube.controllers.pods import TERMINAL
from labsim.kube.controllers.quantity import parse_quantity
from labsim.kube.controllers.scheduler import SELECTED_NODE
from labsim.kube.controllers.workqueue import Controller, Key

DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
PROVISIONER_ANNOTATIONS = ("volume.beta.kubernetes.io/storage-provisioner", "volume.kubernetes.io/storage-provisioner")
PROVISION_SECONDS = 1.0
PROTECTION = "kubernetes.io/pvc-protection"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"

# provisioner name -> (claim, storage class, selected node or None) -> the PV's source and node affinity
Provisioner = Callable[[dict, dict, str | None], dict]


def local_path_volume(pvc: dict, sc: dict, node: str | None) -> dict:
    """rancher.io/local-path: a directory on the node, as k3s' local-path-provisioner makes it."""
    meta = pvc["metadata"]
    path = f"/var/lib/rancher/k3s/storage/pvc-{meta['uid']}_{meta['namespace']}_{meta['name']}"
    spec: dict = {"hostPath": {"path": path, "type": "DirectoryOrCreate"}}
    if node:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    return spec


PROVISIONERS: dict[str, Provisioner] = {"rancher.io/local-path": local_path_volume}


class VolumeController(Controller):
    name = "persistentvolume-binder-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.claims = self.res("v1", "PersistentVolumeClaim")
        self.volumes = self.res("v1", "PersistentVolume")
        self.classes = self.res("storage.k8s.io/v1", "StorageClass")
        self.pods = self.res("v1", "Pod")
        self.events = EventRecorder(self.store, self.clock, self.name)
        self._pending: set[Key] = set()

    def watches(self):
        return [(self.claims, self._claim_event), (self.volumes, self._volume_event),
                (self.classes, lambda event_type, sc: list(self._pending)), (self.pods, _claims_of_pod)]

    def _claim_event(self, event_type: str, pvc: dict) -> list[Key]:
        key = (pvc["metadata"]["namespace"], pvc["metadata"]["name"])
        if event_type != "DELETED" and (pvc.get("status") or {}).get("phase") != "Bound":
            self._pending.add(key)
        else:
            self._pending.discard(key)
        return [key]

    def _volume_event(self, event_type: str, pv: dict) -> list[Key]:
        ref = (pv.get("spec") or {}).get("claimRef")
        return [(ref.get("namespace"), ref.get("name"))] if ref else list(self._pending)

    async def reconcile(self, key: Key) -> None:
        pvc = self.store.get(self.claims, *key)
        self._reclaim(key, pvc)
        if pvc is None:
            return
        if pvc["metadata"].get("deletionTimestamp"):
            self._release_protection(pvc, key)
            return
        if PROTECTION not in pvc["metadata"].get("finalizers", []):
            pvc["metadata"]["finalizers"] = [*pvc["metadata"].get("finalizers", []), PROTECTION]
            pvc = self.store.update(pvc)
        if pvc["spec"].get("volumeName"):
            pv = self.store.get(self.volumes, None, pvc["spec"]["volumeName"])
            if pv is not None:
                self._bind(pvc, pv)
            return
        if pvc["spec"].get("storageClassName") is None:
            default = self._default_class()
            if default is None:
                return
            pvc["spec"]["storageClassName"] = default  # retroactive default StorageClass assignment
            pvc = self.store.update(pvc)
        pv = self._prebound(pvc) or self._find_static(pvc)
        if pv is not None:
            self._bind(pvc, pv)
            return
        if pvc["spec"]["storageClassName"]:
            self._provision(pvc, key)

    def _release_protection(self, pvc: dict, key: Key) -> None:
        """A claim being deleted goes once no running pod uses it (the pvc-protection finalizer)."""
        if PROTECTION not in pvc["metadata"].get("finalizers", []):
            return
        users = [p for p in self.store.list(self.pods, key[0])
                 if key[1] in _claim_names(p) and (p.get("status") or {}).get("phase") not in TERMINAL]
        if not users:
            pvc["metadata"]["finalizers"] = [f for f in pvc["metadata"]["finalizers"] if f != PROTECTION]
            self.store.update(pvc)

    # -- dynamic provisioning -------------------------------------------------------------------
    def _default_class(self) -> str | None:
        """With several default classes, the newest wins (as since Kubernetes 1.26)."""
        defaults = [sc for sc in self.store.list(self.classes)
                    if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true"]
        defaults.sort(key=lambda sc: (sc["metadata"].get("creationTimestamp", ""), sc["metadata"]["name"]))
        return defaults[-1]["metadata"]["name"] if defaults else None

    def _provision(self, pvc: dict, key: Key) -> None:
        class_name = pvc["spec"]["storageClassName"]
        sc = self.store.get(self.classes, None, class_name)
        if sc is None:
            self.events.record(pvc, "ProvisioningFailed",
                               f'storageclass.storage.k8s.io "{class_name}" not found', WARNING)
            return
        node = (pvc["metadata"].get("annotations") or {}).get(SELECTED_NODE)
        if sc.get("volumeBindingMode") == "WaitForFirstConsumer" and not node:
            self.events.record(pvc, "WaitForFirstConsumer",
                               "waiting for first consumer to be created before binding")
            return
        provisioner = sc.get("provisioner", "")
        model = PROVISIONERS.get(provisioner)
        if model is None:
            self._annotate(pvc, provisioner)
            self.events.record(pvc, "ExternalProvisioning",
                               f'Waiting for a volume to be created either by the external provisioner '
                               f'"{provisioner}" or manually by the system administrator. If volume creation is '
                               "delayed, please verify that the provisioner is running and correctly registered.")
            return
        if self._annotate(pvc, provisioner):
            pvc = self.store.get(self.claims, *key) or pvc
            self.events.record(pvc, "Provisioning",
                               f'External provisioner is provisioning volume for claim "{key[0]}/{key[1]}"')
        if not self.after(("provision", pvc["metadata"]["uid"]), key, PROVISION_SECONDS,
                          f"pvc {key[0]}/{key[1]} provision by {provisioner}"):
            return
        self.forget(("provision", pvc["metadata"]["uid"]))
        pv = self.store.create(self._volume(pvc, sc, model(pvc, sc, node)))
        self.events.record(pvc, "ProvisioningSucceeded", f"Successfully provisioned volume {pv['metadata']['name']}")
        self._bind(pvc, pv)

    def _annotate(self, pvc: dict, provisioner: str) -> bool:
        """Name the claim's provisioner, as the PV controller does (the external one waits for it)."""
        annotations = pvc["metadata"].setdefault("annotations", {})
        if all(annotations.get(a) == provisioner for a in PROVISIONER_ANNOTATIONS):
            return False
        annotations.update(dict.fromkeys(PROVISIONER_ANNOTATIONS, provisioner))
        self.store.update(pvc)
        return True

    def _volume(self, pvc: dict, sc: dict, source: dict) -> dict:
        return {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"pvc-{pvc['metadata']['uid']}",
                         "annotations": {PROVISIONED_BY: sc["provisioner"]}},
            "spec": {"capacity": {"storage": ((pvc["spec"].get("resources") or {}).get("requests") or {})
                                  .get("storage", "1Gi")},
                     "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                     "storageClassName": sc["metadata"]["name"],
                     "volumeMode": pvc["spec"].get("volumeMode", "Filesystem"),
                     "claimRef": _claim_ref(pvc), **source},
        }

    # -- binding ----------------------------------------------------------------------------------
    def _prebound(self, pvc: dict) -> dict | None:
        """A PV whose claimRef already names this claim (what an external provisioner creates)."""
        uid = pvc["metadata"]["uid"]
        return next((pv for pv in self.store.list(self.volumes)
                     if (pv["spec"].get("claimRef") or {}).get("uid") == uid), None)

    def _find_static(self, pvc: dict) -> dict | None:
        """An Available PV of the claim's class that is big enough and offers its access modes."""
        wanted = parse_quantity(((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage", "0"))
        modes = set(pvc["spec"].get("accessModes") or [])
        fits = [pv for pv in self.store.list(self.volumes)
                if (pv.get("status") or {}).get("phase") in ("Available", "Pending")
                and not pv["spec"].get("claimRef")
                and (pv["spec"].get("storageClassName") or "") == pvc["spec"]["storageClassName"]
                and modes <= set(pv["spec"].get("accessModes") or [])
                and parse_quantity((pv["spec"].get("capacity") or {}).get("storage", "0")) >= wanted]
        return min(fits, key=lambda pv: parse_quantity(pv["spec"]["capacity"]["storage"]), default=None)

    def _bind(self, pvc: dict, pv: dict) -> None:
        if pv["spec"].get("claimRef", {}).get("uid") != pvc["metadata"]["uid"]:
            pv["spec"]["claimRef"] = _claim_ref(pvc)
            pv = self.store.update(pv)
        if (pv.get("status") or {}).get("phase") != "Bound":
            pv["status"] = {"phase": "Bound"}
            self.store.update(pv, subresource="status")
        if pvc["spec"].get("volumeName") != pv["metadata"]["name"]:
            pvc["spec"]["volumeName"] = pv["metadata"]["name"]
            pvc["metadata"].setdefault("annotations", {}).update({"pv.kubernetes.io/bind-completed": "yes",
                                                                  "pv.kubernetes.io/bound-by-controller": "yes"})
            pvc = self.store.update(pvc)
        pvc["status"] = {"phase": "Bound", "accessModes": pv["spec"].get("accessModes") or [],
                         "capacity": dict(pv["spec"].get("capacity") or {})}
        self.store.update(pvc, subresource="status")

    def _reclaim(self, key: Key, pvc: dict | None) -> None:
        """Volumes whose claim is gone are deleted (policy Delete) or Released (Retain)."""
        uid = pvc["metadata"]["uid"] if pvc else None
        for pv in self.store.list(self.volumes):
            ref = pv["spec"].get("claimRef") or {}
            if (ref.get("namespace"), ref.get("name")) != key or ref.get("uid") == uid \
                    or (pv.get("status") or {}).get("phase") != "Bound":
                continue
            external = (pv["metadata"].get("annotations") or {}).get(PROVISIONED_BY, "") not in ("", *PROVISIONERS)
            if pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete" and not external:
                self.store.delete(self.volumes, None, pv["metadata"]["name"])
            else:
                pv["status"] = {"phase": "Released"}
                self.store.update(pv, subresource="status")


def _claim_names(pod: dict) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in (pod.get("spec") or {}).get("volumes") or []
            if v.get("persistentVolumeClaim")]


def _claims_of_pod(event_type: str, pod: dict) -> list[Key]:
    return [(pod["metadata"]["namespace"], name) for name in _claim_names(pod)]


def _claim_ref(pvc: dict) -> dict:
    meta = pvc["metadata"]
    return {"kind": "PersistentVolumeClaim", "namespace": meta["namespace"], "name": meta["name"],
            "uid": meta["uid"], "apiVersion": "v1", "resourceVersion": meta.get("resourceVersion")}
