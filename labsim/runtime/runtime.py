"""The container runtime a cluster's kubelet asks: filesystems, processes and exec sessions.

``filesystem`` gives a container's files (built on first use), ``start`` runs a pod's plain
containers that have a command, ``exit_code`` says when they all ended, ``exec`` runs a command
inside a container (what pods/exec serves), ``attach`` joins a container's process.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from labsim.node.registry import CommandResult
from labsim.node.shell import PATH, Shell
from labsim.runtime import filesystem, registry
from labsim.runtime.filesystem import ContainerFS, field_value
from labsim.runtime.processes import ShellProcess
from labsim.runtime.supervisor import RealProcess, Supervisor

if TYPE_CHECKING:
    from labsim.kube.cluster import Cluster

Key = tuple[str, str]  # (pod uid, container name)
# Annotations with which a pod's run is modelled (labsim.kube.controllers.kubelet): no process then.
MODELLED_RUN = {"sim.labsim.io/run-seconds", "sim.labsim.io/exit-code"}
Process = ShellProcess | RealProcess
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ProgramMissing(Exception):
    """A real program's image whose software is not installed here: that pod fails, not the lab."""


class ContainerRuntime:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._filesystems: dict[Key, ContainerFS] = {}
        self._processes: dict[Key, Process] = {}
        self.supervisor = Supervisor(cluster.state_dir / "run")

    # -- filesystems and environment --------------------------------------------------------
    def filesystem(self, pod: dict, container: dict) -> ContainerFS:
        key = (pod["metadata"]["uid"], container["name"])
        fs = self._filesystems.get(key)
        if fs is None:
            fs = self._filesystems[key] = filesystem.build(self.cluster, pod, container)
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
            env[var["name"]] = self._value(pod, var)
        return env

    def _data(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        store = self.cluster.store
        obj = store.get(store.resource("v1", kind), namespace, name) or {}
        data = obj.get("data") or {}
        if kind == "Secret":
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        return dict(data)

    def _value(self, pod: dict, var: dict) -> str:
        source = var.get("valueFrom") or {}
        if "fieldRef" in source:
            return field_value(pod, source["fieldRef"]["fieldPath"])
        for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if field in source:
                ref = source[field]
                return self._data(kind, pod["metadata"]["namespace"], ref["name"]).get(ref["key"], "")
        return str(var.get("value", ""))

    # -- processes --------------------------------------------------------------------------
    def start(self, pod: dict, exited: Callable[[], None]) -> list[tuple[str, str]]:
        """Run the pod's real programs and the plain containers that have a command (a restart
        runs them anew); ``exited`` is called as each ends. Returns (container, message) for
        the containers that cannot start here (their program is not installed)."""
        meta = pod["metadata"]
        if MODELLED_RUN & set(meta.get("annotations") or {}):
            return []  # a test or chart model says how the pod runs
        problems = []
        for container in pod["spec"].get("containers") or []:
            key = (meta["uid"], container["name"])
            old = self._processes.get(key)
            if old is not None and old.exit_code is None:
                continue
            try:
                process = self._launch(pod, container, exited)
            except ProgramMissing as exc:
                problems.append((container["name"], str(exc)))
                continue
            if process is not None:
                self._processes[key] = process
        return problems

    def _launch(self, pod: dict, container: dict, exited: Callable[[], None]) -> Process | None:
        meta, image = pod["metadata"], container.get("image", "")
        runner = registry.runner_for(image)
        argv = (container.get("command") or []) + (container.get("args") or [])
        if runner == "modelled" or (runner == "plain" and not argv) or (runner == "program" and container.get("command")):
            # The image's own entrypoint, software without a runner, or a command of its own in a
            # real program's image (a pg_dump job): modelled, as the adapters run the entrypoint only.
            return None
        self.cluster.logs.begin(meta["namespace"], meta["name"], container["name"])

        def log(line: str, name: str = container["name"]) -> None:
            self.cluster.logs.write(meta["namespace"], meta["name"], name, line)

        fs, env = self.filesystem(pod, container), self.env(pod, container)
        if runner == "plain":
            return ShellProcess(fs, argv, env, container.get("workingDir") or "/",
                                wants_stdin=bool(container.get("stdin")), log=log, exited=exited)
        program = registry.program_for(image)
        if program is None or program.bin_dir() is None:
            raise ProgramMissing(f"{image}: the real program is not installed here; install {program.PACKAGE}")
        steps = program.prepare(fs, image, env)
        pod_ip = (pod.get("status") or {}).get("podIP", "")
        server = program.server(fs, image, env, pod_ip, [expand(arg, env) for arg in container.get("args") or []])
        return self.supervisor.launch(f"{meta['uid']}.{container['name']}", steps, server,
                                      env={"PATH": PATH, "LANG": "C.UTF-8", **env}, cwd=str(fs.root),
                                      log_line=log, exited=exited)

    def runs_process(self, pod: dict) -> bool:
        uid = pod["metadata"]["uid"]
        return any(key[0] == uid for key in self._processes)

    def exit_code(self, pod: dict) -> int | None:
        """When every container of the pod ran a command and all have ended: the first failing
        exit code, else 0. None while any still runs (or runs the image's entrypoint)."""
        uid = pod["metadata"]["uid"]
        codes = []
        for container in pod["spec"].get("containers") or []:
            process = self._processes.get((uid, container["name"]))
            if process is None or process.exit_code is None:
                return None
            codes.append(process.exit_code)
        return next((c for c in codes if c), 0)

    def stop(self, uid: str) -> None:
        """Kill the pod's processes (SIGKILL: they end with 137)."""
        for key in [k for k in self._processes if k[0] == uid]:
            self._processes.pop(key).kill()

    def remove(self, uid: str) -> None:
        """The pod is gone: its processes stop, its container folders and emptyDirs go."""
        self.stop(uid)
        for key in [k for k in self._filesystems if k[0] == uid]:
            del self._filesystems[key]
        filesystem.remove(self.cluster, uid)

    def reap(self) -> list[int]:
        """Kill what a lab killed with -9 left running (called as the cluster starts)."""
        return self.supervisor.reap()

    async def close(self) -> None:
        """The lab stops: every process ends (the pods run again when it comes back)."""
        processes, self._processes = list(self._processes.values()), {}
        for process in processes:
            await process.killed()

    # -- exec and attach --------------------------------------------------------------------
    def shell(self, pod: dict, container: dict) -> Shell:
        return Shell(self.filesystem(pod, container), "root", env=self.env(pod, container),
                     cwd=container.get("workingDir") or "/", name="sh")

    async def exec(self, pod: dict, container: dict, argv: list[str], stdin: bytes) -> CommandResult:
        fs = self.filesystem(pod, container)
        real = registry.program_for(container.get("image", ""))
        if real is not None and real.bin_dir() is not None and argv[0].rsplit("/", 1)[-1] in real.TOOLS:
            return await run_tool(real.bin_dir() / argv[0].rsplit("/", 1)[-1], argv[1:], stdin,
                                  real.tool_env(fs, {"PATH": PATH, **self.env(pod, container)}))
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


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` references in an argument: replaced by the container's variable
    when it has one, kept as written otherwise; ``$$`` is a literal ``$``."""
    return _REFERENCE.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


async def run_tool(binary: Path, args: list[str], stdin: bytes, env: dict[str, str]) -> CommandResult:
    """A real program's client tool (psql, pg_dump) run for an exec into its container."""
    process = await asyncio.create_subprocess_exec(str(binary), *args, env=env, stdin=asyncio.subprocess.PIPE,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate(stdin)
    return CommandResult(out, err, process.returncode or 0)
