"""The `k3s` binary on a node: `--version`, `kubectl ...`, `etcd-snapshot save|ls|list|delete|prune`
and `server --cluster-reset [--cluster-reset-restore-path=FILE]`.

Like k3s it logs to stderr in logrus' text format and reads /etc/rancher/k3s/config.yaml,
warning about the keys a subcommand does not know. Snapshots need embedded etcd and a running
server; without etcd k3s answers "etcd datastore disabled".
"""

from __future__ import annotations

from labsim.k3s import kubectl, service, snapshots, units
from labsim.k3s.config import ConfigError, K3sConfig, merge, parse_args, parse_config_files
from labsim.k3s.logs import Logger
from labsim.node.registry import CommandContext, CommandResult, command

KUBECTL_LINK = "/usr/local/bin/kubectl"
USAGE = """NAME:
   k3s - Kubernetes, but small and simple

USAGE:
   k3s [global options] command [command options] [arguments...]

COMMANDS:
   server         Run management server
   agent          Run node agent
   kubectl        Run kubectl
   etcd-snapshot  Manage etcd snapshots
   help, h        Shows a list of commands or help for one command
"""


class Fatal(Exception):
    """k3s exits 1 after a `level=fatal` line."""


@command("k3s", units.BINARY, installed_at=units.BINARY)
async def k3s(ctx: CommandContext) -> CommandResult:
    args = ctx.argv[1:]
    if not args or args[0] in ("help", "h", "--help", "-h"):
        return CommandResult.ok(USAGE)
    if args[0] in ("--version", "-v", "version"):
        return CommandResult.ok(units.installed_version(ctx.node).version_lines())
    if args[0] == "kubectl":
        return await kubectl.run(ctx, args[1:])
    log = Logger(ctx.node.lab.clock)
    try:
        stdout = await _subcommand(ctx, args, log)
    except (Fatal, ConfigError) as e:
        log.fatal(str(e))
        return CommandResult(stderr=log.text().encode(), exit_status=1)
    return CommandResult(stdout=stdout.encode(), stderr=log.text().encode())


@command("kubectl", KUBECTL_LINK, installed_at=KUBECTL_LINK)
async def kubectl_link(ctx: CommandContext) -> CommandResult:
    return await kubectl.run(ctx, ctx.argv[1:])


async def _subcommand(ctx: CommandContext, args: list[str], log: Logger) -> str:
    if args[0] == "etcd-snapshot":
        return await etcd_snapshot(ctx, args[1:], log)
    if args[0] == "server" and any(a.split("=")[0] == "--cluster-reset" for a in args):
        await cluster_reset(ctx, args[1:], log)
        return ""
    if args[0] in ("server", "agent"):
        raise Fatal(f"the embedded lab runs k3s {args[0]} through systemd: "
                    f"systemctl start {units.SERVER_UNIT if args[0] == 'server' else units.AGENT_UNIT}")
    raise Fatal(f"No help topic for '{args[0]}'")


# --- etcd-snapshot ------------------------------------------------------------------------------

async def etcd_snapshot(ctx: CommandContext, args: list[str], log: Logger) -> str:
    sub = args[0] if args and not args[0].startswith("-") else "save"
    rest = args[1:] if args and not args[0].startswith("-") else args
    names: list[str] = []
    cfg = _snapshot_config(ctx, rest, names if sub == "delete" else None, log)
    cluster = _etcd_cluster(ctx)
    folder = cfg.get("dir") or snapshots.SNAPSHOT_DIR
    node_name = (cfg.get("node-name") or ctx.node.hostname).lower()
    if sub == "save":
        await snapshots.save(ctx.node, cluster, folder, cfg.get("name") or snapshots.DEFAULT_NAME, node_name, log)
        await snapshots.prune(ctx.node, cluster, folder, snapshots.DEFAULT_NAME, node_name, _retention(cfg), log)
        return ""
    if sub in ("ls", "list"):
        return snapshots.format_table(snapshots.list_files(ctx.node, folder))
    if sub == "delete":
        if not names:
            raise Fatal("no snapshots given for removal")
        missing = [n for n in names if not ctx.node.is_file(f"{folder}/{n}")]
        if missing:
            raise Fatal(f"snapshot {missing[0]} not found")
        await snapshots.delete(ctx.node, cluster, folder, names, log)
        return ""
    if sub == "prune":
        prefix = cfg.get("name") or snapshots.DEFAULT_NAME
        await snapshots.prune(ctx.node, cluster, folder, prefix, node_name, _retention(cfg), log)
        return ""
    raise Fatal(f"No help topic for '{sub}'")


def _snapshot_config(ctx: CommandContext, args: list[str], names: list[str] | None, log: Logger) -> K3sConfig:
    if not ctx.is_root:
        raise Fatal(f"open /home/{ctx.user}/.rancher/k3s/server/token: no such file or directory")
    file_items, warnings = parse_config_files(units.config_texts(ctx.node), "etcd-snapshot")
    for warning in warnings:
        log.warn(warning)
    cli_items = parse_args(args, "etcd-snapshot", names)
    return merge("etcd-snapshot", env=ctx.env, file_items=file_items, cli_items=cli_items)


def _etcd_cluster(ctx: CommandContext):
    node = ctx.node
    if not node.is_file(units.TOKEN_FILE):
        raise Fatal(f"open {units.TOKEN_FILE}: no such file or directory")
    cluster = node.lab.clusters.find(node.spec.ip)
    if cluster is None or node.service_state(units.SERVER_UNIT) != "active":
        raise Fatal('Get "https://127.0.0.1:6443/db/info": dial tcp 127.0.0.1:6443: connect: connection refused')
    if not cluster.embedded_etcd:
        raise Fatal("see server log for details: etcd datastore disabled")
    return cluster


def _retention(cfg: K3sConfig) -> int:
    value = cfg.get("snapshot-retention", snapshots.DEFAULT_RETENTION)
    try:
        return int(value)
    except ValueError as e:
        raise Fatal(f'invalid value "{value}" for flag -snapshot-retention: parse error') from e


# --- cluster reset ------------------------------------------------------------------------------

async def cluster_reset(ctx: CommandContext, args: list[str], log: Logger) -> None:
    """`k3s server --cluster-reset [--cluster-reset-restore-path=FILE]` with k3s stopped."""
    node = ctx.node
    if not ctx.is_root:
        raise Fatal("permission denied: k3s server must run as root")
    file_items, warnings = parse_config_files(units.config_texts(node), "server")
    for warning in warnings:
        log.warn(warning)
    cfg = merge("server", env=ctx.env, file_items=file_items, cli_items=parse_args(args, "server"))
    if node.service_state(units.SERVER_UNIT) == "active":
        raise Fatal("starting kubernetes: preparing server: init cluster datastore and https: "
                    "listen tcp :6443: bind: address already in use")
    restore = cfg.get("cluster-reset-restore-path")
    if restore and not node.is_file(restore):
        raise Fatal(f"starting kubernetes: preparing server: start managed database: "
                    f"open {restore}: no such file or directory")
    cluster = node.lab.clusters.find(node.spec.ip)
    if cluster is None and restore:  # a server that never ran: its datastore starts from the snapshot
        cluster = await service.bootstrap_cluster(node, cfg)
    if cluster is None or not cluster.embedded_etcd:
        raise Fatal("starting kubernetes: preparing server: --cluster-reset requires an existing embedded etcd "
                    f"datastore in {units.SERVER_DIR}/db/etcd")
    if restore:
        old = f"{units.SERVER_DIR}/db/etcd-old-{int(node.lab.clock.now())}"
        log.info(f"Pre-restore etcd database moved to {old}")
        await cluster.restore(node.read(restore))
    log.info("Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. "
             "Backup and delete ${datadir}/server/db on each peer etcd server and rejoin the nodes")
