"""Kernels forked from one process that has already imported what the notebooks import.

A kernel that boots and imports labkit, the kubernetes client, pandas and plotly costs 3-4 s of
CPU; a run of eight notebooks paid that eight times, on two cores shared with the lab. The fork
server (``python -m labkit.kernelfork``) imports each module once, as the kernels it is asked for
need them, and forks one process per kernel: each notebook still gets a fresh process that no cell
has run in (only ``sys.modules`` is warm), started in milliseconds.

The runner's ``KernelManager`` launches a kernel through ``ForkedProvisioner``: a request on the
server's control channel carries the kernel's command line, environment, folder, modules and, as
file descriptors, its stdout/stderr and a socket of its own, on which the server answers with the
kernel's PID and, once it ends, its exit code. The kernel runs in a process group of its own, so
signals reach it as jupyter_client sends them. When the runner goes (closes the control channel, or
dies), the server kills the kernels still running and exits; a kernel whose server died exits too
(ipykernel's parent poller).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner

from labkit.errors import LabError

START_TIMEOUT_S = 120  # the server's imports, under load, before it forks the first kernel


class ForkServer:
    """The runner's end: starts the server (in the kernels' folder ``cwd``), whose stderr goes to
    ``log``, asks it for kernels and ``close``s it."""

    def __init__(self, cwd: Path, log: Path) -> None:
        # One control channel, made here and handed over: no path another user could connect to, and
        # a kernel asked for before the server has imported anything waits in the channel's buffer.
        self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._log = log
        with log.open("ab") as stderr, theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "labkit.kernelfork", str(theirs.fileno())],
                cwd=cwd, stdin=subprocess.DEVNULL, stderr=stderr, pass_fds=[theirs.fileno()],
                start_new_session=True)  # a Ctrl-C in the terminal is the runner's to handle

    def fork(self, request: dict[str, Any], fds: list[int]) -> socket.socket:
        """Ask for one kernel, forked once the server has imported ``request["modules"]``; its
        answers (its PID, later its exit code) come on the returned socket."""
        mine, theirs = socket.socketpair()
        with theirs:
            try:
                socket.send_fds(self._control, [json.dumps(request).encode()], [theirs.fileno(), *fds])
            except OSError:  # it died (a crash while importing): its last words say why
                mine.close()
                said = self._log.read_text(errors="replace").strip().splitlines()[-8:]
                raise LabError("the kernel fork server has stopped" + (":\n" + "\n".join(said) if said else "")) from None
        return mine

    def close(self) -> None:
        """The server kills the kernels still running and exits once its control channel closes."""
        self._control.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class ForkedKernel:
    """A forked kernel as ``LocalProvisioner`` handles a ``Popen``: pid, poll, wait, signals."""

    stdin = stdout = stderr = None  # the server holds the kernel's files

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._answer = b""
        self._pid: int | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        """The kernel's PID, once the server has forked it (the first kernel waits for its imports)."""
        while self._pid is None and self.returncode is None:
            if not self._read(timeout=START_TIMEOUT_S):
                raise RuntimeError(f"the kernel fork server forked no kernel in {START_TIMEOUT_S} s")
        if self._pid is None:
            raise RuntimeError("the kernel fork server stopped before it forked the kernel")
        return self._pid

    def _read(self, timeout: float | None) -> bool:
        """Take the server's next answer (``pid N``, then ``exit N``); False if none came in ``timeout``."""
        while b"\n" not in self._answer:
            self._conn.settimeout(timeout)
            try:
                data = self._conn.recv(64)
            except (TimeoutError, BlockingIOError):
                return False
            if not data:  # the server is gone, and its kernels with it
                self._ended(-signal.SIGKILL)
                return True
            self._answer += data
        line, _, self._answer = self._answer.partition(b"\n")
        word, value = line.decode().split()
        if word == "pid":
            self._pid = int(value)
        else:
            self._ended(int(value))
        return True

    def _ended(self, code: int) -> None:
        self.returncode = code
        self._conn.close()

    def poll(self) -> int | None:
        while self.returncode is None and self._read(timeout=0):
            pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._read(timeout=left) and deadline is not None:
                raise subprocess.TimeoutExpired("kernel", timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkedProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, with the kernel forked by a ``ForkServer`` (``server``)."""

    server: ForkServer | None = None
    modules: tuple[str, ...] = ()  # what the server imports before it forks this kernel

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict:
        argv = cmd[cmd.index("ipykernel_launcher") + 1:]  # what follows `python -m ipykernel_launcher`
        fds = [f.fileno() for f in (kwargs.get("stdout"), kwargs.get("stderr")) if f is not None]
        request = {"argv": argv, "env": kwargs.get("env", dict(os.environ)), "cwd": str(kwargs.get("cwd") or "."),
                   "files": [name for name in ("stdout", "stderr") if kwargs.get(name) is not None],
                   "modules": list(self.modules)}
        self.process = ForkedKernel(self.server.fork(request, fds))
        self.cwd = request["cwd"]
        return self.connection_info

    async def send_signal(self, signum: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signum)  # the kernel and what its cells started
        except ProcessLookupError:  # its group is not made yet
            self.process.send_signal(signum)


# -- the server's side ------------------------------------------------------------------------------

def serve(control: socket.socket) -> None:
    """Fork a kernel per request until the control channel closes. Modules are imported as the
    requests name them: the first kernel starts once its own notebook's imports are done, the next
    notebooks' are imported while it runs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops us, by closing the channel
    import ipykernel.kernelapp  # noqa: F401  (what every kernel needs)

    wakeup_r, wakeup_w = socket.socketpair()
    wakeup_w.setblocking(False)
    signal.set_wakeup_fd(wakeup_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector through the wakeup fd
    kernels: dict[int, socket.socket] = {}
    with selectors.DefaultSelector() as sel:
        sel.register(control, selectors.EVENT_READ)
        sel.register(wakeup_r, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                if key.fileobj is control:
                    message, fds, _, _ = socket.recv_fds(control, 1 << 20, 3)
                    if not message:  # the runner is done, or gone
                        _stop(kernels)
                        return
                    conn, *files = fds
                    answer = socket.socket(fileno=conn)
                    request = json.loads(message)
                    _import(request["modules"])
                    pid = _fork(request, files, answer,
                                closing=[sel, control, wakeup_r, wakeup_w, *kernels.values()])
                    kernels[pid] = answer
                else:
                    wakeup_r.recv(64)
            _reap(kernels)


def _import(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # the notebook's own import shows the error where it belongs
            traceback.print_exc()


def _fork(request: dict, fds: list[int], answer: socket.socket, closing: list[Any]) -> int:
    pid = os.fork()
    if pid == 0:
        _kernel(request, fds, [*closing, answer])  # never returns
    with contextlib.suppress(OSError):  # as the kernel does itself: whichever runs first
        os.setpgid(pid, pid)
    for fd in fds:
        os.close(fd)
    answer.sendall(f"pid {pid}\n".encode())
    return pid


def _kernel(request: dict, fds: list[int], closing: list[Any]) -> None:
    """The forked child: become the kernel of ``request``, as ``python -m ipykernel_launcher`` would."""
    try:
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for server_side in closing:  # the server's selector and sockets: none of the kernel's business
            server_side.close()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        for name, fd in zip(request["files"], fds, strict=True):
            os.dup2(fd, 1 if name == "stdout" else 2)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [sys.argv[0], *request["argv"]]
        from ipykernel.kernelapp import IPKernelApp

        from labkit import display

        app = IPKernelApp.instance()
        app.initialize([*request["argv"], f"--IPKernelApp.parent_handle={os.getppid()}"])
        display.started(app.shell)  # display setup the imports could not do without a shell
        app.start()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _reap(kernels: dict[int, socket.socket]) -> None:
    """Tell each ended kernel's runner its exit code."""
    while kernels:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = kernels.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()


def _stop(kernels: dict[int, socket.socket]) -> None:
    for pid in kernels:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    for pid in list(kernels):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        kernels.pop(pid).close()


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
