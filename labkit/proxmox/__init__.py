"""Proxmox VE: connect, observe, plan, and provision the lab's VMs (notebook 01).

Everything goes through PVE's HTTPS API with proxmoxer, an API token, and TLS verification
against the lab's CA file or the certificate's pinned SHA-256 fingerprint. The flow is
plan -> capacity check -> apply -> wait: ``plan`` compares the lab file with the VMs that exist,
``check_capacity`` refuses an over-committing plan, ``apply`` makes exactly the planned changes,
and ``wait_agents`` waits for each guest agent to report the VM's address.

One module per concern: ``api`` (client, requests, tasks, locks), ``inventory`` (what PVE has),
``provision`` (desired state, plan, capacity check, apply), ``guests`` (waiting for agents).
Notebooks use them through this package: ``from labkit import proxmox``.
"""

from labkit.proxmox.api import Api, connect, wait_task, with_lock_retry
from labkit.proxmox.guests import AgentReport, agent_addresses, wait_agent, wait_agents
from labkit.proxmox.inventory import Capacity, Vm, capacity, list_vms, task_ids, vm_table
from labkit.proxmox.provision import Applied, CapacityCheck, VmPlan, apply, check_capacity, config_drift, plan

__all__ = [
    "AgentReport", "Api", "Applied", "Capacity", "CapacityCheck", "Vm", "VmPlan", "agent_addresses", "apply",
    "capacity", "check_capacity", "config_drift", "connect", "list_vms", "plan", "task_ids", "vm_table",
    "wait_agent", "wait_agents", "wait_task", "with_lock_retry",
]
