"""Faults a test injects, each visible to a client exactly as the real failure on PVE.

Kept as plain data that the model and the server consult; set them from Python through
``lab.pve.faults`` or over HTTPS through the admin endpoint (``/labsim/faults``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# What PVE's workers print when these tasks fail, for faults that name no message.
DEFAULT_TASK_ERRORS = {
    "qmclone": "clone failed: command '/sbin/lvcreate -aly -V 2306867200b --name vm-{id}-disk-0 "
               "--thinpool pve/data' failed: exit code 5",
    "qmstart": "start failed: QEMU exited with code 1",
    "qmshutdown": "VM quit/powerdown failed",
    "qmstop": "VM quit/powerdown failed - got timeout",
    "qmreboot": "VM quit/powerdown failed",
    "qmdestroy": "lvremove 'pve/vm-{id}-disk-0' error: Logical volume pve/vm-{id}-disk-0 in use.",
    "resize": "command '/sbin/lvextend -L 34603008k pve/vm-{id}-disk-0' failed: exit code 5",
    "qmsnapshot": "snapshot create failed: starting cleanup",
    "qmrollback": "rollback failed: command 'lvconvert' failed: exit code 5",
    "qmcreate": "unable to create VM {id} - command 'lvcreate' failed: exit code 5",
}


@dataclass
class Faults:
    slow_shutdown: dict[int, float] = field(default_factory=dict)  # vmid -> modelled power-down seconds
    agent_down: set[int] = field(default_factory=set)  # guest agents that never come up
    storage_full: set[str] = field(default_factory=set)
    drop_requests: int = 0  # the next N HTTPS requests lose their connection
    request_delay: float = 0.0  # real seconds each request waits before an answer

    def view(self) -> dict[str, Any]:
        return {
            "slow_shutdown": {str(k): v for k, v in self.slow_shutdown.items()},
            "agent_down": sorted(self.agent_down),
            "storage_full": sorted(self.storage_full),
            "drop_requests": self.drop_requests,
            "request_delay": self.request_delay,
        }
