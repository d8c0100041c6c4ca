"""`k3s kubectl` (and the `kubectl` link) on a node: the subset an operator types on the server
itself, `get nodes|pods|namespaces [NAME] [-A|-n NS] [-l SELECTOR] [-o wide|name|json|yaml]
[--show-labels] [--no-headers]`, answered from
the cluster whose API this node serves, in kubectl's own table layout.

As on k3s it reads /etc/rancher/k3s/k3s.yaml: without it (an agent) kubectl falls back to
localhost:8080, unreadable (mode 0600 for a non-root user) it fails as k3s' kubectl does.
"""

from __future__ import annotations

import datetime as dt
import json

import yaml

from labsim.k3s import units
from labsim.node.registry import CommandContext, CommandResult

RESOURCES = {  # what `get` accepts -> (kind, plural)
    **dict.fromkeys(("nodes", "node", "no"), ("Node", "nodes")),
    **dict.fromkeys(("pods", "pod", "po"), ("Pod", "pods")),
    **dict.fromkeys(("namespaces", "namespace", "ns"), ("Namespace", "namespaces")),
}


_VALUED = {"-n": "namespace", "--namespace": "namespace", "-o": "output", "--output": "output",
           "-l": "selector", "--selector": "selector"}


class KubectlError(Exception):
    pass


async def run(ctx: CommandContext, args: list[str]) -> CommandResult:
    try:
        cluster = _cluster(ctx)
        return CommandResult.ok(_dispatch(ctx, cluster, args))
    except KubectlError as e:
        return CommandResult.fail(f"{e}\n")


def _cluster(ctx: CommandContext):
    node, path = ctx.node, units.KUBECONFIG
    if not node.is_file(path):
        raise KubectlError("The connection to the server localhost:8080 was refused - did you specify the right host or port?")
    if not node.can(path, ctx.user, "r"):
        raise KubectlError(f"error: error loading config file \"{path}\": open {path}: permission denied")
    cluster = node.lab.clusters.find(node.spec.ip)
    if cluster is None or node.service_state(units.SERVER_UNIT) != "active":
        raise KubectlError("The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?")
    return cluster


def _dispatch(ctx: CommandContext, cluster, args: list[str]) -> str:
    opts = _options(args)
    if not opts["words"] or opts["words"][0] != "get":
        raise KubectlError("error: the embedded lab's k3s kubectl supports `get`; use kubectl with "
                           "/etc/rancher/k3s/k3s.yaml for the rest")
    words = opts["words"][1:]
    if not words:
        raise KubectlError("error: you must specify the type of resource to get.")
    if words[0] not in RESOURCES:
        raise KubectlError(f'error: the server doesn\'t have a resource type "{words[0]}"')
    kind, plural = RESOURCES[words[0]]
    res = cluster.store.resource("v1", kind)
    namespace = None if (opts["all"] or not res.namespaced) else opts["namespace"]
    objects = cluster.store.list(res, namespace, labels=opts["selector"])
    if len(words) > 1:
        objects = [o for o in objects if o["metadata"]["name"] in words[1:]]
        missing = set(words[1:]) - {o["metadata"]["name"] for o in objects}
        if missing:
            raise KubectlError(f'Error from server (NotFound): {plural} "{sorted(missing)[0]}" not found')
    return _render(objects, kind, plural, opts, ctx.node.lab.clock.now())


def _options(args: list[str]) -> dict:
    opts = {"words": [], "all": False, "namespace": "default", "output": "", "selector": None,
            "show-labels": False, "no-headers": False}
    i = 0
    while i < len(args):
        arg = args[i]
        key = _VALUED.get(arg.split("=", 1)[0])
        if arg in ("-A", "--all-namespaces"):
            opts["all"] = True
        elif arg in ("--show-labels", "--no-headers"):
            opts[arg[2:]] = True
        elif key and "=" in arg:
            opts[key] = arg.split("=", 1)[1]
        elif key and i + 1 < len(args):
            opts[key] = args[i + 1]
            i += 1
        elif arg.startswith("-o") and len(arg) > 2:
            opts["output"] = arg[2:]
        elif arg.startswith("-"):
            raise KubectlError(f"error: unknown flag: {arg}")
        else:
            opts["words"].append(arg)
        i += 1
    return opts


def _render(objects: list[dict], kind: str, plural: str, opts: dict, now: float) -> str:
    output = opts["output"]
    if output in ("json", "yaml"):
        doc = objects[0] if len(objects) == 1 and len(opts["words"]) > 2 else \
            {"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}}
        return json.dumps(doc, indent=4) + "\n" if output == "json" else yaml.safe_dump(doc, sort_keys=False)
    if output == "name":
        return "".join(f"{kind.lower()}/{o['metadata']['name']}\n" for o in objects)
    if output not in ("", "wide"):
        raise KubectlError(f'error: unable to match a printer suitable for the output format "{output}"')
    if not objects:
        return "" if opts["all"] or kind != "Pod" else f"No resources found in {opts['namespace']} namespace.\n"
    header, rows = {"Node": _node_rows, "Pod": _pod_rows, "Namespace": _namespace_rows}[kind](
        objects, now, output == "wide")
    if opts["all"] and kind == "Pod":
        header = ["NAMESPACE", *header]
        rows = [[o["metadata"]["namespace"], *r] for o, r in zip(objects, rows, strict=True)]
    if opts["show-labels"]:
        header = [*header, "LABELS"]
        rows = [[*r, ",".join(f"{k}={v}" for k, v in sorted((o["metadata"].get("labels") or {}).items())) or "<none>"]
                for o, r in zip(objects, rows, strict=True)]
    text = table(header, rows)
    return text.split("\n", 1)[1] if opts["no-headers"] else text


def table(header: list[str], rows: list[list[str]]) -> str:
    """kubectl's columns: left-aligned, three spaces apart."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "".join("   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
                   for r in [header, *rows])


def _node_rows(nodes: list[dict], now: float, wide: bool) -> tuple[list[str], list[list[str]]]:
    header = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    if wide:
        header += ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    rows = []
    for node in nodes:
        status = node.get("status", {})
        ready = next((c["status"] for c in status.get("conditions", []) if c["type"] == "Ready"), "Unknown")
        state = "Ready" if ready == "True" else "NotReady"
        if node.get("spec", {}).get("unschedulable"):
            state += ",SchedulingDisabled"
        roles = sorted(k.split("/", 1)[1] for k in node["metadata"].get("labels", {})
                       if k.startswith("node-role.kubernetes.io/"))
        info = status.get("nodeInfo", {})
        row = [node["metadata"]["name"], state, ",".join(roles) or "<none>",
               age(node["metadata"].get("creationTimestamp"), now), info.get("kubeletVersion", "")]
        if wide:
            addresses = {a["type"]: a["address"] for a in status.get("addresses", [])}
            row += [addresses.get("InternalIP", "<none>"), addresses.get("ExternalIP", "<none>"),
                    info.get("osImage", ""), info.get("kernelVersion", ""), info.get("containerRuntimeVersion", "")]
        rows.append(row)
    return header, rows


def _pod_rows(pods: list[dict], now: float, wide: bool) -> tuple[list[str], list[list[str]]]:
    header = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    if wide:
        header += ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    rows = []
    for pod in pods:
        statuses = pod.get("status", {}).get("containerStatuses", [])
        total = len(pod.get("spec", {}).get("containers", []))
        ready = sum(1 for c in statuses if c.get("ready"))
        restarts = sum(c.get("restartCount", 0) for c in statuses)
        phase = "Terminating" if pod["metadata"].get("deletionTimestamp") else pod.get("status", {}).get("phase", "Pending")
        row = [pod["metadata"]["name"], f"{ready}/{total}", phase, str(restarts),
               age(pod["metadata"].get("creationTimestamp"), now)]
        if wide:
            row += [pod.get("status", {}).get("podIP", "<none>"), pod.get("spec", {}).get("nodeName", "<none>"),
                    "<none>", "<none>"]
        rows.append(row)
    return header, rows


def _namespace_rows(spaces: list[dict], now: float, wide: bool) -> tuple[list[str], list[list[str]]]:
    return ["NAME", "STATUS", "AGE"], [
        [s["metadata"]["name"], s.get("status", {}).get("phase", "Active"),
         age(s["metadata"].get("creationTimestamp"), now)] for s in spaces]


def age(timestamp: str | None, now: float) -> str:
    if not timestamp:
        return "<unknown>"
    created = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    return human_duration(now - created)


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration: coarser units as the age grows."""
    s = int(seconds)
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"
