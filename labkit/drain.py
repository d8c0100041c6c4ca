"""Cordon, drain and uncordon a node through the Kubernetes API, as ``kubectl drain`` does.

A drain evicts (``pods/eviction``) every pod of the node except DaemonSet pods and static
(mirror) pods: the API server refuses an eviction that would break a PodDisruptionBudget (429),
and the drain retries it until ``timeout``, then stops naming the pods and the budgets that
held them. Evicted pods of a controller come back elsewhere (the node is cordoned).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from labkit.errors import KubeError
from labkit.kube import request, until
from labkit.progress import say

MIRROR = "kubernetes.io/config.mirror"


class DrainBlocked(KubeError):
    """Evictions still refused when the drain's time ran out (a PodDisruptionBudget allowing none)."""


@dataclass(frozen=True)
class Evicted:
    namespace: str
    name: str
    owner: str  # "ReplicaSet/web-5d4f..." or "" for a bare pod (it does not come back)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def cordon(api: client.ApiClient, node: str, unschedulable: bool = True) -> None:
    """Mark the node (un)schedulable: no new pod lands on a cordoned node."""
    request(f"{'cordon' if unschedulable else 'uncordon'} {node}",
         lambda: client.CoreV1Api(api).patch_node(node, {"spec": {"unschedulable": unschedulable or None}}))


def uncordon(api: client.ApiClient, node: str) -> None:
    cordon(api, node, unschedulable=False)


def drainable(pod: client.V1Pod) -> bool:
    """What a drain evicts: not DaemonSet pods (they belong on every node), not static pods, not
    pods already finished or going."""
    owners = pod.metadata.owner_references or []
    return not (any(o.kind == "DaemonSet" and o.controller for o in owners)
                or MIRROR in (pod.metadata.annotations or {})
                or pod.status.phase in ("Succeeded", "Failed") or pod.metadata.deletion_timestamp)


def pods_on(api: client.ApiClient, node: str) -> list[client.V1Pod]:
    core = client.CoreV1Api(api)
    return request(f"list pods on {node}",
                lambda: core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")).items


def drain(api: client.ApiClient, node: str, *, timeout: float, retry_s: float = 5.0) -> list[Evicted]:
    """Evict the node's pods (PodDisruptionBudgets honoured), retrying refused evictions every
    ``retry_s`` until ``timeout`` (DrainBlocked); then wait until they are gone. Returns them."""
    core = client.CoreV1Api(api)
    pending = {(p.metadata.namespace, p.metadata.name): _owner(p) for p in pods_on(api, node) if drainable(p)}
    evicted: list[Evicted] = []
    refused: dict[tuple[str, str], str] = {}
    deadline = time.monotonic() + timeout
    while pending:
        for (ns, name), owner in list(pending.items()):
            body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=ns))
            try:
                core.create_namespaced_pod_eviction(name, ns, body)
            except ApiException as exc:
                if exc.status == 429:
                    refused[(ns, name)] = _budget_message(exc)
                    continue
                if exc.status != 404:  # 404: gone already
                    raise KubeError(f"evict {ns}/{name}: API server answered {exc.status} {exc.reason}") from None
            else:
                evicted.append(Evicted(ns, name, owner))
                say(f"  evicted {ns}/{name} from {node}")
            refused.pop((ns, name), None)
            del pending[(ns, name)]
        if pending and time.monotonic() + retry_s > deadline:
            held = "; ".join(f"{ns}/{name}: {refused.get((ns, name), 'refused')}" for ns, name in pending)
            raise DrainBlocked(f"drain of {node} stopped after {timeout:.0f} s: {len(pending)} pod(s) could not be "
                               f"evicted ({held}). Raise the budget's allowed disruptions (more replicas, or a "
                               "lower minAvailable), or raise drain_timeout_s if the pods are only slow to come back")
        if pending:
            time.sleep(retry_s)  # kubectl drain retries every 5 s; the budget frees up as replacements get ready
    _wait_gone(api, node, {(e.namespace, e.name) for e in evicted}, timeout=max(deadline - time.monotonic(), 30))
    return evicted


def _wait_gone(api: client.ApiClient, node: str, names: set[tuple[str, str]], timeout: float) -> None:
    core = client.CoreV1Api(api)

    def gone(listing) -> bool | None:
        left = {(p.metadata.namespace, p.metadata.name) for p in listing.items} & names
        return True if not left else None

    until(core.list_pod_for_all_namespaces, gone, what=f"evicted pods leave {node}", timeout=timeout,
          field_selector=f"spec.nodeName={node}")


def _owner(pod: client.V1Pod) -> str:
    ref = next((o for o in pod.metadata.owner_references or [] if o.controller), None)
    return f"{ref.kind}/{ref.name}" if ref else ""


def _budget_message(exc: ApiException) -> str:
    """The API server's reason, e.g. 'The disruption budget web needs 1 healthy pods and has 1 currently'."""
    try:
        body = json.loads(exc.body or "{}")
    except json.JSONDecodeError:
        return exc.reason or "eviction refused"
    causes = (body.get("details") or {}).get("causes") or []
    return "; ".join(c.get("message", "") for c in causes) or body.get("message") or "eviction refused"
