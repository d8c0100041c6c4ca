"""``labsim up | down | status``: run the embedded lab in the foreground or detached.

A detached lab is this same command's foreground ``up``, forked into a session of its own with
its output in ``<state>/labsim.log``; it writes ``labsim.pid`` and ``status.json`` once every
endpoint answers, and ``labsim down`` stops it by that pid. One lab at a time serves a state
folder: ``up`` holds the folder's lock for its life, and a second ``up`` says "already running"
(exit 4 in the foreground; a detached one waits for the running lab to answer and exits 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from labsim.config import CONFIG_FILE, ConfigError, SimConfig
from labsim.state import StateFile, lock_state_dir, write_atomically

DEFAULT_STATE = Path(".labsim")
READY_TIMEOUT = 120
STOP_TIMEOUT = 60
ALREADY_RUNNING = 4  # exit status of a foreground `up` when another lab serves the state folder


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "up" and not (args.state / CONFIG_FILE).exists():
        return _never_started(args)
    try:
        config = SimConfig.load(args.state)
    except (ConfigError, OSError, ValueError) as error:
        print(f"labsim: {error}", file=sys.stderr)
        return 2
    return {"up": up, "down": down, "status": status}[args.command](config, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labsim", description="The embedded lab: a loopback twin of the home lab.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start the lab"), ("down", "stop a detached lab"), ("status", "is it running, where")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--state", type=Path, default=DEFAULT_STATE,
                         help=f"state folder, holding the config.json labkit wrote (default: {DEFAULT_STATE})")
        if name == "up":
            sub.add_argument("--detach", action="store_true", help="run in the background; return once it answers")
        if name == "status":
            sub.add_argument("--json", action="store_true", help="machine-readable output")
            sub.add_argument("--show-secrets", action="store_true",
                             help="include the API token's secret in --json (hidden otherwise)")
    return parser


def _never_started(args: argparse.Namespace) -> int:
    """``down`` and ``status`` of a state folder no lab was started in (labkit writes its config)."""
    state = args.state.resolve()
    if args.command == "status" and args.json:
        print(json.dumps({"running": False, "state_dir": str(state)}))
        return 0
    print(f"labsim: not running (no lab was started with state in {state})")
    return 3 if args.command == "status" else 0


def _lab():
    """``labsim.lab``, imported on first use: ``down`` only signals a pid, and the lab's modules
    (asyncssh, cryptography, the models) cost half a second of CPU to import, at every run's end."""
    import labsim.lab

    return labsim.lab


# ---------------------------------------------------------------- up

def up(config: SimConfig, args: argparse.Namespace) -> int:
    pid = running_pid(config.state_dir)
    if pid is not None:
        print(f"labsim: already running (pid {pid}), state in {config.state_dir}")
        return 0 if args.detach else ALREADY_RUNNING
    if args.detach:
        return _up_detached(config, args)
    lock = lock_state_dir(config.state_dir)
    if lock is None:  # another `up` took the folder first; it may still be starting
        print(f"labsim: already running, state in {config.state_dir}")
        return ALREADY_RUNNING
    try:
        asyncio.run(_serve(config))
    except OSError as error:
        hint = "; another lab or program holds it: stop it, or change the address in the lab file"
        print(f"labsim: cannot start: {error}{hint if error.errno == errno.EADDRINUSE else ''}", file=sys.stderr)
        return 1
    finally:
        os.close(lock)
    return 0


async def _serve(config: SimConfig) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lab = _lab().Lab(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await lab.start()
        _write_running(config.state_dir)
        print(f"labsim: lab '{config.name}' up: PVE API at {lab.pve_url}, state in {config.state_dir}", flush=True)
        await stopping.wait()
    finally:
        await lab.stop()
        (config.state_dir / "labsim.pid").unlink(missing_ok=True)
        StateFile(config.state_dir / "status.json").save(_lab().static_status(config))
        print("labsim: stopped", flush=True)


def _write_running(state_dir: Path) -> None:
    write_atomically(state_dir / "labsim.pid", f"{os.getpid()}\n")  # a reader never sees it empty
    StateFile(state_dir / "status.json").save({"running": True, "pid": os.getpid()})


def _up_detached(config: SimConfig, args: argparse.Namespace) -> int:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = config.state_dir / "labsim.log"
    _lab()  # before the fork: the lab starts with its modules loaded, and this process needs them too
    with log_path.open("ab") as log:
        earlier = log.tell()  # the log keeps past runs; a failure shows only this attempt's lines
        child = _fork_lab(config, log.fileno())
    code: int | None = None  # the forked lab's exit status, once it has ended
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        pid = running_pid(config.state_dir)
        if pid is not None and _live_status(config) is not None:
            said = "up" if pid == child else "already running"  # another `up` won the race
            print(f"labsim: {said} (pid {pid}), PVE API at https://{config.pve_host}:{config.pve_port}, "
                  f"state in {config.state_dir}")
            return 0
        if code is None:
            ended, status = os.waitpid(child, os.WNOHANG)
            code = os.waitstatus_to_exitcode(status) if ended else None
        if code not in (None, ALREADY_RUNNING):  # the other `up` serves the folder: wait for it to answer
            with log_path.open("rb") as log:
                log.seek(earlier)
                tail = "\n".join(log.read().decode(errors="replace").strip().splitlines()[-10:])
            print(f"labsim: the lab did not start (exit {code}); {log_path}:\n{tail}", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"labsim: no answer within {READY_TIMEOUT} s; see {log_path}", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGTERM)
    return 1


def _fork_lab(config: SimConfig, log_fd: int) -> int:
    """The lab, forked from this process (its modules already imported: one Python start-up, not
    two), in a session of its own, its output in the log, the state folder as its cwd. Returns its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:
        return child
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        for fd, target in ((0, null), (1, log_fd), (2, log_fd)):
            os.dup2(target, fd)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # nothing of the caller's (its pipes wait for our end)
        # As `python -P`: the caller's folder must not shadow modules imported later (a `secrets.py`
        # there would shadow the standard library's), nor stay busy.
        sys.path[:] = [entry for entry in sys.path if entry not in ("", os.getcwd())]
        os.chdir(config.state_dir)
        code = up(config, argparse.Namespace(detach=False))
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# ---------------------------------------------------------------- down, status

def down(config: SimConfig, args: argparse.Namespace) -> int:
    pid = running_pid(config.state_dir)
    if pid is None:
        print(f"labsim: not running (state in {config.state_dir})")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(pid):
            print(f"labsim: stopped (pid {pid})")
            return 0
        time.sleep(0.1)
    print(f"labsim: pid {pid} did not stop within {STOP_TIMEOUT} s", file=sys.stderr)
    return 1


def status(config: SimConfig, args: argparse.Namespace) -> int:
    live = _live_status(config) if running_pid(config.state_dir) is not None else None
    doc = live or _lab().static_status(config)
    if args.json:
        if not args.show_secrets and doc["pve"].get("token_secret"):
            # A status is pasted into issues and logs; the token is in secrets.yaml for those who need it.
            doc["pve"]["token_secret"] = "(hidden: --show-secrets, or secrets.yaml#pve_token_secret)"
        print(json.dumps(doc, indent=2))
        return 0
    if not doc["running"]:
        print(f"labsim: not running (state in {config.state_dir})")
        return 3
    print(f"labsim: running (pid {doc.get('pid')}), state in {doc['state_dir']}")
    print(f"  PVE API  {doc['pve']['url']}  node {doc['pve']['node']}  token {doc['pve']['token_id']}")
    for vm in doc["vms"]:
        where = f"{vm['ip']}:{vm['ssh_port']}" if vm["ip"] else "-"
        print(f"  VM {vm['vmid']:<6} {vm['name']:<24} {vm['status']:<8} ssh {where}")
    if doc.get("kube"):
        print(f"  kube     {doc['kube']['server']}  kubeconfig {doc['kube']['kubeconfig']}")
    return 0


def running_pid(state_dir: Path) -> int | None:
    """The pid of the lab serving this state folder, if that process still lives."""
    try:
        pid = int((state_dir / "labsim.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie child has exited
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _live_status(config: SimConfig) -> dict[str, Any] | None:
    """Ask the running lab over its admin endpoint, as any client would."""
    import requests  # here, as the lab's modules: `down` needs neither

    base = _lab().static_status(config)
    if not base["pve"]["token_secret"]:
        return None
    try:
        response = requests.get(
            f"{base['pve']['url']}/labsim/status", timeout=5, verify=base["pve"]["ca_file"],
            headers={"Authorization": f"PVEAPIToken={config.token_id}={base['pve']['token_secret']}"},
        )
        response.raise_for_status()
    except (requests.RequestException, OSError):
        return None
    return response.json()["data"]
