"""The node's storages: ``local`` (directory: ISOs, templates, backups) and the VM storage of the
lab file (LVM-thin), whose usage is the sum of the disks allocated on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1 << 30


@dataclass(frozen=True)
class Storage:
    storage: str
    type: str
    content: str
    total: int

    def status(self, used: int, full: bool) -> dict[str, Any]:
        used = self.total if full else min(used, self.total)
        return {
            "storage": self.storage, "type": self.type, "content": self.content, "shared": 0,
            "active": 1, "enabled": 1, "total": self.total, "used": used, "avail": self.total - used,
            "used_fraction": used / self.total,
        }


def node_storages(vm_storage: str) -> dict[str, Storage]:
    storages = [
        Storage("local", "dir", "backup,iso,vztmpl", 100 * GIB),
        Storage(vm_storage, "lvmthin", "images,rootdir", 400 * GIB),
    ]
    return {s.storage: s for s in storages}
