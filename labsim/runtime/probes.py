"""A container's startup, liveness and readiness probes, run as the kubelet's prober workers do.

Each probe is checked for real: ``httpGet`` and ``tcpSocket`` against the pod IP (or the
probe's ``host``), ``exec`` inside the container (what ``kubectl exec`` runs). Timing follows
the probe's initialDelaySeconds / periodSeconds on the lab clock, with at least PERIOD_FLOOR
real seconds between checks (STEADY_FLOOR while the probe passes), so a lab at time_scale 0
converges in a fraction of a second without spinning. The counters follow successThreshold / failureThreshold. A liveness or startup
probe gives up (the container is killed) only once its failure streak has also lasted
GIVE_UP_FLOOR real seconds: compressed lab time would otherwise kill a process that is merely slow
because this machine is (readiness has no floor: it only gates traffic and comes back). The outcome
is a ``Health`` the kubelet reads: ready, started, a reason to kill the container, and the
``Unhealthy`` events to record. gRPC probes are not checked (they pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

PERIOD_FLOOR = 0.2  # real seconds between two checks of one probe, whatever the time scale
# Real seconds at least between two checks while a probe passes (a failing or not yet passing probe
# keeps PERIOD_FLOOR, so a start and a failure are seen as soon as before). At time scale 0 every probe
# ran 5 times a second: each DaemonSet pod's probes (node-exporter's, promtail's...) were a per-node
# CPU cost of the twin (its checks, the app's answers, their access-log lines) for no new finding.
# From a 10 s period scaled by 0.1 up, the lab clock already spaces checks this far.
STEADY_FLOOR = 1.0
# Real seconds a liveness/startup failure streak must last before the container is killed. The app
# models (Python servers) bind 0.2-0.3 s after their start on an idle machine and stall for a second
# or more on a 2-core CI machine at load 12; the real kubelet's default give-up is 30 s
# (periodSeconds 10 x failureThreshold 3). 10 s is ten times such a stall and still lets a lab at
# time scale 0 restart a truly dead container within seconds.
GIVE_UP_FLOOR = 10.0
USER_AGENT = "kube-probe/1.34"
# (probe field, its name in the kubelet's events)
KINDS = (("startupProbe", "Startup"), ("livenessProbe", "Liveness"), ("readinessProbe", "Readiness"))

Exec = Callable[[list[str], float], Awaitable[tuple[int, str]]]  # argv, timeout -> exit code, output


@dataclass
class Health:
    ready: bool
    started: bool
    kill: str = ""  # set when a liveness or startup probe gave up: the kubelet's "Killing" message
    events: list[str] = field(default_factory=list)  # "Readiness probe failed: ..." not yet recorded
    # (probe type, result) -> checks so far: the kubelet's prober_probe_total (its /metrics/probes)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)


def has_probes(container: dict) -> bool:
    return any(container.get(kind) for kind, _ in KINDS)


class Prober:
    """The probes of one running container; ``changed`` is called when its Health moved."""

    def __init__(self, container: dict, pod_ip: str, run: Exec, clock, changed: Callable[[], None],
                 owner: str) -> None:
        self.container, self.pod_ip, self.run, self.clock, self.changed = container, pod_ip, run, clock, changed
        self.owner = owner  # "pod NS/NAME container C": names the initial delays in the clock's ledger
        self.health = Health(ready=not container.get("readinessProbe"), started=not container.get("startupProbe"))
        self.task = asyncio.create_task(self._work())

    def stop(self) -> None:
        self.task.cancel()

    async def _work(self) -> None:
        if self.container.get("startupProbe") and not await self._loop("startupProbe", "Startup"):
            return
        loops = [self._loop(kind, name) for kind, name in KINDS[1:] if self.container.get(kind)]
        await asyncio.gather(*loops)

    async def _loop(self, kind: str, name: str) -> bool:
        """Check until the probe is done: False when it gave up (the container must be killed)."""
        spec = self.container[kind]
        # Something waits for the first readiness or startup check (a rollout): an operation. Nothing
        # waits for a liveness probe's first check: unnamed, so the critical path cannot pass through it.
        waited_for = kind != "livenessProbe"
        what = f"{self.owner} {name.lower()} probe initial delay" if waited_for else ""
        await self._sleep(spec.get("initialDelaySeconds", 0), what)
        successes = failures = 0
        since = 0.0  # when the failure streak began (real seconds, monotonic)
        while True:
            error = await check(spec, self.container, self.pod_ip, self.run)
            successes, failures = (successes + 1, 0) if error is None else (0, failures + 1)
            result = (name, "successful" if error is None else "failed")
            self.health.counts[result] = self.health.counts.get(result, 0) + 1
            if error is not None:
                since = time.monotonic() if failures == 1 else since
                self.health.events.append(f"{name} probe failed: {error}")
            done = self._apply(kind, successes, failures, spec, time.monotonic() - since)
            self.changed()
            if done is not None:
                return done
            await self._sleep(spec.get("periodSeconds", 10), floor=STEADY_FLOOR if error is None else PERIOD_FLOOR)

    def _apply(self, kind: str, successes: int, failures: int, spec: dict, streak: float) -> bool | None:
        """Move Health by the counters; True/False when the probe's work ends (passed/gave up).
        ``streak``: real seconds since the current run of failures began."""
        threshold = spec.get("failureThreshold", 3)
        if kind == "readinessProbe":
            if successes >= spec.get("successThreshold", 1):
                self.health.ready = True
            elif failures >= threshold:
                self.health.ready = False
            return None
        if successes and kind == "startupProbe":
            self.health.started = True
            return True
        if failures >= threshold and streak >= GIVE_UP_FLOOR:
            self.health.ready = False
            what = "liveness" if kind == "livenessProbe" else "startup"
            self.health.kill = f"Container {self.container['name']} failed {what} probe, will be restarted"
            return False
        return None

    async def _sleep(self, seconds: float, what: str = "", *, floor: float = PERIOD_FLOOR) -> None:
        """``seconds`` on the lab clock, and no less than ``floor`` real seconds: the floor is a
        minimum, not an extra pause after a scaled period that is already longer."""
        began = time.monotonic()
        await self.clock.sleep(seconds, what if seconds > 0 else "")
        await asyncio.sleep(max(0.0, floor - (time.monotonic() - began)))


async def check(spec: dict, container: dict, pod_ip: str, run: Exec) -> str | None:
    """One check of a probe: None when it passes, else the kubelet's failure message."""
    timeout = float(spec.get("timeoutSeconds", 1))
    if "exec" in spec:
        code, output = await run(list(spec["exec"].get("command") or []), timeout)
        return None if code == 0 else output
    action = spec.get("httpGet") or spec.get("tcpSocket")
    if action is None:
        return None  # gRPC: not checked here
    host, port = action.get("host") or pod_ip, _port(action.get("port"), container)
    if "tcpSocket" in spec:
        return await _tcp(host, port, timeout)
    return await _http(action, host, port, timeout)


def _port(port: int | str | None, container: dict) -> int:
    """A number, or the name of one of the container's ports."""
    if isinstance(port, str) and not port.isdigit():
        return next((int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name") == port), 0)
    return int(port or 0)


async def _tcp(host: str, port: int, timeout: float) -> str | None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return f"dial tcp {host}:{port}: i/o timeout"
    except OSError as exc:
        return f"dial tcp {host}:{port}: connect: {_reason(exc)}"
    writer.close()
    return None


async def _http(action: dict, host: str, port: int, timeout: float) -> str | None:
    scheme = str(action.get("scheme", "HTTP")).lower()
    path = action.get("path") or "/"
    url = f"{scheme}://{host}:{port}{path}"
    headers = {"Host": f"{host}:{port}", "User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
    headers.update({h["name"]: h["value"] for h in action.get("httpHeaders") or []})
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    tls = _insecure_tls() if scheme == "https" else None  # the kubelet does not verify probe certificates
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=tls)
            try:
                writer.write(request.encode())
                status_line = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
    except OSError as exc:
        return f'Get "{url}": dial tcp {host}:{port}: connect: {_reason(exc)}'
    parts = status_line.split()
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if 200 <= code < 400:
        return None
    return f"HTTP probe failed with statuscode: {code}" if code else f'Get "{url}": EOF'


def _reason(exc: OSError) -> str:
    with contextlib.suppress(TypeError, AttributeError):
        return {111: "connection refused", 113: "no route to host"}.get(exc.errno, exc.strerror.lower())
    return str(exc)


def _insecure_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
