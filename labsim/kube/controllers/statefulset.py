"""The StatefulSet controller: pods ``<name>-<ordinal>`` with stable hostnames, a claim per
volumeClaimTemplate and ordinal (``<template>-<name>-<ordinal>``), created in order (OrderedReady:
each waits for its predecessor to be Ready) or all at once (Parallel), removed highest ordinal
first; RollingUpdate from the highest ordinal down to the partition, one pod at a time; and
ControllerRevisions plus the status ``kubectl rollout status sts`` reads. A pod is replaced only
once its predecessor is gone (deleted gracefully: its kubelet removes it when its processes have
exited), so two never run on the same claim."""

from __future__ import annotations

import copy

from labsim.kube.controllers.deployment import template_hash
from labsim.kube.controllers.events import EventRecorder
from labsim.kube.controllers.pods import (
    controlled_by,
    controller_ref,
    is_active,
    is_ready,
    is_terminating,
    pod_from_template,
)
from labsim.kube.controllers.revisions import ensure_revision
from labsim.kube.controllers.workqueue import Controller, Key, by_controller, by_name

POD_NAME = "statefulset.kubernetes.io/pod-name"
POD_INDEX = "apps.kubernetes.io/pod-index"
REVISION_HASH = "controller-revision-hash"


class StatefulSetController(Controller):
    name = "statefulset-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.statefulsets = self.res("apps/v1", "StatefulSet")
        self.pods = self.res("v1", "Pod")
        self.claims = self.res("v1", "PersistentVolumeClaim")
        self.events = EventRecorder(self.store, self.clock, self.name)

    def watches(self):
        return [(self.statefulsets, by_name), (self.pods, by_controller("StatefulSet"))]

    async def reconcile(self, key: Key) -> None:
        sts = self.store.get(self.statefulsets, *key)
        if sts is None or sts["metadata"].get("deletionTimestamp"):
            return
        revision = f"{sts['metadata']['name']}-{template_hash(sts['spec']['template'])}"
        ensure_revision(self.store, sts, revision)
        pods = {_ordinal(p): p for p in self.store.list(self.pods, key[0], labels=sts["spec"]["selector"]
                                                        .get("matchLabels")) if controlled_by(p, sts)}
        start = int((sts["spec"].get("ordinals") or {}).get("start", 0))
        wanted = range(start, start + int(sts["spec"].get("replicas", 1)))
        ordered = sts["spec"].get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        self._create_missing(sts, revision, pods, wanted, ordered)
        self._remove_surplus(sts, pods, wanted, ordered)
        if sts["spec"]["updateStrategy"].get("type") == "RollingUpdate":
            self._roll(sts, revision, pods, wanted)
        self._update_status(sts, revision, pods)

    def _create_missing(self, sts: dict, revision: str, pods: dict[int, dict], wanted: range, ordered: bool) -> None:
        for ordinal in wanted:
            pod = pods.get(ordinal)
            if pod is not None and is_terminating(pod):  # its successor waits until it is gone
                if ordered:
                    return
            elif pod is None or not is_active(pod):
                if pod is not None:  # a finished pod of a StatefulSet is replaced
                    self._delete(sts, pod)
                pods[ordinal] = self._create(sts, revision, ordinal)
                if ordered:
                    return
            elif ordered and not is_ready(pod):
                return

    def _create(self, sts: dict, revision: str, ordinal: int) -> dict:
        name = f"{sts['metadata']['name']}-{ordinal}"
        pod = pod_from_template(sts["spec"]["template"], sts, name=name, labels={
            POD_NAME: name, POD_INDEX: str(ordinal), REVISION_HASH: revision})
        pod["spec"]["hostname"] = name
        if sts["spec"].get("serviceName"):
            pod["spec"]["subdomain"] = sts["spec"]["serviceName"]
        volumes = list(pod["spec"].get("volumes") or [])
        for template in sts["spec"].get("volumeClaimTemplates") or []:
            claim = self._ensure_claim(sts, template, ordinal)
            volumes = [v for v in volumes if v.get("name") != template["metadata"]["name"]]
            volumes.append({"name": template["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim}})
        if volumes:
            pod["spec"]["volumes"] = volumes
        created = self.store.create(pod)
        self.events.record(sts, "SuccessfulCreate", f"create Pod {name} in StatefulSet {sts['metadata']['name']} "
                                                    "successful")
        return created

    def _ensure_claim(self, sts: dict, template: dict, ordinal: int) -> str:
        name = f"{template['metadata']['name']}-{sts['metadata']['name']}-{ordinal}"
        ns = sts["metadata"]["namespace"]
        if self.store.get(self.claims, ns, name) is None:
            meta = template.get("metadata") or {}
            claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": name, "namespace": ns,
                                  "labels": {**(sts["spec"]["selector"].get("matchLabels") or {}),
                                             **(meta.get("labels") or {})}},
                     "spec": copy.deepcopy(template.get("spec") or {})}
            if meta.get("annotations"):
                claim["metadata"]["annotations"] = dict(meta["annotations"])
            policy = sts["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
            if policy.get("whenDeleted") == "Delete":
                claim["metadata"]["ownerReferences"] = [{**controller_ref(sts), "controller": True}]
            self.store.create(claim)
            self.events.record(sts, "SuccessfulCreate", f"create Claim {name} Pod {sts['metadata']['name']}-{ordinal} "
                                                        f"in StatefulSet {sts['metadata']['name']} success")
        return name

    def _remove_surplus(self, sts: dict, pods: dict[int, dict], wanted: range, ordered: bool) -> None:
        surplus = sorted((o for o in pods if o not in wanted), reverse=True)
        for ordinal in surplus[:1] if ordered else surplus:
            self._delete(sts, pods.pop(ordinal))

    def _roll(self, sts: dict, revision: str, pods: dict[int, dict], wanted: range) -> None:
        """Replace the highest out-of-date pod at or above the partition, once all are Ready."""
        if any(o not in pods or not is_ready(pods[o]) or is_terminating(pods[o]) for o in wanted):
            return
        partition = int((sts["spec"]["updateStrategy"].get("rollingUpdate") or {}).get("partition", 0))
        for ordinal in sorted(wanted, reverse=True):
            if ordinal >= partition and _revision(pods[ordinal]) != revision:
                self._delete(sts, pods.pop(ordinal))
                return

    def _delete(self, sts: dict, pod: dict) -> None:
        self.store.delete(self.pods, pod["metadata"]["namespace"], pod["metadata"]["name"])
        self.events.record(sts, "SuccessfulDelete", f"delete Pod {pod['metadata']['name']} in StatefulSet "
                                                    f"{sts['metadata']['name']} successful")

    def _update_status(self, sts: dict, revision: str, pods: dict[int, dict]) -> None:
        active = [p for p in pods.values() if is_active(p)]
        previous = sts.get("status") or {}
        updated = sum(1 for p in active if _revision(p) == revision)
        ready = sum(1 for p in active if is_ready(p))
        replicas = int(sts["spec"].get("replicas", 1))
        current = previous.get("currentRevision") or revision
        if updated == replicas == ready == len(active):
            current = revision  # the rollout is complete
        sts["status"] = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(active),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": sum(1 for p in active if _revision(p) == current),
            "updatedReplicas": updated,
            "currentRevision": current,
            "updateRevision": revision,
            "collisionCount": 0,
        }
        self.store.update(sts, subresource="status")


def _ordinal(pod: dict) -> int:
    return int(pod["metadata"]["name"].rsplit("-", 1)[-1])


def _revision(pod: dict) -> str:
    return (pod["metadata"].get("labels") or {}).get(REVISION_HASH, "")
