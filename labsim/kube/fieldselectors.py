"""The fields each resource may be selected by (``?fieldSelector=``), as the registries declare
them; any other field is refused with the real server's 400 ``field label not supported``."""

from __future__ import annotations

import re

from labsim.kube.errors import StoreError
from labsim.kube.resources import Resource

_COMMON = {"metadata.name", "metadata.namespace"}
_SUPPORTED: dict[tuple[str, str], set[str]] = {
    ("", "pods"): {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                   "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName"},
    ("", "events"): {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                     "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                     "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
    ("events.k8s.io", "events"): {"regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid",
                                  "regarding.apiVersion", "regarding.resourceVersion", "regarding.fieldPath",
                                  "reason", "reportingController", "type"},
    ("", "secrets"): {"type"},
    ("", "nodes"): {"spec.unschedulable"},
    ("", "namespaces"): {"status.phase"},
    ("", "replicationcontrollers"): {"status.replicas"},
    ("", "persistentvolumes"): {"name"},
    ("apps", "replicasets"): {"status.replicas"},
    ("batch", "jobs"): {"status.successful"},
    ("certificates.k8s.io", "certificatesigningrequests"): {"spec.signerName"},
}
_TERM = re.compile(r"^\s*([^!=\s]+)\s*(?:==|=|!=)")


def check(res: Resource, selector: str) -> None:
    """Raise 400 for a field the resource cannot be selected by."""
    allowed = _COMMON | _SUPPORTED.get(res.key, set())
    for term in selector.split(","):
        m = _TERM.match(term)
        if m and m.group(1) not in allowed:
            raise StoreError(400, "BadRequest", f"field label not supported: {m.group(1)}")
