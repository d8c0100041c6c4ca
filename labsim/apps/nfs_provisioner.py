"""nfs-subdir-external-provisioner's pod (sig-storage-lib-external-provisioner): for each claim
whose StorageClass names its PROVISIONER_NAME, a folder ``${namespace}-${pvcName}-${pvName}``
in the export it mounts (NFS_SERVER:NFS_PATH, mode 0777) and a PV pointing there (``spec.nfs``,
the class's reclaimPolicy and mountOptions), pre-bound to the claim; when such a PV is Released
with policy Delete, its folder is renamed ``archived-…`` (class parameter ``archiveOnDelete``,
default) or removed (``archiveOnDelete: "false"``, or ``onDelete: delete``; ``onDelete: retain``
keeps it) and the PV deleted. An export that does not answer fails the claim with the library's
``ProvisioningFailed`` event (retried), as a soft-mounted export would. Events and wording as
the real provisioner's."""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

from labsim.apps.pods import env, labelled, ready_pods
from labsim.kube.controllers.events import WARNING, EventRecorder
from labsim.kube.controllers.workqueue import Controller, Key
from labsim.nas import exports

POD_LABELS = {"app": "nfs-subdir-external-provisioner"}
MOUNT_PATH = "/persistentvolumes"  # where the pod mounts the export: the paths its messages name
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
RETRY_SECONDS = 5.0  # real seconds before a failed claim or deletion is tried again


class NfsProvisioner(Controller):
    name = "nfs-subdir-external-provisioner"

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self.claims = self.res("v1", "PersistentVolumeClaim")
        self.volumes = self.res("v1", "PersistentVolume")
        self.classes = self.res("storage.k8s.io/v1", "StorageClass")
        self.pods = self.res("v1", "Pod")
        self._recorders: dict[str, EventRecorder] = {}

    def watches(self):
        return [(self.claims, lambda t, pvc: [("claim", pvc["metadata"]["namespace"], pvc["metadata"]["name"])]),
                (self.volumes, lambda t, pv: [("volume", pv["metadata"]["name"])]),
                (self.pods, labelled(POD_LABELS))]

    async def reconcile(self, key: Key) -> None:
        if key == "pods":  # a provisioner pod came or went: look at everything again
            for pvc in self.store.list(self.claims):
                self.queue.add(("claim", pvc["metadata"]["namespace"], pvc["metadata"]["name"]))
            for pv in self.store.list(self.volumes):
                self.queue.add(("volume", pv["metadata"]["name"]))
        elif key[0] == "claim":
            self._claim(key)
        else:
            self._volume(key)

    def _instances(self) -> dict[str, dict[str, str]]:
        """PROVISIONER_NAME -> the environment of a Ready provisioner pod. One without its three
        variables provisions nothing (the real one exits at start: "NFS_SERVER not set")."""
        return {e["PROVISIONER_NAME"]: e for e in map(env, ready_pods(self.store, POD_LABELS))
                if all(e.get(k) for k in ("PROVISIONER_NAME", "NFS_SERVER", "NFS_PATH"))}

    def _events(self, settings: dict[str, str]) -> EventRecorder:
        name = settings["PROVISIONER_NAME"]
        if name not in self._recorders:
            self._recorders[name] = EventRecorder(self.store, self.clock, name)
        return self._recorders[name]

    # -- provisioning ---------------------------------------------------------------------------
    def _claim(self, key: Key) -> None:
        pvc = self.store.get(self.claims, key[1], key[2])
        if pvc is None or pvc["metadata"].get("deletionTimestamp") or pvc["spec"].get("volumeName"):
            return
        sc = self.store.get(self.classes, None, pvc["spec"].get("storageClassName") or "")
        settings = self._instances().get((sc or {}).get("provisioner", ""))
        if sc is None or settings is None:
            return
        pv_name = f"pvc-{pvc['metadata']['uid']}"
        if self.store.get(self.volumes, None, pv_name) is not None:
            return
        events, claim = self._events(settings), f"{key[1]}/{key[2]}"
        if pvc["spec"].get("selector"):
            events.record(pvc, "ProvisioningFailed", f'failed to provision volume with StorageClass '
                          f'"{sc["metadata"]["name"]}": claim Selector is not supported', WARNING)
            return
        events.record(pvc, "Provisioning", f'External provisioner is provisioning volume for claim "{claim}"')
        folder_name = f"{key[1]}-{key[2]}-{pv_name}"
        try:
            folder = exports.folder(settings["NFS_SERVER"], settings["NFS_PATH"]) / folder_name
            folder.mkdir(mode=0o777, parents=True, exist_ok=True)
            os.chmod(folder, 0o777)
        except OSError as error:
            events.record(pvc, "ProvisioningFailed", f'failed to provision volume with StorageClass '
                          f'"{sc["metadata"]["name"]}": unable to create directory to provision new pv: '
                          f"mkdir {MOUNT_PATH}/{folder_name}: {error.strerror.lower()}", WARNING)
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self.queue.add, key)
            return
        self.store.create(_volume(pvc, sc, pv_name, settings, folder_name))
        events.record(pvc, "ProvisioningSucceeded", f"Successfully provisioned volume {pv_name}")

    # -- deleting -------------------------------------------------------------------------------
    def _volume(self, key: Key) -> None:
        pv = self.store.get(self.volumes, None, key[1])
        if pv is None or (pv.get("status") or {}).get("phase") != "Released" \
                or pv["spec"].get("persistentVolumeReclaimPolicy") != "Delete":
            return
        settings = self._instances().get((pv["metadata"].get("annotations") or {}).get(PROVISIONED_BY, ""))
        if settings is None or "nfs" not in pv["spec"]:
            return
        sc = self.store.get(self.classes, None, pv["spec"].get("storageClassName") or "")
        try:
            self._remove_folder(pv, (sc or {}).get("parameters") or {}, settings)
        except OSError as error:
            self._events(settings).record(pv, "VolumeFailedDelete", f"{error.strerror.lower()}", WARNING)
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self.queue.add, key)
            return
        self.store.delete(self.volumes, None, pv["metadata"]["name"])

    @staticmethod
    def _remove_folder(pv: dict, parameters: dict, settings: dict[str, str]) -> None:
        """Archive or delete the volume's folder, as Delete() of the real provisioner."""
        export = exports.folder(settings["NFS_SERVER"], settings["NFS_PATH"])
        base = os.path.basename(pv["spec"]["nfs"]["path"].rstrip("/"))
        folder = export / base
        if not folder.exists():
            return  # "path ... does not exist, deletion skipped"
        on_delete = parameters.get("onDelete", "")
        if on_delete == "retain":
            return
        if on_delete == "delete" or parameters.get("archiveOnDelete", "true").lower() in ("false", "0", "f"):
            shutil.rmtree(folder)
            return
        folder.rename(export / f"archived-{base}")


def _volume(pvc: dict, sc: dict, name: str, settings: dict[str, str], folder: str) -> dict:
    spec: dict = {
        "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
        "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
        "capacity": {"storage": ((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage", "1Gi")},
        "nfs": {"server": settings["NFS_SERVER"], "path": f"{settings['NFS_PATH'].rstrip('/')}/{folder}"},
        "storageClassName": sc["metadata"]["name"], "volumeMode": pvc["spec"].get("volumeMode", "Filesystem"),
        "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": pvc["metadata"]["namespace"],
                     "name": pvc["metadata"]["name"], "uid": pvc["metadata"]["uid"],
                     "resourceVersion": pvc["metadata"].get("resourceVersion")}}
    if sc.get("mountOptions"):
        spec["mountOptions"] = list(sc["mountOptions"])
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: settings["PROVISIONER_NAME"]}},
            "spec": spec}
