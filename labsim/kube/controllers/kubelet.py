"""The kubelets of every node, as one controller: pods bound to a Ready node go Pending ->
ContainerCreating -> Running (or, run to completion, Succeeded/Failed) with the status a real
kubelet reports: conditions, complete container statuses, hostIP and a podIP from the node's
podCIDR. A kubelet whose node is NotReady is down and reports nothing; its containers run on
(k3s' unit has KillMode=process: a stopped or upgraded k3s leaves them to containerd's shims),
and the kubelet that starts next adopts them. When the node comes back with another boot ID
(the VM rebooted) its pods' containers restart.

Annotations on a pod shape its run, for tests, fault drills and chart models:
``sim.labsim.io/run-seconds`` (modelled run time of a container that exits),
``sim.labsim.io/exit-code`` (how it exits; a container that must keep running then crash-loops,
with the kubelet's back-off on the lab clock), ``sim.labsim.io/log-line`` (what a modelled
container prints before it exits), ``sim.labsim.io/ready: "false"`` (its readiness
probe never passes) and ``sim.labsim.io/image-pull: "fail"`` (ErrImagePull, ImagePullBackOff).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import ipaddress
import secrets

from labsim.kube.controllers.events import WARNING, EventRecorder
from labsim.kube.controllers.placement import node_ready
from labsim.kube.controllers.pods import TERMINAL, is_terminating, set_condition
from labsim.kube.controllers.times import rfc3339
from labsim.kube.controllers.workqueue import Controller, Key
from labsim.kube.errors import StoreError

RUN_SECONDS = "sim.labsim.io/run-seconds"
EXIT_CODE = "sim.labsim.io/exit-code"
LOG_LINE = "sim.labsim.io/log-line"
READY = "sim.labsim.io/ready"
IMAGE_PULL = "sim.labsim.io/image-pull"
BACKOFF_SECONDS, BACKOFF_MAX = 10, 300  # crash-loop back-off: doubles per restart, on the lab clock
PULL_SECONDS = 5.0  # an image's first pull on a node
START_SECONDS = 1.0  # sandbox + container start when the image is present
RUN_TO_COMPLETION_SECONDS = 5.0
# The order a kubelet reports pod conditions in (kubectl describe shows them so).
_CONDITION_ORDER = {t: i for i, t in enumerate(
    ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"))}


class Kubelet(Controller):
    name = "kubelet"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.pods = self.res("v1", "Pod")
        self.nodes = self.res("v1", "Node")
        self.events = EventRecorder(self.store, self.clock, "kubelet")
        self.runtime = cluster.runtime  # what runs in the containers, adopted from the kubelet before
        self.runtime.notify = self.queue.add
        self._on_node: dict[str, set[Key]] = {}
        self._ips: dict[str, dict[str, Key]] = {}  # node -> pod IP -> pod
        self._boots: dict[str, str] = {}  # node -> bootID last seen
        self._seen: dict[str, tuple] = {}  # node -> what of it matters to its pods, last seen
        self._restart: set[Key] = set()
        self._images: dict[str, set[str]] = {}  # node -> images pulled
        self._waiting: dict[str, set[Key]] = {}  # namespace -> pods waiting for their volumes
        self._backoff: dict[Key, float] = {}  # crash-looping pod -> lab time its back-off ends
        self._terminating: set[str] = set()  # pods (uids) whose containers are being stopped

    def watches(self):
        volume_sources = [self.res("v1", kind) for kind in ("PersistentVolumeClaim", "ConfigMap", "Secret")]
        return [(self.pods, self._pod_event), (self.nodes, self._node_event),
                *((res, self._volume_event) for res in volume_sources)]

    def _volume_event(self, event_type: str, obj: dict) -> list[Key]:
        return list(self._waiting.get(obj["metadata"].get("namespace", ""), ()))

    def _pod_event(self, event_type: str, pod: dict) -> list[Key]:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            return []
        self._forget_ip(node, key)
        if event_type == "DELETED":
            self._on_node.get(node, set()).discard(key)
            self._restart.discard(key)
            for backoff in [k for k in self._backoff if k[:2] == key]:  # the pod's and its containers'
                del self._backoff[backoff]
            self._waiting.get(key[0], set()).discard(key)
            self.forget((pod["metadata"]["uid"],))
            self.runtime.remove(pod["metadata"]["uid"])
            return []
        self._on_node.setdefault(node, set()).add(key)
        status = pod.get("status") or {}
        if status.get("podIP") and status.get("phase") not in TERMINAL and not pod["spec"].get("hostNetwork"):
            self._ips.setdefault(node, {})[status["podIP"]] = key
        return [key]

    def _node_event(self, event_type: str, node: dict) -> list[Key]:
        """A node's pods need a look when it comes or goes Ready, or booted again."""
        name = node["metadata"]["name"]
        boot = ((node.get("status") or {}).get("nodeInfo") or {}).get("bootID")
        seen = (boot, node_ready(node), event_type == "DELETED")
        if self._seen.get(name) == seen:
            return []
        if self._boots.get(name, boot) != boot:
            self._restart |= self._on_node.get(name, set())
        self._boots[name], self._seen[name] = boot, seen
        return list(self._on_node.get(name, ()))

    def _forget_ip(self, node: str, key: Key) -> None:
        ips = self._ips.get(node, {})
        for ip in [ip for ip, owner in ips.items() if owner == key]:
            del ips[ip]

    async def reconcile(self, key: Key) -> None:
        pod = self.store.get(self.pods, *key)
        if pod is None or not pod["spec"].get("nodeName"):
            return
        node = self.store.get(self.nodes, None, pod["spec"]["nodeName"])
        if node is None:
            self.store.delete(self.pods, *key, grace=0)  # the pod garbage collector: its node is gone
            return
        if is_terminating(pod):
            self._terminate(pod)
            return
        status = pod.setdefault("status", {})
        if not node_ready(node) or status.get("phase") in TERMINAL:
            return
        if not status.get("hostIP"):
            self._accept(pod, node)
        elif status.get("phase") == "Pending":
            self._pending(pod, node, key)
        else:
            self._running(pod, node, key)

    def _terminate(self, pod: dict) -> None:
        """A pod deleted gracefully: its containers are stopped (SIGTERM, SIGKILL after the grace
        period) and, once every one has exited, the kubelet removes the pod. On a node that is down
        (its processes stopped with it) the pod goes too, once they have exited: a real cluster keeps
        it Terminating until the node is back or the pod is force-deleted; the twin does not model that."""
        uid = pod["metadata"]["uid"]
        if uid not in self._terminating:
            self._terminating.add(uid)
            self._tasks.append(asyncio.create_task(self._remove_when_stopped(pod)))

    async def _remove_when_stopped(self, pod: dict) -> None:
        meta = pod["metadata"]
        try:
            await self.runtime.terminate(meta["uid"])
            with contextlib.suppress(StoreError):  # gone already, or another pod of that name
                self.store.delete(self.pods, meta["namespace"], meta["name"], grace=0,
                                  preconditions={"uid": meta["uid"]})
        finally:
            self._terminating.discard(meta["uid"])
            self._tasks = [t for t in self._tasks if not t.done()]

    def _pending(self, pod: dict, node: dict, key: Key) -> None:
        """Wait for volumes, then pull (or fail to) and start the containers after their start time."""
        waiting = self._waiting.setdefault(key[0], set())
        waiting.add(key)
        if not self._volumes_ready(pod):
            return
        waiting.discard(key)
        if _annotations(pod).get(IMAGE_PULL) == "fail":
            self._pull_failed(pod, node, key)
        elif self.after((pod["metadata"]["uid"], "start"), key, seconds := self._start_seconds(pod, node),
                        _what(pod, "image pull and start" if seconds == PULL_SECONDS else "start")):
            self._start(pod, node)

    def _running(self, pod: dict, node: dict, key: Key) -> None:
        """Restarts asked for, crash-loop back-off, a real process's exit, a modelled run's end."""
        if key in self._restart:
            self._restart.discard(key)
            self._restart_containers(pod, node)
        elif self.runtime.runs_process(pod):
            self._supervise(pod, key)
        elif _crash_looping(pod):
            if self.clock.now() >= self._backoff.get(key, 0.0):
                self._backoff.pop(key, None)
                self._restart_containers(pod, None, record_exit=False)
        elif _runs_to_completion(pod) or EXIT_CODE in _annotations(pod):
            uid, restarts = pod["metadata"]["uid"], _restarts(pod)
            if self.after((uid, "run", restarts), key, _run_seconds(pod), _what(pod, "run to completion")):
                self._exit(pod, key)
        else:
            self._mark_ready(pod, True)
            self._run(self.store.update(pod, subresource="status"))  # after a lab or node restart

    # -- the steps of a pod's life ------------------------------------------------------------
    def _accept(self, pod: dict, node: dict) -> None:
        """The kubelet admits the pod: hostIP, start time, containers waiting in ContainerCreating."""
        status, now = pod["status"], self.clock.now()
        host_ip = _internal_ip(node)
        status.update(phase="Pending", hostIP=host_ip, hostIPs=[{"ip": host_ip}], startTime=rfc3339(now))
        names = [c["name"] for c in pod["spec"]["containers"]]
        conditions = status.get("conditions") or []
        inits = [c["name"] for c in pod["spec"].get("initContainers") or []]
        for type_, value in (("PodReadyToStartContainers", "False"), ("Initialized", "False" if inits else "True"),
                             ("Ready", "False"), ("ContainersReady", "False"), ("PodScheduled", "True")):
            reason, message = None, None
            if type_ in ("Ready", "ContainersReady"):
                reason, message = "ContainersNotReady", f"containers with unready status: [{' '.join(names)}]"
            elif type_ == "Initialized" and inits:
                reason, message = "ContainersNotInitialized", f"containers with incomplete status: [{' '.join(inits)}]"
            conditions = set_condition(conditions, type_, value, now, reason, message, probe_time=True)
        status["conditions"] = sorted(conditions, key=lambda c: _CONDITION_ORDER.get(c["type"], len(_CONDITION_ORDER)))
        status["containerStatuses"] = [_waiting(c) for c in pod["spec"]["containers"]]
        if pod["spec"].get("initContainers"):
            status["initContainerStatuses"] = [_waiting(c, "PodInitializing") for c in pod["spec"]["initContainers"]]
        self.store.update(pod, subresource="status")

    def _volumes_ready(self, pod: dict) -> bool:
        """Claims must be bound, and non-optional ConfigMaps/Secrets exist, or the pod waits."""
        ns = pod["metadata"]["namespace"]
        for vol in pod["spec"].get("volumes") or []:
            missing = None
            if claim := vol.get("persistentVolumeClaim"):
                pvc = self.store.get(self.res("v1", "PersistentVolumeClaim"), ns, claim["claimName"])
                if not pvc or (pvc.get("status") or {}).get("phase") != "Bound":
                    return False
            for source, kind, field in (("configMap", "ConfigMap", "name"), ("secret", "Secret", "secretName")):
                ref = vol.get(source)
                if ref and not ref.get("optional") and self.store.get(self.res("v1", kind), ns, ref.get(field)) is None:
                    missing = f'{kind.lower()} "{ref.get(field)}" not found'
            if missing:
                self.events.record(pod, "FailedMount", f'MountVolume.SetUp failed for volume "{vol["name"]}" : '
                                   f"{missing}", WARNING, pod["spec"]["nodeName"])
                return False
        return True

    def _start_seconds(self, pod: dict, node: dict) -> float:
        pulled = self._images.get(node["metadata"]["name"], set())
        new = any(c["image"] not in pulled for c in pod["spec"]["containers"])
        return PULL_SECONDS if new else START_SECONDS

    def _start(self, pod: dict, node: dict) -> None:
        node_name, status, now = node["metadata"]["name"], pod["status"], self.clock.now()
        status["phase"] = "Running"
        ip = status["hostIP"] if pod["spec"].get("hostNetwork") else self._allocate_ip(node, pod)
        status.update(podIP=ip, podIPs=[{"ip": ip}])
        if pod["spec"].get("initContainers"):
            status["initContainerStatuses"] = [_completed(c, now) for c in pod["spec"]["initContainers"]]
        status["containerStatuses"] = [_running(c, now, restarts=0) for c in pod["spec"]["containers"]]
        for type_ in ("PodReadyToStartContainers", "Initialized"):
            status["conditions"] = set_condition(status["conditions"], type_, "True", now, probe_time=True)
        self._mark_ready(pod, True)
        stored = self.store.update(pod, subresource="status")
        self._run(stored)
        pulled = self._images.setdefault(node_name, set())
        for container in pod["spec"]["containers"]:
            self._container_events(pod, container, node_name, container["image"] in pulled)
            pulled.add(container["image"])

    def _container_events(self, pod: dict, container: dict, node: str, present: bool) -> None:
        image, name = container["image"], container["name"]
        if present:
            self.events.record(pod, "Pulled", f'Container image "{image}" already present on machine', host=node)
        else:
            self.events.record(pod, "Pulling", f'Pulling image "{image}"', host=node)
            self.events.record(pod, "Pulled", f'Successfully pulled image "{image}" in {PULL_SECONDS:.0f}s '
                               f"({PULL_SECONDS:.0f}s including waiting)", host=node)
        self.events.record(pod, "Created", f"Created container: {name}", host=node)
        self.events.record(pod, "Started", f"Started container {name}", host=node)

    def _allocate_ip(self, node: dict, pod: dict) -> str:
        name = node["metadata"]["name"]
        cidr = node["spec"]["podCIDR"]  # k3s gives every node one when it registers
        used = self._ips.setdefault(name, {})
        hosts = ipaddress.ip_network(cidr).hosts()
        next(hosts)  # .1 is the node's cni0 bridge
        ip = next(str(h) for h in hosts if str(h) not in used)
        used[ip] = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        return ip

    def _mark_ready(self, pod: dict, ready: bool) -> None:
        """Readiness as the probes report it: a container whose process is probed is ready when
        its probes say so; others are ready while running, unless the pod's annotation says its
        probe fails. Changes ``pod`` only; the caller writes it."""
        status, now = pod["status"], self.clock.now()
        modelled_ok = ready and _annotations(pod).get(READY) != "false"
        health = self.runtime.health(pod)
        unready = []
        for container in status.get("containerStatuses") or []:
            running, probed = "running" in container.get("state", {}), health.get(container["name"])
            if self.runtime.probed(pod, _spec(pod, container["name"])):
                container["ready"] = bool(ready and running and probed and probed.ready and probed.started)
            else:
                container["ready"] = modelled_ok and running
            if not container["ready"]:
                unready.append(container["name"])
        reason = "ContainersNotReady" if unready else None
        message = f"containers with unready status: [{' '.join(unready)}]" if unready else None
        for type_ in ("Ready", "ContainersReady"):
            status["conditions"] = set_condition(status["conditions"], type_, "False" if unready else "True", now,
                                                 reason, message, probe_time=True)

    def _run(self, pod: dict) -> None:
        """Start the pod's processes; each one's end brings the pod back here (runtime.notify)."""
        for container, message in self.runtime.start(pod):
            waiting = {"waiting": {"reason": "CreateContainerError", "message": message}}
            changed = [cs for cs in pod["status"].get("containerStatuses") or []
                       if cs["name"] == container and cs.get("state") != waiting]
            for cs in changed:
                cs.update(ready=False, started=False, state=waiting)
                self.events.record(pod, "Failed", f"Error: {message}", WARNING, pod["spec"].get("nodeName"))
            if changed:
                self._mark_ready(pod, False)
                self.store.update(pod, subresource="status")

    def _supervise(self, pod: dict, key: Key) -> None:
        """A pod whose containers run processes, each container on its own: probes set its
        readiness, a failed liveness/startup probe kills it, its end restarts it after its
        back-off (restartPolicy), and the pod ends when every container has ended for good."""
        status, node_name, uid = pod["status"], pod["spec"]["nodeName"], pod["metadata"]["uid"]
        health, codes, now = self.runtime.health(pod), self.runtime.exit_codes(pod), self.clock.now()
        policy = pod["spec"].get("restartPolicy", "Always")
        before = copy.deepcopy([status.get("containerStatuses"), status.get("conditions")])
        for cs in status.get("containerStatuses") or []:
            name, state, probed = cs["name"], cs.get("state", {}), health.get(cs["name"])
            for message in probed.events if probed else []:
                self.events.record(pod, "Unhealthy", message, WARNING, node_name)
            if probed:
                probed.events.clear()
            code = codes.get(name)
            if "running" in state and code is not None:
                if policy == "Always" or (code and policy == "OnFailure"):
                    self._crash_container(pod, key, cs, code)
                else:
                    cs.update(ready=False, started=False,
                              state=_terminated(cs, code, "Error" if code else "Completed", now))
            elif "running" in state and probed and probed.kill:
                self.events.record(pod, "Killing", probed.kill, host=node_name)
                probed.kill = ""
                self.runtime.stop(uid, name)  # its end comes back here as an exit
            elif "running" in state:
                cs["started"] = probed.started if probed else True
            elif _backing_off(cs) and name in codes and now >= self._backoff.get((*key, name), 0.0):
                self._backoff.pop((*key, name), None)
                cs.update(_running(_spec(pod, name), now, restarts=cs["restartCount"]), lastState=cs["lastState"])
                self.events.record(pod, "Started", f"Started container {name}", host=node_name)
                self.runtime.start(pod, only={name})
        if all("terminated" in cs.get("state", {}) for cs in status["containerStatuses"]):
            self._exit(pod, key, next((c for c in codes.values() if c), 0))
            return
        self._mark_ready(pod, True)
        if [status.get("containerStatuses"), status.get("conditions")] != before:
            self.store.update(pod, subresource="status")

    def _crash_container(self, pod: dict, key: Key, cs: dict, code: int) -> None:
        """One container exited and will be restarted: CrashLoopBackOff until its own back-off ends."""
        deadline = self.clock.now() + self._back_off(pod, cs, code)
        self._backoff[(*key, cs["name"])] = deadline
        self.at(deadline, key)

    def _exit(self, pod: dict, key: Key, code: int | None = None) -> None:
        """The containers end (with ``code``, else as the pod's annotation says): the pod
        Succeeds or Fails, or its restart policy brings them back after the crash-loop back-off."""
        status, now = pod["status"], self.clock.now()
        code = int(_annotations(pod).get(EXIT_CODE, "0")) if code is None else code
        if LOG_LINE in _annotations(pod):
            for cs in pod["status"].get("containerStatuses") or []:
                self.cluster.logs.write(key[0], key[1], cs["name"], _annotations(pod)[LOG_LINE])
        policy = pod["spec"].get("restartPolicy", "Always")
        if policy == "Always" or (code and policy == "OnFailure"):
            self._crash(pod, key, code)
            return
        status["phase"] = "Failed" if code else "Succeeded"
        reason = "Error" if code else "Completed"
        status["containerStatuses"] = [{**cs, "ready": False, "started": False, "state": cs["state"]
                                        if "terminated" in cs.get("state", {}) else _terminated(cs, code, reason, now)}
                                       for cs in status.get("containerStatuses") or []]
        for type_ in ("Ready", "ContainersReady"):
            status["conditions"] = set_condition(status["conditions"], type_, "False", now, "PodCompleted",
                                                 probe_time=True)
        status["conditions"] = set_condition(status["conditions"], "PodReadyToStartContainers", "False", now,
                                             probe_time=True)
        self.store.update(pod, subresource="status")

    def _restart_containers(self, pod: dict, node: dict | None, *, record_exit: bool = True) -> None:
        """Every container runs anew: after its node's kubelet changed (``node``: the sandbox is
        re-created, the exit recorded), or at the end of a crash-loop back-off."""
        status, now = pod["status"], self.clock.now()
        if node is not None:
            self.events.record(pod, "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.",
                               host=node["metadata"]["name"])
            self.runtime.stop(pod["metadata"]["uid"])
        restarted = []
        for spec, cs in zip(pod["spec"]["containers"], status.get("containerStatuses") or [], strict=False):
            restarts = int(cs.get("restartCount", 0)) + (1 if record_exit else 0)
            last = _terminated(cs, 255, "Unknown", now) if record_exit else cs.get("lastState") or {}
            restarted.append({**_running(spec, now, restarts=restarts), "lastState": last})
            self.events.record(pod, "Started", f"Started container {spec['name']}", host=pod["spec"]["nodeName"])
        status["containerStatuses"] = restarted
        self._mark_ready(pod, True)
        self._run(self.store.update(pod, subresource="status"))

    def _crash(self, pod: dict, key: Key, code: int) -> None:
        """The containers exited and will be restarted: CrashLoopBackOff until the back-off ends."""
        status = pod["status"]
        longest = max((self._back_off(pod, cs, code) for cs in status.get("containerStatuses") or []), default=0)
        self._mark_ready(pod, False)
        self.store.update(pod, subresource="status")
        self._backoff[key] = self.clock.now() + longest
        self.at(self._backoff[key], key)

    def _back_off(self, pod: dict, cs: dict, code: int) -> int:
        """Container status ``cs`` exited with ``code``: waiting in CrashLoopBackOff, its restart
        counted, the BackOff event recorded. Returns its back-off in seconds."""
        meta, now = pod["metadata"], self.clock.now()
        restarts = int(cs.get("restartCount", 0))
        delay = min(BACKOFF_SECONDS * 2 ** restarts, BACKOFF_MAX)
        message = (f"back-off {delay}s restarting failed container={cs['name']} "
                   f"pod={meta['name']}_{meta['namespace']}({meta['uid']})")
        cs.update(ready=False, started=False, restartCount=restarts + 1,
                  lastState=_terminated(cs, code, "Error" if code else "Completed", now),
                  state={"waiting": {"reason": "CrashLoopBackOff", "message": message}})
        self.events.record(pod, "BackOff", f"Back-off restarting failed container {cs['name']} in pod "
                           f"{meta['name']}_{meta['namespace']}({meta['uid']})", WARNING, pod["spec"]["nodeName"])
        return delay

    def _pull_failed(self, pod: dict, node: dict, key: Key) -> None:
        """The image cannot be pulled: ErrImagePull first, ImagePullBackOff after a retry."""
        node_name, uid = node["metadata"]["name"], pod["metadata"]["uid"]
        failed = self.after((uid, "pull"), key, PULL_SECONDS, _what(pod, "image pull (fails)"))
        reason = "ImagePullBackOff" if failed else "ErrImagePull"
        for cs, spec in zip(pod["status"]["containerStatuses"], pod["spec"]["containers"], strict=False):
            if cs["state"].get("waiting", {}).get("reason") == reason:
                continue
            ref = _image_ref(spec["image"])
            detail = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": failed to '
                      f'resolve reference "{ref}": {ref}: not found')
            message = f'Back-off pulling image "{spec["image"]}"' if reason == "ImagePullBackOff" else detail
            cs["state"] = {"waiting": {"reason": reason, "message": message}}
            if reason == "ErrImagePull":
                self.events.record(pod, "Pulling", f'Pulling image "{spec["image"]}"', host=node_name)
                self.events.record(pod, "Failed", f'Failed to pull image "{spec["image"]}": {detail}', WARNING,
                                   node_name)
            else:
                self.events.record(pod, "BackOff", message, host=node_name)
            self.events.record(pod, "Failed", f"Error: {reason}", WARNING, node_name)
        self.store.update(pod, subresource="status")


# -- container statuses ------------------------------------------------------------------------
def _image_ref(image: str) -> str:
    """The fully qualified name containerd reports: docker.io/library/nginx:1.25."""
    name = image.split("@")[0]
    first = name.split("/")[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def _image_id(image: str) -> str:
    repo = _image_ref(image).rsplit(":", 1)[0]
    return f"{repo}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _base(container: dict, restarts: int) -> dict:
    return {"name": container["name"], "image": _image_ref(container["image"]), "imageID": "",
            "ready": False, "restartCount": restarts, "started": False, "lastState": {}}


def _waiting(container: dict, reason: str = "ContainerCreating") -> dict:
    return {**_base(container, 0), "state": {"waiting": {"reason": reason}}}


def _running(container: dict, now: float, restarts: int) -> dict:
    return {**_base(container, restarts), "imageID": _image_id(container["image"]),
            "containerID": f"containerd://{secrets.token_hex(32)}", "started": True,
            "state": {"running": {"startedAt": rfc3339(now)}}}


def _completed(container: dict, now: float) -> dict:
    container_id = f"containerd://{secrets.token_hex(32)}"
    return {**_base(container, 0), "imageID": _image_id(container["image"]), "containerID": container_id,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "containerID": container_id,
                                     "startedAt": rfc3339(now), "finishedAt": rfc3339(now)}}}


def _internal_ip(node: dict) -> str:
    addresses = (node.get("status") or {}).get("addresses") or []
    return next((a["address"] for a in addresses if a.get("type") == "InternalIP"), "")


def _terminated(cs: dict, code: int, reason: str, now: float) -> dict:
    return {"terminated": {"exitCode": code, "reason": reason, "containerID": cs.get("containerID"),
                           "startedAt": cs.get("state", {}).get("running", {}).get("startedAt"),
                           "finishedAt": rfc3339(now)}}


def _annotations(pod: dict) -> dict:
    return pod["metadata"].get("annotations") or {}


def _spec(pod: dict, name: str) -> dict:
    return next((c for c in pod["spec"]["containers"] if c["name"] == name), {})


def _backing_off(cs: dict) -> bool:
    return cs.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"


def _crash_looping(pod: dict) -> bool:
    return any(_backing_off(cs) for cs in pod["status"].get("containerStatuses") or [])


def _runs_to_completion(pod: dict) -> bool:
    return pod["spec"].get("restartPolicy", "Always") != "Always"


def _what(pod: dict, step: str) -> str:
    """A pod's step as the clock's ledger names it."""
    return f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']} {step} on {pod['spec'].get('nodeName')}"


def _run_seconds(pod: dict) -> float:
    return float(_annotations(pod).get(RUN_SECONDS, RUN_TO_COMPLETION_SECONDS))


def _restarts(pod: dict) -> int:
    return sum(int(cs.get("restartCount", 0)) for cs in pod["status"].get("containerStatuses") or [])
