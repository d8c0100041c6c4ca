"""The guest restarting itself: ``reboot`` (and ``shutdown -r``, ``systemctl reboot``'s twin)
as root. The command answers, then the node goes down as on a power cycle (SSH closes, services
stop), and boots again after ``REBOOT_SECONDS`` of lab time: a new boot id, /run emptied, the
enabled units (k3s) started. The VM stays running for PVE, as for a guest-initiated reboot."""

from __future__ import annotations

import asyncio

from labsim.node.registry import CommandContext, CommandResult, command

# Modelled seconds from the shutdown to the guest booted again (firmware, kernel, systemd).
REBOOT_SECONDS = 25.0
# Real seconds the command's answer gets to reach the client before the node goes down.
ANSWER_SECONDS = 0.05
NOT_ROOT = ("Failed to set wall message, ignoring: Interactive authentication required.\n"
            "Call to Reboot failed: Interactive authentication required.\n")

_cycles: set[asyncio.Task] = set()  # the reboots under way (kept referenced until done)


@command("reboot")
async def reboot(ctx: CommandContext) -> CommandResult:
    return _schedule(ctx)


@command("shutdown")
async def shutdown(ctx: CommandContext) -> CommandResult:
    if "-r" not in ctx.argv[1:]:
        return CommandResult.fail("shutdown: the embedded lab models `shutdown -r` only; power a VM off through "
                                  "PVE\n", 1)
    return _schedule(ctx)


def _schedule(ctx: CommandContext) -> CommandResult:
    if not ctx.is_root:
        return CommandResult.fail(NOT_ROOT, 1)
    task = asyncio.get_running_loop().create_task(_cycle(ctx.node))
    _cycles.add(task)
    task.add_done_callback(_cycles.discard)
    return CommandResult.ok()


async def _cycle(node) -> None:
    host, spec = node.lab.nodes, node.spec
    await asyncio.sleep(ANSWER_SECONDS)
    await host.stop_node(spec.vmid)
    await node.lab.clock.sleep(REBOOT_SECONDS, f"{node.hostname} reboot")
    if host.get(spec.vmid) is None and node.lab.nodes is host:  # not started meanwhile (PVE), lab still up
        await host.start_node(spec)
