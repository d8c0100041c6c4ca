"""`k3s kubectl` (and the `kubectl` link) on a node: the subset an operator types on the server
itself, `get nodes|pods|namespaces [NAME] [-A|-n NS] [-l SELECTOR] [-o wide|name|json|yaml]
[--show-labels] [--no-headers]`, answered from
the cluster whose API this node serves, in kubectl's own table layout.

As on k3s it reads /etc/rancher/k3s/k3s.yaml: without it (an agent) kubectl falls back to
localhost:8080, unreadable (mode 0600 for a non-root user) it fails as k3s' kubectl does.
"""

from __future__ import annotations

import json

import yaml

from labsim.k3s import units
from labsim.kube import tables
from labsim.kube.resources import Resource
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
    return _render(res, objects, opts, ctx.node.lab.clock.now())


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


def _render(res: Resource, objects: list[dict], opts: dict, now: float) -> str:
    kind = res.kind
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
    columns, cells = tables.printed(res, objects, now)
    shown = [i for i, (_, _, priority) in enumerate(columns) if priority == 0 or output == "wide"]
    header = [columns[i][0].upper() for i in shown]
    rows = [["" if row[i] is None else str(row[i]) for i in shown] for row in cells]
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
