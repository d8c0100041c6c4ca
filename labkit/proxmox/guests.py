"""Waiting for guests: a started VM is usable once its guest agent reports the planned address.
PVE has no event for this, so the agent is polled, several VMs at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from proxmoxer import ResourceException

from labkit.errors import ProxmoxError
from labkit.params import Lab, Node
from labkit.proxmox.api import Api, pve_message


@dataclass(frozen=True)
class AgentReport:
    name: str
    vmid: int
    ip: str
    started: datetime
    answered: datetime

    @property
    def seconds(self) -> float:
        return (self.answered - self.started).total_seconds()


def agent_addresses(api: Api, node: str, vmid: int) -> list[str]:
    """IPv4 addresses the guest agent reports (raises ResourceException while the agent is down)."""
    answer = api.nodes(node).qemu(vmid).agent("network-get-interfaces").get()
    interfaces = answer.get("result", []) if isinstance(answer, dict) else []
    return [a["ip-address"] for i in interfaces for a in i.get("ip-addresses", [])
            if a.get("ip-address-type") == "ipv4"]


def wait_agent(api: Api, lab: Lab, node: Node, timeout: float = 300) -> AgentReport:
    """Poll the guest agent until it reports the node's address. PVE has no event for this."""
    start, delay, last = time.monotonic(), 0.05, "no answer yet"
    started = datetime.now(UTC)
    while time.monotonic() - start < timeout:
        try:
            addresses = agent_addresses(api, lab.proxmox.node, node.vmid)
        except ResourceException as exc:
            last = pve_message(exc)
            if last == f"VM {node.vmid} is not running":  # nothing starts it while we wait: say so now
                raise ProxmoxError(
                    f"VM {node.vmid} ({node.name}) is not running, so its guest agent cannot answer. Start it, "
                    "or if the plan showed drift for it (e.g. a clone that was interrupted), re-run with "
                    "reconcile=True (`labkit run -p reconcile true`) or destroy and re-create it.") from None
        else:
            if str(node.ip) in addresses:
                return AgentReport(node.name, node.vmid, str(node.ip), started, datetime.now(UTC))
            last = f"agent reports {', '.join(addresses) or 'no IPv4 address'}, expected {node.ip}"
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    raise ProxmoxError(
        f"VM {node.vmid} ({node.name}): the guest agent did not report {node.ip} within {timeout:.0f} s "
        f"(last: {last}). Check that qemu-guest-agent is installed and enabled in template "
        f"{lab.proxmox.template_vmid}, that the VM has agent=1, and its console for cloud-init network errors.")


def wait_agents(api: Api, lab: Lab, names: list[str], *, timeout: float = 300,
                on_ready: Callable[[AgentReport], None] | None = None) -> list[AgentReport]:
    """Wait for several guests at once (they boot concurrently)."""
    def one(name: str) -> AgentReport:
        report = wait_agent(api, lab, lab.node(name), timeout)
        if on_ready:
            on_ready(report)
        return report

    if not names:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        return list(pool.map(one, names))

