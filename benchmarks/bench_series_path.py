"""The critical path of a cold series: the shortest wall time the twin's own durations allow.

The twin performs each operation for a modelled duration (``labsim.clock.Clock.sleep``, constants
in its modules, imported here): a full clone, configure, resize, QEMU start, guest boot, cloud-init,
the k3s download, server start and agent join. Which ones a run performed comes from its summary
(the VMs of 01's inventory were cloned and started, the nodes of 02's joined: a cold run creates
all of them). The dependencies are the lab's, not labkit's schedule: clones one after another (one
template's lock), each VM's boot after its own clone and concurrent with the next clones, the server
once its VM answers SSH, each agent once both its VM and the server are up. Operations of notebooks
beyond 02 are not modelled yet: the figure is a lower bound for them.
"""

from __future__ import annotations

from labsim.k3s.installer import DOWNLOAD_SECONDS
from labsim.k3s.service import AGENT_JOIN_SECONDS, SERVER_START_SECONDS
from labsim.node.model import CLOUD_INIT_SECONDS
from labsim.pve.model import CONFIG_S, FULL_CLONE_MIN_S, FULL_CLONE_S_PER_GIB, RESIZE_S
from labsim.pve.power import AGENT_AFTER_BOOT_S, GUEST_BOOT_S, QEMU_START_S

TEMPLATE_DISK_GIB = 2252 / 1024  # the twin's cloud-init template disk (labsim/pve/vms.py, size=2252M)


def critical_path(summary: dict) -> tuple[float, list[tuple[str, float]]]:
    """Modelled seconds of the longest dependency chain, and that chain as (step, seconds)."""
    inventory = summary.get("inventory", {})
    vms = list(inventory.get("vms", {}))
    nodes = inventory.get("nodes", {})
    clone = max(FULL_CLONE_MIN_S, TEMPLATE_DISK_GIB * FULL_CLONE_S_PER_GIB)
    boot = CONFIG_S + RESIZE_S + QEMU_START_S + GUEST_BOOT_S + max(CLOUD_INIT_SECONDS, AGENT_AFTER_BOOT_S)
    ssh_ready = {name: clone * (n + 1) + boot for n, name in enumerate(vms)}  # clone n waits for clones 0..n-1
    if not nodes:
        last = max(ssh_ready, key=ssh_ready.get)
        return ssh_ready[last], [(f"{vms.index(last) + 1} clones", clone * (vms.index(last) + 1)), ("boot", boot)]
    server = next(name for name, facts in nodes.items() if "control-plane" in str(facts.get("roles")))
    server_up = ssh_ready[server] + DOWNLOAD_SECONDS + SERVER_START_SECONDS
    joined = {name: max(server_up, ssh_ready[name]) + DOWNLOAD_SECONDS + AGENT_JOIN_SECONDS
              for name in nodes if name != server}
    if not joined or max(joined.values()) <= server_up:
        return server_up, [("clones to the server", clone * (vms.index(server) + 1)), ("boot", boot),
                           ("k3s server", DOWNLOAD_SECONDS + SERVER_START_SECONDS)]
    last = max(joined, key=joined.get)
    if ssh_ready[last] > server_up:
        steps = [(f"{vms.index(last) + 1} clones", clone * (vms.index(last) + 1)), ("boot", boot)]
    else:
        steps = [("clones to the server", clone * (vms.index(server) + 1)), ("boot", boot),
                 ("k3s server", DOWNLOAD_SECONDS + SERVER_START_SECONDS)]
    return joined[last], steps + [("k3s agent join", DOWNLOAD_SECONDS + AGENT_JOIN_SECONDS)]
