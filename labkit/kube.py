"""The Kubernetes API of the lab, through the kubeconfig that notebook 02 writes.

Waits use watches (the API tells us when something changes) with a timeout and a progress
line per change, never sleep loops. Tables come back as DataFrames for the notebooks.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from cryptography import x509
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from labkit.changes import StepTimer, untimed
from labkit.errors import KubeError
from labkit.progress import Progress, progress
from labkit.quantities import cpu_cores, memory_bytes

# kubernetes >= 35 loads each API class, and the pydantic models its methods name, on first use:
# 0.5-0.9 s of CPU in whichever cell first talks to the cluster (a plan or preflight that changes
# nothing). Loaded with this module instead, they are loaded by the kernel that the runner starts
# ahead of its notebook (labkit.kernels). These are the API classes labkit uses.
API_CLASSES = (client.CoreV1Api, client.AppsV1Api, client.BatchV1Api, client.CustomObjectsApi, client.PolicyV1Api,
               client.StorageV1Api, client.ApiextensionsV1Api)


def connect(kubeconfig: Path) -> client.ApiClient:
    """A client for the kubeconfig's current context (TLS verified against its CA)."""
    if not Path(kubeconfig).exists():
        raise KubeError(f"kubeconfig {kubeconfig} does not exist; run 02-bootstrap-k3s first")
    return config.new_client_from_config(config_file=str(kubeconfig))


def _ready(node: client.V1Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def _ready_since(node: client.V1Node) -> datetime | None:
    """When the node last turned Ready, as its kubelet reported it (second precision)."""
    since = next((c.last_transition_time for c in node.status.conditions or [] if c.type == "Ready"), None)
    return since.astimezone(UTC) if since else None  # the client's tzutc() would not mix with UTC in pandas


def wait_nodes_ready(api: client.ApiClient, names: list[str], timeout: float = 300) -> dict[str, datetime]:
    """Wait until every named node is Ready; returns when each turned Ready."""
    core = client.CoreV1Api(api)
    ready: dict[str, datetime] = {}
    deadline = time.monotonic() + timeout

    def see(node: client.V1Node, bar: Progress) -> None:
        name = node.metadata.name
        if name in names and name not in ready and _ready(node):
            ready[name] = _ready_since(node) or datetime.now(UTC)
            bar.update(len(ready), f"{name} Ready")

    with progress("nodes Ready", total=len(names)) as bar:
        while True:
            # List, then watch from the list's resourceVersion; a 410 (history too old) lists again.
            listing = request("list nodes", lambda: core.list_node())
            for node in listing.items:
                see(node, bar)
            left = deadline - time.monotonic()
            if len(ready) == len(names):
                return ready
            if left <= 0:
                missing = sorted(set(names) - set(ready))
                raise KubeError(f"nodes not Ready after {timeout:.0f} s: {', '.join(missing)}; check "
                                "`systemctl status k3s-agent` and `journalctl -u k3s-agent` on them")
            stream = watch.Watch().stream(core.list_node, resource_version=listing.metadata.resource_version,
                                          timeout_seconds=max(1, int(left)))
            for event in _events(stream):
                if event["type"] in ("ADDED", "MODIFIED"):
                    see(event["object"], bar)
                if len(ready) == len(names):
                    return ready


def _events(stream) -> Any:
    try:
        yield from stream
    except ApiException as exc:
        if exc.status != 410:  # 410 Gone: our resourceVersion is too old; the caller lists again
            raise KubeError(f"watch failed: {exc.status} {exc.reason}") from None


def wait_pods_running(api: client.ApiClient, namespace: str, timeout: float = 300) -> pd.DataFrame:
    """Wait until every pod of the namespace is Running or Succeeded (and there is at least one)."""
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    with progress(f"pods in {namespace}") as bar:
        while True:
            pods = request(f"list pods in {namespace}", lambda: core.list_namespaced_pod(namespace))
            pending = [p.metadata.name for p in pods.items if p.status.phase not in ("Running", "Succeeded")]
            bar.update(note=f"{len(pods.items) - len(pending)}/{len(pods.items)} running")
            if pods.items and not pending:
                return pod_table(api, namespace)
            left = deadline - time.monotonic()
            if left <= 0:
                raise KubeError(f"pods in {namespace} not running after {timeout:.0f} s: {', '.join(pending)}")
            # Wake on the next change of any pod, not on a timer.
            stream = watch.Watch().stream(core.list_namespaced_pod, namespace,
                                          resource_version=pods.metadata.resource_version,
                                          timeout_seconds=max(1, int(left)))
            for _ in _events(stream):
                break


def until(list_call: Callable[..., Any], check: Callable[[Any], Any], *, what: str, timeout: float,
          **selectors: Any) -> Any:
    """List, then ``check(listing)``: its result when not None; else wake on the next change (a
    watch from the listing's resourceVersion) and list again, until ``timeout`` (KubeError)."""
    deadline = time.monotonic() + timeout
    while True:
        listing = request(what, lambda: list_call(**selectors))
        result = check(listing)
        if result is not None:
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            raise KubeError(f"{what}: not done after {timeout:.0f} s")
        stream = watch.Watch().stream(list_call, resource_version=listing.metadata.resource_version,
                                      timeout_seconds=max(1, int(left)), **selectors)
        for _ in _events(stream):
            break


def request(what: str, call: Callable[[], Any]) -> Any:
    """An API call whose failure becomes a KubeError naming ``what``."""
    try:
        return call()
    except ApiException as exc:
        raise KubeError(f"{what}: API server answered {exc.status} {exc.reason}") from None
    except HTTPError as exc:
        raise KubeError(f"{what}: cannot reach the API server: {exc}") from None


NODE_COLUMNS = ["name", "roles", "ready", "version", "internal_ip", "cpu", "memory_gib", "unschedulable"]
POD_COLUMNS = ["namespace", "name", "phase", "ready", "containers", "node", "restarts"]


def node_table(api: client.ApiClient) -> pd.DataFrame:
    """Nodes: name, roles, Ready, kubelet version, internal IP, allocatable CPU and memory."""
    rows = []
    for node in request("list nodes", lambda: client.CoreV1Api(api).list_node()).items:
        labels = node.metadata.labels or {}
        roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
        alloc = node.status.allocatable or {}
        ip = next((a.address for a in node.status.addresses or [] if a.type == "InternalIP"), "")
        rows.append({"name": node.metadata.name, "roles": ",".join(roles) or "<none>", "ready": _ready(node),
                     "version": node.status.node_info.kubelet_version, "internal_ip": ip,
                     "cpu": cpu_cores(alloc.get("cpu", "0")), "memory_gib": round(memory_bytes(alloc.get("memory", "0")) / 1024**3, 2),
                     "unschedulable": bool(node.spec.unschedulable)})
    return pd.DataFrame(rows, columns=NODE_COLUMNS).sort_values("name").reset_index(drop=True)


def pod_table(api: client.ApiClient, namespace: str | None = None) -> pd.DataFrame:
    core = client.CoreV1Api(api)
    pods = request("list pods", lambda: core.list_namespaced_pod(namespace) if namespace else core.list_pod_for_all_namespaces())
    rows = [{"namespace": p.metadata.namespace, "name": p.metadata.name, "phase": p.status.phase,
             "ready": sum(1 for c in p.status.container_statuses or [] if c.ready),
             "containers": len(p.spec.containers), "node": p.spec.node_name or "",
             "restarts": sum(c.restart_count for c in p.status.container_statuses or [])} for p in pods.items]
    return pd.DataFrame(rows, columns=POD_COLUMNS).sort_values(["namespace", "name"]).reset_index(drop=True)


def server_certificate_sans(kubeconfig: Path, timeout: float = 10) -> list[str]:
    """SANs of the API server's certificate, fetched over TLS verified against the kubeconfig's CA."""
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    current = next(c for c in doc["contexts"] if c["name"] == doc["current-context"])["context"]
    cluster = next(c for c in doc["clusters"] if c["name"] == current["cluster"])["cluster"]
    host, port = cluster["server"].removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    context.check_hostname = False  # we are reading the SANs, not relying on them
    with socket.create_connection((host, int(port)), timeout=timeout) as sock, \
            context.wrap_socket(sock, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    names = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in names]


@dataclass(frozen=True)
class Cluster:
    """A cluster that came up: when each node turned Ready, its nodes and system pods, and the
    names the API server's certificate is valid for."""

    ready: dict[str, datetime]
    nodes: pd.DataFrame
    system_pods: pd.DataFrame
    sans: list[str]


def wait_cluster(kubeconfig: Path, names: list[str], *, timeout: float = 300, dry_run: bool = False,
                 step: StepTimer = untimed) -> Cluster:
    """Wait until every named node is Ready and kube-system's pods run, then read the cluster back.
    A dry run waits for nothing and reads nothing: the cluster may not exist yet."""
    if dry_run:
        return Cluster({}, pd.DataFrame(columns=NODE_COLUMNS), pd.DataFrame(columns=POD_COLUMNS), [])
    api = connect(kubeconfig)
    ready = wait_nodes_ready(api, names, timeout)
    with step("kube-system pods running", "cluster"):
        pods = wait_pods_running(api, "kube-system", timeout)
    return Cluster(ready, node_table(api), pods, server_certificate_sans(kubeconfig))



def warnings(api: client.ApiClient, namespace: str, name: str, kinds: tuple[str, ...] = ()) -> list[str]:
    """Warning events about an object (``reason: message``), oldest first: what a controller said
    went wrong with it (ProvisioningFailed, AllocationFailed...)."""
    events = request(f"events of {name}", lambda: client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}")).items
    found = [e for e in events if e.type == "Warning" and (not kinds or e.involved_object.kind in kinds)]
    found.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    return [f"{e.reason}: {e.message}" for e in found]


def pod_problems(api: client.ApiClient, namespace: str, labels: dict[str, str], *, log_lines: int = 3) -> list[str]:
    """What keeps the pods matching ``labels`` from being Ready, one line per pod: each unready
    container's state (waiting reason, restarts, exit code) with its log's last lines (the previous
    run's when it is between restarts), and the pod's Warning events."""
    core = client.CoreV1Api(api)
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    pods = request(f"list pods in {namespace}", lambda: core.list_namespaced_pod(namespace, label_selector=selector))
    found = []
    for pod in pods.items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready:
            continue
        said = [_container_problem(core, pod, cs, log_lines) for cs in pod.status.container_statuses or []
                if not cs.ready]
        said += warnings(api, namespace, pod.metadata.name)[-2:]
        found.append(f"pod {pod.metadata.name} ({'Terminating' if pod.metadata.deletion_timestamp else pod.status.phase})"
                     f": {'; '.join(said) or 'no container status yet'}")
    return found or [f"no unready pod matches {selector} in {namespace}"]


def _container_problem(core: client.CoreV1Api, pod: client.V1Pod, cs: client.V1ContainerStatus, lines: int) -> str:
    state, last = cs.state, cs.last_state
    if state.waiting:
        text = f"container {cs.name} waiting ({state.waiting.reason}"
    elif state.terminated:
        text = f"container {cs.name} terminated ({state.terminated.reason}, exit code {state.terminated.exit_code}"
    else:
        text = f"container {cs.name} running but not ready ("
    text += f", {cs.restart_count} restarts)" if cs.restart_count else ")"
    if last and last.terminated and not state.running:
        text += f", last exit code {last.terminated.exit_code}"
    previous = bool(cs.restart_count and not state.running)
    try:
        log = core.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace, container=cs.name,
                                           previous=previous, tail_lines=lines)
    except ApiException:
        log = ""
    tail = " | ".join(line.strip() for line in log.splitlines() if line.strip())
    return f"{text}; log: {tail}" if tail else text


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except ApiException as exc:
        if exc.status != 409:  # 409: it exists already
            raise KubeError(f"create namespace {name}: API server answered {exc.status} {exc.reason}") from None


def run_pod(api: client.ApiClient, pod: dict, *, timeout: float = 120) -> str:
    """Run a pod to its end (an earlier one of the same name is replaced) and return its log; a pod
    that fails raises KubeError with its log's last lines."""
    core = client.CoreV1Api(api)
    meta = pod["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    delete_pod(api, namespace, name, timeout=timeout)
    request(f"create pod {name}", lambda: core.create_namespaced_pod(namespace, pod))
    with progress(f"pod {name}") as bar:
        def ended(pods) -> str | None:
            found = next((p for p in pods.items if p.metadata.name == name), None)
            phase = found.status.phase if found else "gone"
            bar.update(note=f"{phase} on {found.spec.node_name or '(not scheduled)'}" if found else phase)
            return phase if phase in ("Succeeded", "Failed", "gone") else None

        phase = until(core.list_namespaced_pod, ended, what=f"pod {namespace}/{name} to finish", timeout=timeout,
                      namespace=namespace, field_selector=f"metadata.name={name}")
    log = request(f"log of pod {name}", lambda: core.read_namespaced_pod_log(name, namespace))
    if phase != "Succeeded":
        raise KubeError(f"pod {namespace}/{name} {phase.lower()}: {log.strip()[-300:] or '(no output)'}")
    return log


def delete_pod(api: client.ApiClient, namespace: str, name: str, *, timeout: float = 60) -> None:
    """Delete a pod and wait until it is gone (nothing to do if there is none)."""
    core = client.CoreV1Api(api)
    try:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise KubeError(f"delete pod {namespace}/{name}: API server answered {exc.status} {exc.reason}") from None
    until(core.list_namespaced_pod, lambda pods: True if not pods.items else None,
          what=f"pod {namespace}/{name} to go", timeout=timeout, namespace=namespace,
          field_selector=f"metadata.name={name}")
