"""The container runtime a cluster's kubelet asks: filesystems, processes, probes and exec sessions.

``filesystem`` gives a container's files (built on first use), ``start`` runs a pod's real
programs and the containers that have a command (plain images', or a real program's image with
its client tools: ``tools``) with their probes, ``exit_codes`` and
``health`` say how each container's process and probes are doing, ``stop`` kills a pod's or one
container's process, ``exec`` runs a command inside a container (what pods/exec serves),
``attach`` joins a container's process.

The runtime outlives the k3s process, as containerd's shims do under k3s' ``KillMode=process``:
stopping k3s stops the API and the kubelets, not the containers. The kubelet that runs next
adopts them (``notify`` is its queue); ``sweep`` stops those of pods the cluster no longer has
(an etcd snapshot restored), ``stop_node`` those of one machine (k3s-killall.sh, a power-off),
``close`` all of them (the lab stopping, the cluster uninstalled).
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from labsim.node.registry import CommandResult
from labsim.node.shell import PATH, Shell
from labsim.runtime import filesystem, probes, registry
from labsim.runtime.filesystem import ContainerFS, field_value, resource_value
from labsim.runtime.processes import ShellProcess
from labsim.runtime.programs import CannotStart
from labsim.runtime.programs.appmodel import TIME_SCALE_ENV
from labsim.runtime.supervisor import RealProcess, Supervisor
from labsim.runtime.tools import RealTools

if TYPE_CHECKING:
    from labsim.kube.cluster import Cluster

Key = tuple[str, str]  # (pod uid, container name)
PodKey = tuple[str, str]  # (namespace, name)
# Annotations with which a pod's run is modelled (labsim.kube.controllers.kubelet): no process then.
MODELLED_RUN = {"sim.labsim.io/run-seconds", "sim.labsim.io/exit-code"}
Process = ShellProcess | RealProcess
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_WORD = re.compile(r"[\w./-]+")


class ProgramMissing(CannotStart):
    """A real program's image whose software is not installed here: that pod fails, not the lab."""


class ContainerRuntime:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._filesystems: dict[Key, ContainerFS] = {}
        self._processes: dict[Key, Process] = {}
        self._probers: dict[Key, probes.Prober] = {}
        self._stopping: set[Process] = set()  # a stopped pod's processes until they have exited
        self._nodes: dict[str, str] = {}  # pod uid -> the node its processes run on
        self.supervisor = Supervisor(cluster.state_dir / "run")
        # The running kubelet's queue: a pod whose process ended or whose probe's outcome moved.
        # While k3s is stopped nobody reads it; the next kubelet's first pass looks at every pod.
        self.notify: Callable[[PodKey], None] = lambda key: None

    # -- filesystems and environment --------------------------------------------------------
    def filesystem(self, pod: dict, container: dict) -> ContainerFS:
        key = (pod["metadata"]["uid"], container["name"])
        fs = self._filesystems.get(key)
        if fs is None:
            fs = self._filesystems[key] = filesystem.build(self.cluster, pod, container)
            if (program := registry.program_for(container.get("image", ""))) is not None:
                fs.tools = RealTools(program, fs)
        return fs

    def env(self, pod: dict, container: dict) -> dict[str, str]:
        """The container's environment: image defaults, the kubernetes Service's variables,
        envFrom, then env (values, fieldRefs, ConfigMap and Secret keys), as the kubelet orders them."""
        store, ns = self.cluster.store, pod["metadata"]["namespace"]
        api = store.get(store.resource("v1", "Service"), "default", "kubernetes") or {}
        host = (api.get("spec") or {}).get("clusterIP", "")
        env = {"PATH": PATH, "HOSTNAME": pod["metadata"]["name"], "HOME": "/root",
               "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": "443",
               "KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": f"tcp://{host}:443"}
        for source in container.get("envFrom") or []:
            for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if field in source:
                    env.update({source.get("prefix", "") + k: v
                                for k, v in self._data(kind, ns, source[field]["name"]).items()})
        for var in container.get("env") or []:
            env[var["name"]] = self._value(pod, container, var)
        return env

    def _data(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        store = self.cluster.store
        obj = store.get(store.resource("v1", kind), namespace, name) or {}
        data = obj.get("data") or {}
        if kind == "Secret":
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        return dict(data)

    def _value(self, pod: dict, container: dict, var: dict) -> str:
        source = var.get("valueFrom") or {}
        if "fieldRef" in source:
            return field_value(pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            return resource_value(self.cluster, pod, {"containerName": container["name"], **source["resourceFieldRef"]})
        for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if field in source:
                ref = source[field]
                return self._data(kind, pod["metadata"]["namespace"], ref["name"]).get(ref["key"], "")
        return str(var.get("value", ""))

    # -- processes --------------------------------------------------------------------------
    def start(self, pod: dict, only: set[str] | None = None) -> list[tuple[str, str]]:
        """Run the pod's real programs and the plain containers that have a command (``only``
        those named; one whose process still runs is left alone) with their probes; ``notify``
        hears of it as a process ends or a probe's outcome moves. Returns (container, message) for
        the containers that cannot start here (their program is not installed, a privileged port)."""
        meta, problems = pod["metadata"], []
        pod_key = (meta["namespace"], meta["name"])

        def changed() -> None:
            self.notify(pod_key)

        for container in pod["spec"].get("containers") or []:
            key = (meta["uid"], container["name"])
            old = self._processes.get(key)
            if (old is not None and old.exit_code is None) or (only is not None and container["name"] not in only):
                continue
            try:
                process = self._launch(pod, container, changed)
            except CannotStart as exc:
                problems.append((container["name"], str(exc)))
                continue
            if process is not None:
                self._processes[key] = process
                self._nodes[meta["uid"]] = pod["spec"].get("nodeName", "")
                self._probe(pod, container, changed)
        return problems

    def _probe(self, pod: dict, container: dict, changed: Callable[[], None]) -> None:
        key = (pod["metadata"]["uid"], container["name"])
        if (old := self._probers.pop(key, None)) is not None:
            old.stop()
        if probes.has_probes(container):
            async def run(argv: list[str], timeout: float) -> tuple[int, str]:
                try:
                    result = await asyncio.wait_for(self.exec(pod, container, argv, b""), timeout)
                except TimeoutError:
                    return 1, f"command {argv!r} timed out"
                return result.exit_status, (result.stdout + result.stderr).decode(errors="replace")

            pod_ip = (pod.get("status") or {}).get("podIP", "")
            owner = f"pod {pod['metadata'].get('namespace', '')}/{pod['metadata']['name']} container {container['name']}"
            self._probers[key] = probes.Prober(container, pod_ip, run, self.cluster.clock, changed, owner)

    def _launch(self, pod: dict, container: dict, exited: Callable[[], None]) -> Process | None:
        meta, image = pod["metadata"], container.get("image", "")
        runner = registry.runner_for(image)
        argv = (container.get("command") or []) + (container.get("args") or [])
        if not self.runs(pod, container):
            return None
        self.cluster.logs.begin(meta["namespace"], meta["name"], container["name"])
        fs, env = self.filesystem(pod, container), self.env(pod, container)

        program = registry.program_for(image)
        shown = getattr(program, "container_line", None)  # the adapter's own paths as the container's

        def log(line: str, name: str = container["name"]) -> None:
            line = shown(fs, line) if shown else line
            self.cluster.logs.write(meta["namespace"], meta["name"], name, line)

        if runner == "plain" or container.get("command"):  # a real program's image with a command of its own
            return ShellProcess(fs, [expand(arg, env) for arg in argv], env, container.get("workingDir") or "/",
                                wants_stdin=bool(container.get("stdin")) and not container.get("tty"),
                                log=log, exited=exited)
        if program is None or program.bin_dir() is None:
            raise ProgramMissing(f"{image}: the real program is not installed here; install {program.PACKAGE}")
        pod_ip = (pod.get("status") or {}).get("podIP", "")
        if hasattr(program, "environment"):  # an adapter that translates variables (localhost = the pod)
            env = program.environment(env, pod_ip)
        args = [expand(arg, env) for arg in container.get("args") or []]
        # the lab's clock: what an app model models as taking time, what a Go program's configuration
        # waits on, Traefik's reload throttle
        env = {**env, TIME_SCALE_ENV: str(self.cluster.clock.time_scale)}
        steps = program.prepare(fs, image, env)
        server = program.server(fs, image, env, pod_ip, args)
        return self.supervisor.launch(f"{meta['uid']}.{container['name']}", steps, server,
                                      env={"PATH": PATH, "LANG": "C.UTF-8", **env}, cwd=str(fs.root),
                                      log_line=log, exited=exited)

    @staticmethod
    def runs(pod: dict, container: dict) -> bool:
        """Whether the container gets a process here: a real program (its entrypoint, or a
        command of its own that uses the program's client tools, run by the shell model with the
        real tools: a pg_dump Job), a plain image's command. Not: a pod whose run is modelled by its
        annotations, the image's own entrypoint in a plain image, software without a runner, a
        real program's image with another command of its own (modelled: it names the image's own
        binaries, which the shell model lacks)."""
        if MODELLED_RUN & set(pod["metadata"].get("annotations") or {}):
            return False
        runner = registry.runner_for(container.get("image", ""))
        if runner == "plain":
            return bool(container.get("command") or container.get("args"))
        return runner == "program" and (not container.get("command") or _uses_tools(container))

    def probed(self, pod: dict, container: dict) -> bool:
        """Its probes are checked for real (a modelled container's pass)."""
        return probes.has_probes(container) and self.runs(pod, container)

    def runs_process(self, pod: dict) -> bool:
        uid = pod["metadata"]["uid"]
        return any(key[0] == uid for key in self._processes)

    def exit_codes(self, pod: dict) -> dict[str, int | None]:
        """Container -> its process's exit code (None while it runs), for the containers that run one."""
        uid = pod["metadata"]["uid"]
        return {name: process.exit_code for (owner, name), process in self._processes.items() if owner == uid}

    def health(self, pod: dict) -> dict[str, probes.Health]:
        """Container -> what its probes say (containers without probes are absent)."""
        uid = pod["metadata"]["uid"]
        return {name: prober.health for (owner, name), prober in self._probers.items() if owner == uid}

    def stop(self, uid: str, container: str | None = None) -> None:
        """Kill the pod's processes, or one container's (SIGTERM, then SIGKILL), and their probes.
        A whole pod's processes are forgotten by the pod (``close`` still waits for them until they
        have exited); one container's process stays until it is restarted, so its exit code is seen."""
        for key in [k for k in self._probers if k[0] == uid and container in (None, k[1])]:
            self._probers.pop(key).stop()
        if not container:
            self._nodes.pop(uid, None)
        for key in [k for k in self._processes if k[0] == uid and container in (None, k[1])]:
            process = self._processes[key] if container else self._processes.pop(key)
            process.kill()
            if not container:  # forgotten by the pod, not by the lab: close() still waits for it
                self._stopping.add(process)
                process.task.add_done_callback(lambda _, process=process: self._stopping.discard(process))

    async def terminate(self, uid: str) -> None:
        """Stop the pod's processes (``stop``) and wait until every one has exited."""
        tasks = {process.task for (owner, _), process in self._processes.items() if owner == uid}
        self.stop(uid)
        if tasks:
            await asyncio.wait(tasks)

    def remove(self, uid: str) -> None:
        """The pod is gone: its processes stop, its container folders and emptyDirs go."""
        self.stop(uid)
        for key in [k for k in self._filesystems if k[0] == uid]:
            del self._filesystems[key]
        filesystem.remove(self.cluster, uid)

    def stop_node(self, node: str) -> None:
        """The node's containers stop (k3s-killall.sh, the machine powered off); other nodes' run on."""
        for uid in [uid for uid, on in self._nodes.items() if on == node]:
            self.stop(uid)

    def sweep(self, uids: set[str]) -> list[str]:
        """Stop and remove the processes of pods not in ``uids`` (those the cluster has as its API
        starts: a restored etcd snapshot may not know pods that run). Returns the uids swept."""
        gone = sorted({owner for owner, _ in self._processes} - uids)
        for uid in gone:
            self.remove(uid)
        return gone

    async def reap(self) -> list[int]:
        """Kill what a lab killed with -9 left running (called as the cluster first starts)."""
        return await self.supervisor.reap()

    async def close(self) -> None:
        """The lab stops, or the cluster goes: every process ends (the pods run again when it comes back)."""
        for prober in self._probers.values():
            prober.stop()
        processes = [*self._processes.values(), *self._stopping]  # those of pods being deleted too
        self._processes, self._probers, self._stopping, self._nodes = {}, {}, set(), {}
        await asyncio.gather(*(process.killed() for process in processes))  # each within its grace period, together

    # -- exec and attach --------------------------------------------------------------------
    def shell(self, pod: dict, container: dict) -> Shell:
        return Shell(self.filesystem(pod, container), "root", env=self.env(pod, container),
                     cwd=container.get("workingDir") or "/", name="sh")

    async def exec(self, pod: dict, container: dict, argv: list[str], stdin: bytes) -> CommandResult:
        fs = self.filesystem(pod, container)
        program = argv[0]
        if fs.program_path(program) is None and not fs.is_file(program):
            return CommandResult(stderr=(
                f'OCI runtime exec failed: exec failed: unable to start container process: exec: "{program}": '
                f"executable file not found in $PATH: unknown\n").encode(), exit_status=126)
        return await self.shell(pod, container).execute(argv, {}, stdin)

    async def attach(self, pod: dict, container: dict, stdin: bytes | None) -> CommandResult | None:
        """Join the container's process: give it stdin (when it waits for some), wait for its end.
        None when the container runs its image's entrypoint (nothing to attach to here)."""
        process = self._processes.get((pod["metadata"]["uid"], container["name"]))
        if process is None:
            return None
        if stdin is not None:
            process.feed(stdin)
        return await process.wait()


def _uses_tools(container: dict) -> bool:
    """Its command names one of its program's client tools (``pg_dump``, ``sh -c 'pg_dump …'``)."""
    tools = registry.program_for(container.get("image", "")).TOOLS
    words = _WORD.findall(" ".join((container.get("command") or []) + (container.get("args") or [])))
    return any(word.rsplit("/", 1)[-1] in tools for word in words)


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` references in an argument: replaced by the container's variable
    when it has one, kept as written otherwise; ``$$`` is a literal ``$``."""
    return _REFERENCE.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)
