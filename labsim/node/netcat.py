"""`nc` (netcat-openbsd, on Ubuntu's cloud image) in its port-check form, ``nc -z [-v] [-w SECS]
HOST PORT``: a real TCP connection from the node, fenced to its lab as `curl` is
(labsim.node.network), with netcat's exit status and messages."""

from __future__ import annotations

import asyncio

from labsim.node import network
from labsim.node.registry import CommandContext, CommandResult, command

USAGE = "usage: nc [-46CDdFhklNnrStUuvZz] [-w timeout] [destination] [port]\n"


@command("nc", "netcat")
async def netcat(ctx: CommandContext) -> CommandResult:
    args, zero, verbose, wait = ctx.argv[1:], False, False, 10.0
    operands = []
    while args:
        arg = args.pop(0)
        if arg == "-w" and args:
            wait = float(args.pop(0))
        elif arg.startswith("-") and set(arg[1:]) <= set("zvn"):
            zero, verbose = zero or "z" in arg, verbose or "v" in arg
        elif arg.startswith("-"):
            return CommandResult.fail(f"nc: invalid option -- '{arg[1:]}'\n{USAGE}")
        else:
            operands.append(arg)
    if not zero or len(operands) != 2 or not operands[1].isdigit():
        return CommandResult.fail(USAGE)  # only the port check (-z) is modelled
    host, port = operands[0], int(operands[1])
    try:
        address = network.resolve(ctx.node, host)
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout=wait)
    except network.NoSuchHost:
        return CommandResult.fail(f"nc: getaddrinfo for host \"{host}\" port {port}: Name or service not known\n")
    except network.NetworkUnreachable:
        return CommandResult.fail(f"nc: connect to {host} port {port} (tcp) failed: Network is unreachable\n")
    except TimeoutError:
        return CommandResult.fail(f"nc: connect to {host} port {port} (tcp) timed out: Operation now in progress\n")
    except OSError:
        return CommandResult.fail(f"nc: connect to {host} port {port} (tcp) failed: Connection refused\n")
    writer.close()
    said = f"Connection to {host} {port} port [tcp/*] succeeded!\n" if verbose else ""
    return CommandResult(stderr=said.encode())
