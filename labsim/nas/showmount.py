"""``showmount -e NAS`` on a node with nfs-common installed: the NAS's export list, as a
Synology's mountd answers it (modelled from labsim.nas.exports: the NAS's real NFS server,
nfs-ganesha, serves NFSv4 without rpcbind/mountd), or the RPC error a client sees when the NAS
does not answer. What a preflight runs on every node to see that the export is reachable."""

from __future__ import annotations

from labsim.nas import exports
from labsim.node.network import NetworkUnreachable, NoSuchHost, resolve
from labsim.node.registry import CommandContext, CommandResult, command

USAGE = "Usage: showmount [-adehv]\n       [--all] [--directories] [--exports]\n       [--no-headers] [--help] [--version] [host]\n"


@command("showmount", installed_at="/usr/sbin/showmount")
async def showmount(ctx: CommandContext) -> CommandResult:
    args = ctx.argv[1:]
    hosts = [a for a in args if not a.startswith("-")]
    if not ({"-e", "--exports"} & set(args)) or len(hosts) != 1:
        return CommandResult.fail(USAGE, 1)
    host = hosts[0]
    try:
        address = resolve(ctx.node, host)
    except NoSuchHost:
        return CommandResult.fail("clnt_create: RPC: Unknown host\n", 1)
    except NetworkUnreachable:
        return CommandResult.fail("clnt_create: RPC: Unable to send; errno = Network is unreachable\n", 1)
    server = exports.server(address)
    if server is None:
        return CommandResult.fail("clnt_create: RPC: Unable to receive; errno = Connection refused\n", 1)
    if not server.reachable:
        return CommandResult.fail("clnt_create: RPC: Timed out\n", 1)
    lines = [] if "--no-headers" in args else [f"Export list for {host}:"]
    lines += [f"{path} *" for path in sorted(server.exports())]
    return CommandResult.ok("\n".join(lines) + "\n")
