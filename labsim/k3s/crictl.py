"""`crictl` (the k3s link) on a node: `ps [-a]`, `pods` and `version`, showing the containers the
cluster runs on this node, as crictl lists them from k3s' containerd. It needs root and a
running k3s unit, as the real one needs the containerd socket. `ctr`, the other link, answers
that the embedded lab has no containerd client."""

from __future__ import annotations

import datetime as dt
import hashlib
from urllib.parse import urlsplit

from labsim.k3s import units
from labsim.k3s.logs import line
from labsim.node.registry import CommandContext, CommandResult, command

CRICTL = "/usr/local/bin/crictl"
CTR = "/usr/local/bin/ctr"
SOCKET = "/run/k3s/containerd/containerd.sock"
VERSION = "Version:  0.1.0\nRuntimeName:  containerd\nRuntimeVersion:  v2.1.5-k3s1\nRuntimeApiVersion:  v1\n"


@command("crictl", CRICTL, installed_at=CRICTL)
async def crictl(ctx: CommandContext) -> CommandResult:
    args = [a for a in ctx.argv[1:] if not a.startswith("-")]
    verb = args[0] if args else "help"
    if verb not in ("ps", "pods", "version"):
        return CommandResult.fail(f'No help topic for \'{verb}\'\n' if verb != "help" else
                                  "usage: crictl ps [-a] | pods | version (the embedded lab's crictl)\n")
    found = _cluster(ctx)
    if isinstance(found, str):
        return CommandResult.fail(line(ctx.node.lab.clock.now(), "fatal", found) + "\n")
    cluster, node_name = found
    if verb == "version":
        return CommandResult.ok(VERSION)
    pods = [p for p in cluster.store.list(cluster.store.resource("v1", "Pod"))
            if (p.get("spec") or {}).get("nodeName") == node_name]
    now = ctx.node.lab.clock.now()
    if verb == "pods":
        return CommandResult.ok(_table(["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"],
                                       [_pod_row(p, now) for p in pods]))
    show_all = bool({"-a", "--all"} & set(ctx.argv[1:]))
    rows = [row for p in pods for row in _container_rows(p, now) if show_all or row[3] == "Running"]
    return CommandResult.ok(_table(["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD",
                                    "NAMESPACE"], rows))


@command("ctr", CTR, installed_at=CTR)
async def ctr(ctx: CommandContext) -> CommandResult:
    return CommandResult.fail("ctr: the embedded lab has no containerd client; use crictl ps|pods\n")


def _cluster(ctx: CommandContext):
    """(cluster, node name) of the k3s unit running here, or crictl's error."""
    node = ctx.node
    running = [u for u in units.UNITS if node.exists(units.unit_path(u)) and node.service_state(u) == "active"]
    for unit in running if ctx.is_root else []:
        cfg = units.unit_config(node, unit)
        host = node.spec.ip if unit == units.SERVER_UNIT else urlsplit(cfg.server or "").hostname
        cluster = node.lab.clusters.find(host) if host else None
        if cluster is not None:
            return cluster, units.node_name(node, cfg)
    reason = "no such file or directory" if ctx.is_root else "permission denied"
    return (f'validate service connection: validate CRI v1 runtime API for endpoint "unix://{SOCKET}": '
            f'rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing: '
            f'dial unix {SOCKET}: connect: {reason}"')


def _pod_row(pod: dict, now: float) -> list[str]:
    meta = pod["metadata"]
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))
    return [_short(meta["uid"]), _ago(meta.get("creationTimestamp"), now), "Ready" if ready else "NotReady",
            meta["name"], meta.get("namespace", ""), "0", "(default)"]


def _container_rows(pod: dict, now: float) -> list[list[str]]:
    meta, rows = pod["metadata"], []
    for status in pod.get("status", {}).get("containerStatuses", []):
        state = status.get("state") or {}
        running, terminated = state.get("running"), state.get("terminated")
        if not (running or terminated):
            continue
        started = (running or terminated).get("startedAt")
        rows.append([_short(status.get("containerID", status["name"])), _short(status.get("imageID", "")),
                     _ago(started, now), "Running" if running else "Exited", status["name"],
                     str(status.get("restartCount", 0)), _short(meta["uid"]), meta["name"], meta.get("namespace", "")])
    return rows


def _short(text: str) -> str:
    """A 13-character id as crictl prints: the hex of a runtime id, else a digest of the text."""
    tail = text.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail[:13] if len(tail) >= 13 and all(c in "0123456789abcdef" for c in tail) else \
        hashlib.sha256(text.encode()).hexdigest()[:13]


def _ago(timestamp: str | None, now: float) -> str:
    if not timestamp:
        return "Unknown"
    seconds = now - dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    return f"{human_duration(seconds)} ago"


def human_duration(seconds: float) -> str:
    """go-units' HumanDuration, which crictl uses for CREATED."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return "1 second" if s == 1 else f"{s} seconds"
    minutes, hours = s // 60, int(seconds / 3600 + 0.5)
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600 / 24 / 365)} years"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Go's tabwriter as crictl sets it: cells at least 20 wide, 3 spaces of padding."""
    widths = [max(20, *(len(r[i]) + 3 for r in [header, *rows])) for i in range(len(header))]
    return "".join("".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
                   for r in [header, *rows])
