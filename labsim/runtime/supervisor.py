"""The supervisor of real processes: each runs in a session (process group) of its own, its
stdout/stderr lines become the container's log, its end is reported, and its PID (with the
process's start time, so a reused PID is never hit) is kept in ``<cluster state>/run/`` until it
ends. ``reap`` kills what a lab killed with -9 left behind; ``close`` stops everything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("labsim.runtime.supervisor")
STOP_SECONDS = 5.0  # SIGTERM, then SIGKILL after this (the kubelet's grace period, shortened)
REAP_SECONDS = 10.0  # how long a start waits for the processes it killed to be gone


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name: [2] process group, [3] session, [19] start time."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: when the process started (ticks since boot)."""
    stat = _stat(pid)
    return stat[19] if stat else None


def _in_group(pid: int, start: str) -> list[int]:
    """The processes in the session and process group a supervised process ``pid`` (started at
    ``start``) leads: itself, and its children (nginx's workers, PostgreSQL's backends: forked after
    it), also once it is gone. A PID is not reused while a group or session of that number lives,
    so these are the lab's. Zombies count: kill(pid, 0) finds them (PostgreSQL's lock check)."""
    found = []
    for entry in Path("/proc").iterdir():
        stat = _stat(int(entry.name)) if entry.name.isdigit() else None
        if stat and stat[2] == stat[3] == str(pid) and int(stat[19]) >= int(start):
            found.append(int(entry.name))
    return found


class RealProcess:
    """A container's real process: its preparation steps (initdb...), then the program itself."""

    def __init__(self, supervisor: Supervisor, name: str, steps: list[tuple[list[str], bytes]], argv: list[str], *,
                 env: dict[str, str], cwd: str, log_line: Callable[[str], None], exited: Callable[[], None]) -> None:
        self.supervisor, self.name, self.steps, self.argv = supervisor, name, steps, argv
        self.env, self.cwd, self._log, self._exited = env, cwd, log_line, exited
        self.process: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self.stopping = False  # asked to stop: no further step starts, a process that starts is stopped at once
        self.pid_file = supervisor.run_dir / f"{name}.pid"
        self.task = asyncio.create_task(self._run())

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def _run(self) -> None:
        try:
            for argv, stdin in [*self.steps, (self.argv, None)]:
                if self.stopping:
                    self.exit_code = 128 + signal.SIGKILL  # stopped before it started, as a killed container
                    return
                code = await self._one(argv, stdin)
                if code != 0 or stdin is None:
                    self.exit_code = code
                    return
        except OSError as exc:  # the binary vanished or cannot run: the container fails, not the lab
            self._log(f"labsim: cannot start {self.argv[0]}: {exc}")
            self.exit_code = 128
        finally:
            self._forget_pid_file()
            if self.exit_code is not None:
                self._exited()

    def _forget_pid_file(self) -> None:
        """Remove the PID file if it still names this process: the container's next process (same
        name) may have written its own already, which a later reap needs."""
        with contextlib.suppress(OSError, ValueError):
            if self.process is not None and json.loads(self.pid_file.read_text())["pid"] == self.process.pid:
                self.pid_file.unlink()

    def _spawn(self, argv: list[str], stdin: bytes | None) -> subprocess.Popen:
        """Start ``argv`` in a session of its own. Popen, not asyncio's create_subprocess_exec: that
        one, cancelled while it connects its pipes, kills the started process alone (SIGKILL to its
        PID), and nginx's workers, forked meanwhile, were orphaned. Popen returns with the PID, and
        from then on the whole group is the process's."""
        self.supervisor.run_dir.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(argv, env=self.env, cwd=self.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.process = process
        self.pid_file.write_text(json.dumps({"pid": process.pid, "start": _start_time(process.pid)}))
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # a step's input is a statement or two: no blocking
            process.stdin.write(stdin or b"")
        process.stdin.close()
        return process

    async def _one(self, argv: list[str], stdin: bytes | None) -> int:
        process = self._spawn(argv, stdin)
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        pidfd = os.pidfd_open(process.pid)  # readable once the process has exited
        loop.add_reader(pidfd, lambda: ended.done() or ended.set_result(None))
        transport = reader = None
        try:
            stream = asyncio.StreamReader()
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), process.stdout)
            reader = asyncio.ensure_future(self._read(stream))
            await asyncio.wait({reader, ended}, return_when=asyncio.FIRST_COMPLETED)  # children may hold stdout open
        except BaseException:  # cancelled (the loop closing): what it still had to say is not awaited
            if reader is not None:
                reader.cancel()
            if transport is not None:
                transport.close()
            raise
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            # The container ends with its main process, as its cgroup does: children it left (nginx's
            # workers after a kill -9 of their master) go with it, never orphaned; also when this
            # wait is cancelled (the container stopped just as its process ended, the loop closing).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            code = process.wait()  # it has exited, or was just killed: collected at once
        assert reader is not None and transport is not None
        await reader
        transport.close()
        return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as the kubelet reports

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        async for raw in stdout:
            self._log(raw.decode(errors="replace").rstrip("\n"))

    def kill(self) -> None:
        """SIGTERM now, SIGKILL if it still runs after STOP_SECONDS. Never a cancel of the task: a
        process starting meanwhile is stopped as it starts, its group with it."""
        self.stopping = True
        if self.process is not None and self.process.poll() is None:
            self._terminate()

    def _terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        asyncio.get_running_loop().call_later(STOP_SECONDS, self._force, self.process)

    def _force(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    async def killed(self) -> None:
        self.kill()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Supervisor:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def launch(self, name: str, steps: list[tuple[list[str], bytes]], argv: list[str], **kw) -> RealProcess:
        return RealProcess(self, name, steps, argv, **kw)

    async def reap(self) -> list[int]:
        """Kill the process groups a previous run left (its PID files) and wait until they are
        gone: a PostgreSQL started again while its killed predecessor still shows in /proc finds
        its lock file held and exits. Returns the PIDs killed."""
        killed: list[int] = []
        for pid_file in sorted(self.run_dir.glob("*.pid")) if self.run_dir.is_dir() else []:
            with contextlib.suppress(ValueError, OSError):
                killed += _kill_group(json.loads(pid_file.read_text()))
            pid_file.unlink(missing_ok=True)
        if killed:
            log.info("killed %d processes a previous run of the lab left: %s", len(killed), killed)
        deadline = asyncio.get_running_loop().time() + REAP_SECONDS
        while any(Path(f"/proc/{pid}").exists() for pid in killed) and asyncio.get_running_loop().time() < deadline:
            for pid in killed:  # this process's own children (a stop cut short in this process) are collected here
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            await asyncio.sleep(0.05)  # their new parent (init) collects the others
        return killed


def _kill_group(entry: dict) -> list[int]:
    """SIGKILL the process group of a PID file's process: the process itself if it still runs (same
    start time: not a reused PID), else what it left in its group. Returns the PIDs killed."""
    pid, start = entry["pid"], entry.get("start")
    if not start:
        return []
    leader = _start_time(pid)
    if leader is not None and leader != start:
        return []  # the number was reused: that process, and its group, are not the lab's
    members = _in_group(pid, start)
    if members:
        os.killpg(pid, signal.SIGKILL)
    return members
