"""The supervisor's reaping after a lab was killed with -9: what its processes left is killed when the
next lab starts, even when the process it launched is gone and only its children hold on (nginx's
workers after their master), and nothing the lab did not start is touched."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from labsim.runtime.supervisor import Supervisor
from tests.polling import wait_until

LAB = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from labsim.runtime.supervisor import Supervisor

    async def main():
        Supervisor(Path(sys.argv[1])).launch(
            "web", [], ["sh", "-c", "sleep 600 & sleep 600 & echo ready; wait"], env={"PATH": "/usr/bin:/bin"},
            cwd="/", log_line=lambda line: print(line, flush=True), exited=lambda: None)
        await asyncio.sleep(600)

    asyncio.run(main())
""")


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def _subreaper(on: bool) -> None:
    """Orphans of this process's descendants come to it (not to init), so the test can collect the
    launched process at once: gone from /proc, as a real init collects it."""
    assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def _reap_as_init(run_dir: Path, adopted: list[int]) -> list[int]:
    """The supervisor's reap while this process, their parent now, collects the killed ones as init
    would (the reap waits until they are gone from /proc)."""
    reaping = asyncio.ensure_future(Supervisor(run_dir).reap())
    while not reaping.done():
        for pid in adopted:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        await asyncio.sleep(0.05)
    return reaping.result()


def test_reaping_kills_what_a_killed_lab_left_in_its_groups_and_nothing_else(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    workers: list[int] = []
    _subreaper(True)
    lab = subprocess.Popen([sys.executable, "-c", LAB, str(run_dir)], stdout=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parents[2])
    unrelated = subprocess.Popen(["sleep", "600"], start_new_session=True)  # a process the lab did not start
    try:
        assert lab.stdout is not None and lab.stdout.readline() == "ready\n"
        leader = json.loads((run_dir / "web.pid").read_text())["pid"]
        workers = wait_until(lambda: len(_children(leader)) == 2 and _children(leader))
        lab.kill()  # -9: no chance to stop what it started
        lab.wait(10)
        os.kill(leader, signal.SIGKILL)  # the launched process ends too; its children stay, orphaned
        os.waitpid(leader, 0)
        assert not Path(f"/proc/{leader}").exists()
        assert all(_alive(pid) for pid in workers)
        # a PID file naming a live process of another start time: the number was reused, not the lab's
        (run_dir / "other.pid").write_text(json.dumps({"pid": unrelated.pid, "start": "1"}))

        killed = asyncio.run(_reap_as_init(run_dir, workers))

        assert sorted(killed) == sorted(workers)
        assert not any(_alive(pid) for pid in workers)
        assert _alive(unrelated.pid)
        assert list(run_dir.glob("*.pid")) == []
        assert asyncio.run(Supervisor(run_dir).reap()) == []  # nothing left to reap
    finally:
        _subreaper(False)
        lab.kill()
        unrelated.kill()
        unrelated.wait(10)
        for orphan in workers:  # adopted by this process: collect them if the test failed before
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
                os.waitpid(orphan, 0)
