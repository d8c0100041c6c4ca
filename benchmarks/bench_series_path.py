"""The critical path of a series run: the shortest wall time the twin's own operations allow.

The twin records every named wait it performs (``labsim.operations``: a clone, a boot, a package
install, a k3s download or start, a pod's image pull and start, a helm-install Job's run, a PVC's
provisioning...) with its modelled seconds and the wall-clock interval it took, in the lab's
``operations.jsonl``. The run is cut into windows: before the first notebook (the lab starting),
each notebook (papermill's start and end times), between notebooks, after the last. Within a
window, operations ran concurrently or one after another as labkit and the lab scheduled them: the
critical path walks back from the operation that ended last, each step to the operation that ended
last before the current one began (``critical_chain``), so concurrent operations count once and
serial ones add up; its length is their modelled seconds.
Windows run one after another, so the series' path is their sum. An operation crossing a window's
edge counts in each window for the share of its interval inside it.

``modelled_01_02`` is a cross-check from the lab's own dependencies for 01 and 02 (clones serial,
boots concurrent, agents after the server), independent of the order labkit chose.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from labsim.k3s.installer import DOWNLOAD_SECONDS
from labsim.k3s.service import AGENT_JOIN_SECONDS, SERVER_START_SECONDS
from labsim.node.model import CLOUD_INIT_SECONDS
from labsim.operations import Operation
from labsim.pve.model import CONFIG_S, FULL_CLONE_MIN_S, FULL_CLONE_S_PER_GIB, RESIZE_S
from labsim.pve.power import AGENT_AFTER_BOOT_S, GUEST_BOOT_S, QEMU_START_S

TEMPLATE_DISK_GIB = 2252 / 1024  # the twin's cloud-init template disk (labsim/pve/vms.py, size=2252M)


@dataclass(frozen=True)
class Window:
    name: str
    start: float  # wall-clock epoch seconds
    end: float


@dataclass(frozen=True)
class WindowPath:
    window: Window
    seconds: float  # modelled seconds of the critical path inside the window
    chain: list[Operation]


def critical_chain(ops: list[Operation]) -> tuple[float, list[Operation]]:
    """The operations the end waited on, as they ran: from the one that ended last, back through
    each one's predecessor, the operation that ended last before it began (what released it); its
    modelled seconds. Not the heaviest chain of non-overlapping operations: at a small time scale
    the run's own overhead spaces concurrent operations apart, and that chain would stitch
    independent ones (one VM's cloud-init after another's) into a path that never was."""
    ordered = sorted(ops, key=lambda op: (op.end, op.start))
    ends = [op.end for op in ordered]
    chain: list[Operation] = []
    at = len(ordered) - 1
    while at >= 0:
        chain.append(ordered[at])
        at = min(bisect.bisect_right(ends, ordered[at].start), at) - 1  # ordered[:k] ended when it began
    return sum(op.modelled_s for op in chain), chain[::-1]


def clipped(op: Operation, window: Window) -> Operation | None:
    """The part of ``op`` inside ``window``, its modelled seconds pro rata of its wall interval."""
    if op.end <= op.start:  # instant (time_scale 0): it belongs where it happened
        return op if window.start <= op.start < window.end else None
    start, end = max(op.start, window.start), min(op.end, window.end)
    if end <= start:
        return None
    return replace(op, start=start, end=end, modelled_s=op.modelled_s * (end - start) / (op.end - op.start))


def paths(ops: list[Operation], windows: list[Window]) -> list[WindowPath]:
    out = []
    for window in windows:
        inside = [part for op in ops if (part := clipped(op, window)) is not None]
        seconds, chain = critical_chain(inside)
        out.append(WindowPath(window, seconds, chain))
    return out


def windows(run_start: float, run_end: float, notebooks: list[Window]) -> list[Window]:
    """The notebooks' windows with the run's stretches before, between and after them."""
    out, at = [], run_start
    for n, nb in enumerate(notebooks):
        if nb.start > at:
            out.append(Window("lab start" if n == 0 else f"before {nb.name}", at, nb.start))
        out.append(nb)
        at = nb.end
    if run_end > at:
        out.append(Window("after the last notebook", at, run_end))
    return out


def notebook_windows(folder: Path) -> list[Window]:
    """Each executed notebook's papermill start and end (UTC, naive ISO) in a run folder."""
    out = []
    for path in sorted(folder.glob("[0-9][0-9]-*.ipynb")):
        meta = json.loads(path.read_text())["metadata"].get("papermill", {})
        if meta.get("start_time") and meta.get("end_time"):
            out.append(Window(path.stem, _epoch(meta["start_time"]), _epoch(meta["end_time"])))
    return out


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def modelled_01_02(summary: dict) -> float:
    """Modelled seconds of 01-02's longest dependency chain by the lab's own dependencies (clones
    one after another on one template, each boot after its clone, the server once its VM answers,
    each agent once its VM and the server are up), whatever order labkit chose."""
    inventory = summary.get("inventory", {})
    vms = list(inventory.get("vms", {}))
    nodes = inventory.get("nodes", {})
    clone = max(FULL_CLONE_MIN_S, TEMPLATE_DISK_GIB * FULL_CLONE_S_PER_GIB)
    boot = CONFIG_S + RESIZE_S + QEMU_START_S + GUEST_BOOT_S + max(CLOUD_INIT_SECONDS, AGENT_AFTER_BOOT_S)
    ssh_ready = {name: clone * (n + 1) + boot for n, name in enumerate(vms)}  # clone n waits for clones 0..n-1
    if not nodes:
        return max(ssh_ready.values(), default=0.0)
    server = next(name for name, facts in nodes.items() if "control-plane" in str(facts.get("roles")))
    server_up = ssh_ready[server] + DOWNLOAD_SECONDS + SERVER_START_SECONDS
    joined = [max(server_up, ssh_ready[name]) + DOWNLOAD_SECONDS + AGENT_JOIN_SECONDS
              for name in nodes if name != server]
    return max([server_up, *joined])
