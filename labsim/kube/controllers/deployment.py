"""The Deployment controller: one ReplicaSet per pod template (named by the template's hash),
rolling updates within maxSurge/maxUnavailable or Recreate, revision annotations (so
``kubectl rollout history/undo`` work), old ReplicaSets pruned to revisionHistoryLimit, and
the status ``kubectl rollout status`` reads: observedGeneration, replica counts, and the
Available and Progressing conditions (with the progress deadline on the lab clock)."""

from __future__ import annotations

import copy
import json

from labsim.kube.controllers.events import EventRecorder
from labsim.kube.controllers.pods import controlled_by, controller_ref, int_or_percent, set_condition
from labsim.kube.controllers.times import parse_rfc3339
from labsim.kube.controllers.workqueue import Controller, Key, by_controller, by_name
from labsim.kube.selectors import match_label_selector

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Annotations of a Deployment not copied to its new ReplicaSet (the rest are, e.g. change-cause)
_NOT_COPIED = {REVISION, REVISION_HISTORY, DESIRED, MAX_REPLICAS,
               "kubectl.kubernetes.io/last-applied-configuration"}
_SAFE_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of Kubernetes' SafeEncodeString


class DeploymentController(Controller):
    name = "deployment-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.deployments = self.res("apps/v1", "Deployment")
        self.replicasets = self.res("apps/v1", "ReplicaSet")
        self.events = EventRecorder(self.store, self.clock, self.name)

    def watches(self):
        return [(self.deployments, by_name), (self.replicasets, by_controller("Deployment")),
                (self.res("v1", "Pod"), self._pod_gone)]

    def _pod_gone(self, event_type: str, pod: dict) -> list[Key]:
        """A pod of one of its ReplicaSets is gone: a Recreate rollout may go on."""
        owner = next((r for r in pod["metadata"].get("ownerReferences") or [] if r.get("kind") == "ReplicaSet"), None)
        if event_type != "DELETED" or owner is None:
            return []
        rs = self.store.get(self.replicasets, pod["metadata"]["namespace"], owner["name"])
        return by_controller("Deployment")("MODIFIED", rs) if rs else []

    async def reconcile(self, key: Key) -> None:
        deploy = self.store.get(self.deployments, *key)
        if deploy is None or deploy["metadata"].get("deletionTimestamp"):
            return
        owned = self._claim_replicasets(deploy)
        new = next((rs for rs in owned if _same_template(rs, deploy)), None)
        old = [rs for rs in owned if rs is not new]
        if not deploy["spec"].get("paused"):
            new = self._ensure_new(deploy, new, old)
            if deploy["spec"]["strategy"].get("type") == "Recreate":
                self._recreate(deploy, new, old)
            else:
                self._roll(deploy, new, old)
            self._prune(deploy, old)
        self._sync_status(deploy, key, new, old)

    def _claim_replicasets(self, deploy: dict) -> list[dict]:
        """ReplicaSets this Deployment controls, after adopting orphans its selector matches (as
        after ``kubectl delete deploy --cascade=orphan`` and re-create)."""
        owned = []
        for rs in self.store.list(self.replicasets, deploy["metadata"]["namespace"],
                                  labels=deploy["spec"]["selector"].get("matchLabels")):
            if controlled_by(rs, deploy):
                owned.append(rs)
            elif not any(r.get("controller") for r in rs["metadata"].get("ownerReferences") or ()) and \
                    match_label_selector(deploy["spec"]["selector"], rs["metadata"].get("labels") or {}):
                rs["metadata"]["ownerReferences"] = [*(rs["metadata"].get("ownerReferences") or []),
                                                     controller_ref(deploy)]
                owned.append(self.store.update(rs))
        return owned

    # -- the new ReplicaSet ---------------------------------------------------------------------
    def _ensure_new(self, deploy: dict, new: dict | None, old: list[dict]) -> dict:
        """The ReplicaSet of the current template, created (or, on rollback, re-revisioned)."""
        revision = max((_revision(rs) for rs in old), default=0) + 1
        if new is None:
            new = self.store.create(self._new_replicaset(deploy, revision))
        elif _revision(new) < revision:
            annotations = new["metadata"].setdefault("annotations", {})
            history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
            annotations[REVISION_HISTORY] = ",".join([*history, str(_revision(new))])
            annotations[REVISION] = str(revision)
            new = self.store.update(new)
        copied = _copied_annotations(deploy)
        if any(new["metadata"].get("annotations", {}).get(k) != v for k, v in copied.items()):
            new["metadata"].setdefault("annotations", {}).update(copied)
            new = self.store.update(new)
        if deploy["metadata"].get("annotations", {}).get(REVISION) != new["metadata"]["annotations"][REVISION]:
            deploy["metadata"].setdefault("annotations", {})[REVISION] = new["metadata"]["annotations"][REVISION]
            deploy.update(self.store.update(deploy))
        return new

    def _new_replicaset(self, deploy: dict, revision: int) -> dict:
        template = copy.deepcopy(deploy["spec"]["template"])
        pod_hash = template_hash(template)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(deploy["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        desired = int(deploy["spec"].get("replicas", 1))
        return {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": f"{deploy['metadata']['name']}-{pod_hash}",
                "namespace": deploy["metadata"]["namespace"],
                "labels": template["metadata"]["labels"],
                "annotations": {**_copied_annotations(deploy), REVISION: str(revision), DESIRED: str(desired),
                                MAX_REPLICAS: str(desired + _max_surge(deploy))},
                "ownerReferences": [controller_ref(deploy)],
            },
            "spec": {"replicas": 0, "minReadySeconds": deploy["spec"].get("minReadySeconds", 0),
                     "selector": selector, "template": template},
        }

    # -- strategies -------------------------------------------------------------------------------
    def _recreate(self, deploy: dict, new: dict, old: list[dict]) -> None:
        """Recreate: every old pod is gone (not only Terminating) before the new ReplicaSet scales up."""
        for rs in old:
            self._scale(deploy, rs, 0)
        if all(int((rs.get("status") or {}).get("replicas", 0)) == 0 for rs in old) and not self._old_pods(old):
            self._scale(deploy, new, int(deploy["spec"].get("replicas", 1)))

    def _old_pods(self, old: list[dict]) -> list[dict]:
        pods = self.store.list(self.res("v1", "Pod"), old[0]["metadata"]["namespace"]) if old else []
        return [p for p in pods if any(controlled_by(p, rs) for rs in old)
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]

    def _roll(self, deploy: dict, new: dict, old: list[dict]) -> None:
        """RollingUpdate, as the real controller steps it: scale the new ReplicaSet up within
        maxSurge, then the old ones down as far as maxUnavailable allows."""
        desired = int(deploy["spec"].get("replicas", 1))
        running_old = [rs for rs in old if _replicas(rs) > 0]
        if not running_old:
            self._scale(deploy, new, desired)
            return
        total = _replicas(new) + sum(_replicas(rs) for rs in running_old)
        if _replicas(new) < desired:
            room = desired + _max_surge(deploy) - total
            if room > 0:
                self._scale(deploy, new, _replicas(new) + min(room, desired - _replicas(new)))
        elif _replicas(new) > desired:
            self._scale(deploy, new, desired)
        min_available = desired - _max_unavailable(deploy)
        new_unavailable = _replicas(new) - _available(new)
        total = _replicas(new) + sum(_replicas(rs) for rs in running_old)
        budget = total - min_available - new_unavailable
        running_old.sort(key=_revision)
        for rs in running_old:  # first the old pods that are not available anyway
            cut = min(budget, _replicas(rs) - _available(rs))
            if cut > 0:
                self._scale(deploy, rs, _replicas(rs) - cut)
                budget -= cut
        available = _available(new) + sum(min(_available(rs), _replicas(rs)) for rs in running_old)
        budget = min(budget, available - min_available)
        for rs in running_old:
            cut = min(budget, _replicas(rs))
            if cut > 0:
                self._scale(deploy, rs, _replicas(rs) - cut)
                budget -= cut

    def _scale(self, deploy: dict, rs: dict, replicas: int) -> None:
        current = _replicas(rs)
        desired = str(int(deploy["spec"].get("replicas", 1)))
        annotations = rs["metadata"].setdefault("annotations", {})
        if current == replicas and annotations.get(DESIRED) == desired:
            return
        rs["spec"]["replicas"] = replicas
        annotations.update({DESIRED: desired, MAX_REPLICAS: str(int(desired) + _max_surge(deploy))})
        rs.update(self.store.update(rs))
        if current != replicas:
            verb = "up" if replicas > current else "down"
            self.events.record(deploy, "ScalingReplicaSet",
                               f"Scaled {verb} replica set {rs['metadata']['name']} from {current} to {replicas}")

    def _prune(self, deploy: dict, old: list[dict]) -> None:
        """Keep revisionHistoryLimit scaled-down old ReplicaSets, the newest ones."""
        limit = int(deploy["spec"].get("revisionHistoryLimit", 10))
        idle = sorted((rs for rs in old if _replicas(rs) == 0 and not (rs.get("status") or {}).get("replicas")),
                      key=_revision)
        for rs in idle[:max(len(idle) - limit, 0)]:
            self.store.delete(self.replicasets, rs["metadata"]["namespace"], rs["metadata"]["name"])

    # -- status -----------------------------------------------------------------------------------
    def _sync_status(self, deploy: dict, key: Key, new: dict | None, old: list[dict]) -> None:
        desired = int(deploy["spec"].get("replicas", 1))
        everything = ([new] if new else []) + old
        counts = {f: sum(int((rs.get("status") or {}).get(f, 0)) for rs in everything)
                  for f in ("replicas", "readyReplicas", "availableReplicas")}
        updated = int(((new or {}).get("status") or {}).get("replicas", 0))
        total_spec = sum(_replicas(rs) for rs in everything)
        status = dict(deploy.get("status") or {})
        status.update(observedGeneration=deploy["metadata"].get("generation", 1), replicas=counts["replicas"],
                      updatedReplicas=updated, readyReplicas=counts["readyReplicas"],
                      availableReplicas=counts["availableReplicas"],
                      unavailableReplicas=max(total_spec - counts["availableReplicas"], 0))
        for field in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"):
            if not status[field]:
                status.pop(field)
        now = self.clock.now()
        conditions = status.get("conditions") or []
        if counts["availableReplicas"] >= desired - _max_unavailable(deploy):
            conditions = set_condition(conditions, "Available", "True", now, "MinimumReplicasAvailable",
                                       "Deployment has minimum availability.", update_time=True)
        else:
            conditions = set_condition(conditions, "Available", "False", now, "MinimumReplicasUnavailable",
                                       "Deployment does not have minimum availability.", update_time=True)
        status["conditions"] = self._progressing(deploy, key, conditions, new, counts, updated, now)
        deploy["status"] = status
        self.store.update(deploy, subresource="status")

    def _progressing(self, deploy: dict, key: Key, conditions: list[dict], new: dict | None, counts: dict,
                     updated: int, now: float) -> list[dict]:
        desired = int(deploy["spec"].get("replicas", 1))
        name = (new or {}).get("metadata", {}).get("name", "")
        if deploy["spec"].get("paused"):
            return set_condition(conditions, "Progressing", "Unknown", now, "DeploymentPaused",
                                 "Deployment is paused", update_time=True)
        done = updated == desired and counts["replicas"] == desired and counts["availableReplicas"] >= desired
        if done:
            return set_condition(conditions, "Progressing", "True", now, "NewReplicaSetAvailable",
                                 f'ReplicaSet "{name}" has successfully progressed.', update_time=True)
        current = next((c for c in conditions if c["type"] == "Progressing"), None)
        deadline = int(deploy["spec"].get("progressDeadlineSeconds", 600))
        if current and current.get("reason") != "NewReplicaSetAvailable" and current.get("lastUpdateTime") \
                and parse_rfc3339(current["lastUpdateTime"]) + deadline <= now:
            return set_condition(conditions, "Progressing", "False", now, "ProgressDeadlineExceeded",
                                 f'ReplicaSet "{name}" has timed out progressing.', update_time=True)
        fresh = set_condition(conditions, "Progressing", "True", now, "ReplicaSetUpdated",
                              f'ReplicaSet "{name}" is progressing.', update_time=True)
        self.at(now + deadline, key)
        return fresh


def template_hash(template: dict) -> str:
    """The pod-template-hash: FNV-1a (32 bit) of the template, spelled in Kubernetes' safe alphabet."""
    value = 0x811C9DC5
    for byte in json.dumps(template, sort_keys=True, separators=(",", ":")).encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE_CHARS[ord(digit) % len(_SAFE_CHARS)] for digit in str(value))


def _same_template(rs: dict, deploy: dict) -> bool:
    template = copy.deepcopy(rs["spec"].get("template") or {})
    template.get("metadata", {}).get("labels", {}).pop(HASH_LABEL, None)
    return template == deploy["spec"]["template"]


def _revision(rs: dict) -> int:
    return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0") or 0)


def _replicas(rs: dict) -> int:
    return int(rs["spec"].get("replicas", 0))


def _available(rs: dict) -> int:
    return int((rs.get("status") or {}).get("availableReplicas", 0))


def _max_surge(deploy: dict) -> int:
    rolling = deploy["spec"]["strategy"].get("rollingUpdate") or {}
    desired = int(deploy["spec"].get("replicas", 1))
    return int_or_percent(rolling.get("maxSurge", "25%"), desired, round_up=True)


def _max_unavailable(deploy: dict) -> int:
    if deploy["spec"]["strategy"].get("type") == "Recreate":
        return int(deploy["spec"].get("replicas", 1))
    rolling = deploy["spec"]["strategy"].get("rollingUpdate") or {}
    desired = int(deploy["spec"].get("replicas", 1))
    unavailable = int_or_percent(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
    if unavailable == 0 and _max_surge(deploy) == 0:
        return 1  # both zero would stall the rollout; the API forbids it, the controller assumes 1
    return min(unavailable, desired)


def _copied_annotations(deploy: dict) -> dict:
    """What the Deployment controller copies to the new ReplicaSet (``kubectl rollout history``
    reads kubernetes.io/change-cause there)."""
    return {k: v for k, v in (deploy["metadata"].get("annotations") or {}).items() if k not in _NOT_COPIED}
