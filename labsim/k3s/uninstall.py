"""The scripts k3s' installer leaves in /usr/local/bin: `k3s-killall.sh` (stop k3s and its
containers), `k3s-uninstall.sh` (a server) and `k3s-agent-uninstall.sh` (an agent), which stop
the unit, disable it and remove what the installer and k3s wrote. Like the real scripts they
re-run themselves with sudo, so the cloud-init user may call them directly.

An uninstalled server takes its cluster with it; an uninstalled agent leaves its Node object
behind, NotReady, as on k3s (delete it with kubectl).
"""

from __future__ import annotations

from labsim.k3s import service, units
from labsim.k3s.installer import BIN_DIR, KILLALL, LINKS
from labsim.node.registry import CommandContext, CommandResult, command

SERVER_SCRIPT = f"{BIN_DIR}/k3s-uninstall.sh"
AGENT_SCRIPT = f"{BIN_DIR}/k3s-agent-uninstall.sh"
# What k3s and its installer leave on a node, besides the units and scripts.
DATA = ("/etc/rancher/k3s", "/run/k3s", "/var/lib/kubelet", "/var/lib/rancher/k3s", "/etc/rancher/node")


@command("k3s-killall.sh", KILLALL, installed_at=KILLALL)
async def killall(ctx: CommandContext) -> CommandResult:
    for unit in units.UNITS:
        await ctx.node.stop_service(unit)
    service.kill_containers(ctx.node)  # what stopping the units leaves running (KillMode=process)
    return CommandResult.ok()


@command("k3s-uninstall.sh", SERVER_SCRIPT, installed_at=SERVER_SCRIPT)
async def uninstall_server(ctx: CommandContext) -> CommandResult:
    return await _uninstall(ctx, units.SERVER_UNIT)


@command("k3s-agent-uninstall.sh", AGENT_SCRIPT, installed_at=AGENT_SCRIPT)
async def uninstall_agent(ctx: CommandContext) -> CommandResult:
    return await _uninstall(ctx, units.AGENT_UNIT)


async def _uninstall(ctx: CommandContext, unit: str) -> CommandResult:
    node = ctx.node
    name = units.node_name(node, units.unit_config(node, unit)) if node.exists(units.unit_path(unit)) else None
    await node.stop_service(unit)
    service.kill_containers(node)  # the real script runs k3s-killall.sh first
    messages = []
    if node.is_enabled(unit):
        node.enable_service(unit, False)
        messages.append(f"Removed /etc/systemd/system/multi-user.target.wants/{unit}.service.\n")
    if unit == units.SERVER_UNIT and name:
        await node.lab.clusters.remove(name)  # its agents' containers too: the twin's cluster goes with its server
    others = [u for u in units.UNITS if u != unit and node.exists(units.unit_path(u))]
    paths = [units.unit_path(unit), units.env_path(unit), f"{BIN_DIR}/{unit}-uninstall.sh"]
    if not others:  # the last k3s unit on the node: the binary and k3s' data go too
        paths += [units.BINARY, KILLALL, *(f"{BIN_DIR}/{link}" for link in LINKS), *DATA]
    for path in paths:
        if node.exists(path) or node.host_path(path).is_symlink():
            node.remove(path, recursive=True)
    return CommandResult(stderr="".join(messages).encode())
