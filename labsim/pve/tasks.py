"""PVE worker tasks: UPIDs in PVE's format, a status and a log that ends in ``TASK OK`` or
``TASK ERROR: <message>`` (the message is also the task's ``exitstatus``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from labsim.clock import Clock
from labsim.pve.errors import PVEError, TaskError

log = logging.getLogger(__name__)
_KEEP = 500  # finished tasks kept for status/log queries, as PVE's task index rotates


@dataclass
class Task:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str
    status: str = "running"
    exitstatus: str | None = None
    endtime: int | None = None
    lines: list[str] = field(default_factory=list)

    def log(self, line: str) -> None:
        self.lines.append(line)

    def view(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "lines" and v is not None}


Work = Callable[[Task], Awaitable[None]]


class TaskRunner:
    def __init__(self, node: str, clock: Clock, on_change: Callable[[], None]) -> None:
        self.node = node
        self.clock = clock
        self.on_change = on_change
        self.tasks: dict[str, Task] = {}
        self._pids = itertools.count(0x1A2B0)
        self._running: set[asyncio.Task] = set()
        # Injected failures: task type -> messages for its next runs (see faults.py).
        self.failures: dict[str, list[str]] = {}

    def start(self, kind: str, target: str, user: str, work: Work) -> Task:
        """Start ``work`` as a task of type ``kind`` on ``target`` (a vmid) and return at once."""
        now = int(self.clock.now())
        pid = next(self._pids)
        pstart = 0x12F3A1 + pid
        upid = f"UPID:{self.node}:{pid:08X}:{pstart:08X}:{now:08X}:{kind}:{target}:{user}:"
        task = Task(upid, self.node, pid, pstart, now, kind, target, user)
        self.tasks[upid] = task
        job = asyncio.get_running_loop().create_task(self._run(task, work))
        self._running.add(job)
        job.add_done_callback(self._running.discard)
        self.on_change()
        return task

    async def _run(self, task: Task, work: Work) -> None:
        try:
            await work(task)
            task.exitstatus = "OK"
            task.log("TASK OK")
        except (TaskError, PVEError) as error:
            task.exitstatus = str(error)
            task.log(f"TASK ERROR: {error}")
        except Exception as error:  # a bug in the model: fail the task as PVE would, keep serving
            log.exception("task %s crashed", task.upid)
            task.exitstatus = f"internal error: {error}"
            task.log(f"TASK ERROR: internal error: {error}")
        task.status = "stopped"
        task.endtime = int(self.clock.now())
        self._trim()
        self.on_change()

    def _trim(self) -> None:
        finished = [t for t in self.tasks.values() if t.status == "stopped"]
        for task in finished[:-_KEEP]:
            del self.tasks[task.upid]

    def take_failure(self, kind: str) -> str | None:
        """The injected failure for the next task of ``kind``, consumed."""
        queued = self.failures.get(kind)
        return queued.pop(0) if queued else None

    def get(self, upid: str) -> Task:
        task = self.tasks.get(upid)
        if task is None:
            raise PVEError(500, f"no such task '{upid}'")  # PVE: task UPID unknown
        return task

    async def close(self) -> None:
        for job in list(self._running):
            job.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    def to_state(self) -> list[dict[str, Any]]:
        return [asdict(t) for t in self.tasks.values()]

    def load(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            task = Task(**doc)
            if task.status == "running":  # the lab stopped under it
                task.status, task.exitstatus = "stopped", "unexpected status"
                task.log("TASK ERROR: unexpected status")
            self.tasks[task.upid] = task
        self._pids = itertools.count(max((t.pid for t in self.tasks.values()), default=0x1A2AF) + 1)
