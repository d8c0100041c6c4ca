"""The supervisor's reaping after a lab was killed with -9: what its processes left is killed when the
next lab starts, even when the process it launched is gone and only its children hold on (nginx's
workers after their master), and nothing the lab did not start is touched. And no orphan when the
lab stops cleanly, whatever a process was doing: starting, or stopping with its pod's deletion."""

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

import pytest

from labsim.runtime import supervisor
from labsim.runtime.programs import nginx
from labsim.runtime.supervisor import Supervisor
from tests.labfiles import unique_pod_networks
from tests.labsim.controller_lab import InProcessCluster, running, wait_for
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


def _group(leader: int) -> list[int]:
    """The live processes of the process group ``leader`` leads."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError):
            if entry.name.isdigit() and Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[2] \
                    == str(leader) and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _kill_left(pids: list[int]) -> None:
    """What a failed test left: killed, so that no later test (nor CI) finds it."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_a_stop_while_the_process_starts_takes_its_whole_group(tmp_path: Path) -> None:
    """A pod deleted just as its process starts: the stop lands while the process is there but its
    start not yet done (asyncio was still connecting its pipes: its cancel killed the leader alone,
    and nginx's workers, forked meanwhile, stayed with PPID 1)."""
    before = set(_children(os.getpid()))
    launched = Supervisor(tmp_path / "run").launch(
        "web", [], ["sh", "-c", "sleep 600 & sleep 600 & wait"], env={"PATH": "/usr/bin:/bin"}, cwd="/",
        log_line=lambda line: None, exited=lambda: None)
    while not (started := set(_children(os.getpid())) - before):
        await asyncio.sleep(0)  # the launch's task runs until it has started the process
    (leader,) = started
    workers = wait_until(lambda: len(_children(leader)) == 2 and _children(leader))  # blocking: no loop turn
    try:
        launched.kill()
        await asyncio.wait({launched.task}, timeout=10)
        assert not any(_alive(pid) for pid in [leader, *workers])
        assert launched.exit_code == 128 + signal.SIGTERM
        assert list((tmp_path / "run").glob("*.pid")) == []
    finally:
        _kill_left(workers)


@pytest.mark.skipif(nginx.bin_dir() is None, reason="nginx is not installed (make tools)")
async def test_a_stopped_lab_leaves_no_nginx_of_a_pod_in_graceful_deletion(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real nginx whose pod is being deleted (SIGTERM sent, its grace period running) when the lab
    stops: the stop waits for it, kills its group once the grace period is over, and its master and
    workers are gone by PID. The master is stopped (SIGSTOP) so that it outlives the SIGTERM, as a
    program slow to stop does."""
    monkeypatch.setattr(supervisor, "STOP_SECONDS", 0.5)
    # Pod addresses of its own: a real nginx binds them (another run's pods must not hold them).
    cluster_cidr, service_cidr = unique_pod_networks()
    cluster = InProcessCluster(cluster_cidr=cluster_cidr, service_cidr=service_cidr)
    cluster.add_node("node-a", 1, pod_cidr=cluster_cidr.replace("/22", "/24"))
    pods = cluster.store.resource("v1", "Pod")
    group: list[int] = []
    try:
        async with running(cluster):
            cluster.store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
                                  "spec": {"nodeName": "node-a", "containers": [{"name": "nginx", "image": "nginx:1.27"}]}})
            pid_file = await wait_for(lambda: next((cluster.state_dir / "run").glob("*.pid"), None))
            pod = cluster.store.get(pods, "default", "web")
            master = json.loads(pid_file.read_text())["pid"]
            group = await wait_for(lambda: len(_group(master)) > 1 and _group(master))  # master and its workers
            os.kill(master, signal.SIGSTOP)
            cluster.store.delete(pods, "default", "web", grace=30)
            await wait_for(lambda: not cluster.runtime.runs_process(pod))  # its kubelet is stopping it
            assert _alive(master)  # stopped, it has not acted on the SIGTERM (its workers have)
        assert not any(_alive(pid) for pid in group)
    finally:
        _kill_left(group)
