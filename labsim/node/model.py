"""A simulated node: its file system, users' permissions, services and journal.

The file system is a real directory tree, ``<state_dir>/nodes/<vmid>/root/``, mapped as ``/``:
it persists with the lab and SFTP can chroot into it. File modes live on those real files;
owners other than root are kept in ``owners.json`` beside the tree. Operations take the acting
user and refuse what Unix permissions refuse, so clients must use ``sudo`` as on a real machine.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import posixpath
import shutil
import stat
import string
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labsim.node import image
from labsim.node.spec import NodeSpec
from labsim.state import StateFile

log = logging.getLogger(__name__)

ServiceHook = Callable[["NodeModel"], Awaitable[bool | None]]
SERVICE_STATES = ("active", "inactive", "failed")
# Modelled seconds from power-on until cloud-init reports done.
CLOUD_INIT_SECONDS = 25.0


def normpath(path: str, cwd: str = "/") -> str:
    """An absolute, normalised path on the node (``..`` never climbs above ``/``)."""
    joined = posixpath.normpath(posixpath.join(cwd, path))
    return "/" + joined.lstrip("/") if joined != "/" else "/"


def os_error(kind: type[OSError], path: str) -> OSError:
    """An OSError as the kernel raises it: errno, message and the path."""
    code = {FileNotFoundError: errno.ENOENT, PermissionError: errno.EACCES, IsADirectoryError: errno.EISDIR,
            NotADirectoryError: errno.ENOTDIR, FileExistsError: errno.EEXIST}[kind]
    return kind(code, os.strerror(code), path)


def default_umask(user: str) -> int:
    """Ubuntu's umask: 022 for root, 002 for users with a group of their own."""
    return 0o022 if user == "root" else 0o002


def unit_name(name: str) -> str:
    return name.removesuffix(".service")


UNIT_CHARS = frozenset(string.ascii_letters + string.digits + ":-_.\\@")


def mangle_unit(name: str) -> str:
    """A unit name as systemd reads one a user typed: ``/`` becomes ``-`` and what a unit name
    cannot hold is escaped (``\\xNN``), so a name (``-u ../../etc/passwd``) is never a path."""
    return "".join("-" if c == "/" else c if c in UNIT_CHARS else "".join(f"\\x{b:02x}" for b in c.encode())
                   for c in name)


class NodeModel:
    def __init__(self, spec: NodeSpec, lab: Any, folder: Path) -> None:
        self.spec = spec
        self.lab = lab
        self.folder = folder
        self.root = folder / "root"
        self._owners_file = StateFile(folder / "owners.json")
        self._owners: dict[str, str] = {}
        self._services_file = StateFile(folder / "services.json")
        self._services: dict[str, dict[str, Any]] = {}
        self._hooks: dict[str, tuple[ServiceHook | None, ServiceHook | None]] = {}
        self.booted_at = 0.0
        # Kernel state: gone at power-off, set up again at boot (labsim.node.kernel).
        self.sysctl: dict[str, str] = {}
        self.kernel_modules: set[str] = set()
        self._cloud_init: asyncio.Task[None] | None = None

    # --- identity and boot -------------------------------------------------------------------

    @property
    def hostname(self) -> str:
        return self.spec.name

    @property
    def clock(self) -> Any:
        return self.lab.clock

    def boot(self) -> None:
        """Power-on: lay down the cloud image on first boot, apply cloud-init, start the clock
        of cloud-init. Services come up afterwards (``NodeHost`` starts the enabled ones)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._owners = self._owners_file.load() or {}
        saved = self._services_file.load() or {}
        # A power cycle leaves every service stopped; enabled ones start again at boot.
        self._services = {name: {**entry, "state": "inactive"} for name, entry in saved.items()}
        image.install(self)
        self.booted_at = self.clock.now()
        self._cloud_init = asyncio.get_running_loop().create_task(self._run_cloud_init())

    async def _run_cloud_init(self) -> None:
        await self.clock.sleep(CLOUD_INIT_SECONDS, f"{self.hostname} cloud-init")
        self.log("cloud-init", f"Cloud-init v. 24.4-0ubuntu1~22.04.1 finished. Datasource DataSourceNoCloud. "
                               f"Up {CLOUD_INIT_SECONDS:.2f} seconds")

    @property
    def cloud_init_done(self) -> bool:
        return self._cloud_init is not None and self._cloud_init.done()

    async def wait_cloud_init(self) -> None:
        if self._cloud_init is not None:
            await asyncio.shield(self._cloud_init)

    def halt(self) -> None:
        if self._cloud_init is not None:
            self._cloud_init.cancel()

    # --- file system ---------------------------------------------------------------------------

    def host_path(self, path: str) -> Path:
        """The real file behind a node path."""
        return self.root / normpath(path).lstrip("/")

    def exists(self, path: str) -> bool:
        return image.is_virtual(normpath(path)) or self.host_path(path).exists()

    def is_dir(self, path: str) -> bool:
        return self.host_path(path).is_dir()

    def is_file(self, path: str) -> bool:
        return image.is_virtual(normpath(path)) or self.host_path(path).is_file()

    def owner(self, path: str) -> str:
        return self._owners.get(normpath(path), "root")

    def mode(self, path: str) -> int:
        """Permission bits (with setuid/setgid/sticky) of an existing path."""
        if image.is_virtual(normpath(path)):
            return 0o444
        return stat.S_IMODE(self.host_path(path).stat().st_mode)

    def read(self, path: str, user: str = "root") -> bytes:
        path = normpath(path)
        virtual = image.virtual_file(self, path)
        if virtual is not None:
            return virtual
        real = self._existing(path)
        if real.is_dir():
            raise os_error(IsADirectoryError, path)
        self._check(path, user, 0o4)
        return real.read_bytes()

    def write(self, path: str, data: bytes, mode: int | None = None, user: str = "root",
              append: bool = False, umask: int | None = None) -> None:
        """Write (or append to) a file; a new file gets ``mode``, else 0666 less the umask (the
        user's default when not given); an existing file keeps its mode unless ``mode`` is given."""
        path = normpath(path)
        if path == "/dev/null":
            return
        real = self.host_path(path)
        if real.is_dir():
            raise os_error(IsADirectoryError, path)
        created = not real.exists()
        if created:
            self._check_parent(path, user)
        else:
            self._check(path, user, 0o2)
        with open(real, "ab" if append else "wb") as out:
            out.write(data)
        if mode is not None or created:
            os.chmod(real, mode if mode is not None else self._default_mode(user, False, umask))
        if created and user != "root":
            self._set_owner(path, user)

    def mkdir(self, path: str, parents: bool = True, mode: int | None = None, user: str = "root",
              umask: int | None = None) -> None:
        path = normpath(path)
        if self.is_dir(path):
            if parents:
                return
            raise os_error(FileExistsError, path)
        if self.exists(path):
            raise os_error(FileExistsError, path)
        parent = posixpath.dirname(path)
        if not self.is_dir(parent):
            if not parents:
                raise os_error(FileNotFoundError, parent)
            self.mkdir(parent, parents=True, user=user, umask=umask)
        self._check_parent(path, user)
        real = self.host_path(path)
        real.mkdir()
        os.chmod(real, mode if mode is not None else self._default_mode(user, True, umask))
        if user != "root":
            self._set_owner(path, user)

    def chmod(self, path: str, mode: int, user: str = "root") -> None:
        path = normpath(path)
        real = self._existing(path)
        if user != "root" and self.owner(path) != user:
            raise os_error(PermissionError, path)
        os.chmod(real, mode)

    def chown(self, path: str, owner: str, user: str = "root") -> None:
        path = normpath(path)
        self._existing(path)
        if user != "root":
            raise os_error(PermissionError, path)
        self._set_owner(path, owner)

    def remove(self, path: str, recursive: bool = False, user: str = "root") -> None:
        path = normpath(path)
        real = self._existing(path)
        if path == "/":
            raise os_error(PermissionError, path)
        self._check_parent(path, user)
        if real.is_dir() and not real.is_symlink():
            if not recursive:
                raise os_error(IsADirectoryError, path)
            shutil.rmtree(real)
        else:
            real.unlink()
        self._forget_owners(path)

    def rename(self, source: str, target: str, user: str = "root") -> None:
        source, target = normpath(source), normpath(target)
        real = self._existing(source)
        self._check_parent(source, user)
        self._check_parent(target, user)
        real.replace(self.host_path(target))
        moved = {p: o for p, o in self._owners.items() if p == source or p.startswith(source + "/")}
        self._forget_owners(source)
        for p, o in moved.items():
            self._owners[target + p[len(source):]] = o
        self._owners_file.save(self._owners)

    def listdir(self, path: str, user: str = "root") -> list[str]:
        path = normpath(path)
        real = self._existing(path)
        if not real.is_dir():
            raise os_error(NotADirectoryError, path)
        self._check(path, user, 0o4)
        return sorted(p.name for p in real.iterdir())

    def disk_used(self) -> int:
        """Bytes the node's own files take (the image's base size comes on top)."""
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file() and not f.is_symlink())

    def can(self, path: str, user: str, access: str) -> bool:
        """``access`` is "r", "w" or "x": would ``user`` be allowed?"""
        try:
            self._check(normpath(path), user, {"r": 0o4, "w": 0o2, "x": 0o1}[access])
        except PermissionError:
            return False
        return True

    def _existing(self, path: str) -> Path:
        real = self.host_path(path)
        if not real.exists() and not real.is_symlink():
            raise os_error(FileNotFoundError, path)
        return real

    def _check(self, path: str, user: str, bits: int) -> None:
        """Unix permission check: the owner's bits for the owner, the others' bits for anyone else."""
        if user == "root" or image.is_virtual(path):
            return
        mode = self.mode(path)
        allowed = mode >> 6 & 0o7 if self.owner(path) == user else mode & 0o7
        if not allowed & bits:
            raise os_error(PermissionError, path)

    def _check_parent(self, path: str, user: str) -> None:
        parent = posixpath.dirname(path)
        if not self.is_dir(parent):
            raise os_error(FileNotFoundError, path)
        try:
            self._check(parent, user, 0o2)
        except PermissionError:
            raise os_error(PermissionError, path) from None

    @staticmethod
    def _default_mode(user: str, directory: bool, umask: int | None) -> int:
        if umask is None:
            umask = default_umask(user)
        return (0o777 if directory else 0o666) & ~umask

    def _set_owner(self, path: str, owner: str) -> None:
        if owner == "root":
            self._owners.pop(path, None)
        else:
            self._owners[path] = owner
        self._owners_file.save(self._owners)

    def _forget_owners(self, path: str) -> None:
        gone = [p for p in self._owners if p == path or p.startswith(path + "/")]
        for p in gone:
            del self._owners[p]
        if gone:
            self._owners_file.save(self._owners)

    # --- services --------------------------------------------------------------------------------

    def register_service(self, name: str, on_start: ServiceHook | None = None,
                         on_stop: ServiceHook | None = None) -> None:
        """What ``systemctl start|stop|restart NAME`` does on this node. ``on_start`` returning
        False (or raising) leaves the unit failed, as a unit whose process exits with an error."""
        self._hooks[unit_name(name)] = (on_start, on_stop)

    def has_service(self, name: str) -> bool:
        name = unit_name(name)
        return (name in self._hooks or name in self._services or name in image.BASE_SERVICES
                or self.exists(f"/etc/systemd/system/{name}.service"))

    def service_state(self, name: str) -> str:
        return self._services.get(unit_name(name), {}).get("state", "inactive")

    def set_service(self, name: str, state: str) -> None:
        if state not in SERVICE_STATES:
            raise ValueError(f"service state must be one of {SERVICE_STATES}, got {state!r}")
        self._service(name)["state"] = state
        self._save_services()

    def is_enabled(self, name: str) -> bool:
        return bool(self._services.get(unit_name(name), {}).get("enabled"))

    def enable_service(self, name: str, enabled: bool = True) -> None:
        self._service(name)["enabled"] = enabled
        self._save_services()

    def active_services(self) -> list[str]:
        return [name for name, entry in self._services.items() if entry.get("state") == "active"]

    def enabled_services(self) -> list[str]:
        return [name for name, entry in self._services.items() if entry.get("enabled")]

    async def start_service(self, name: str) -> bool:
        """Start a unit (no-op when active); False when it failed."""
        name = unit_name(name)
        if self.service_state(name) == "active":
            return True
        on_start = self._hooks.get(name, (None, None))[0]
        ok = True
        if on_start is not None:
            try:
                ok = await on_start(self) is not False
            except Exception as exc:  # a failing unit, not a failing lab: record it like systemd
                log.debug("service %s on %s failed to start", name, self.hostname, exc_info=True)
                self.log(name, f"{name}.service: start failed: {exc}")
                ok = False
        self.set_service(name, "active" if ok else "failed")
        self.log("systemd", f"{'Started' if ok else 'Failed to start'} {name}.service.")
        return ok

    async def stop_service(self, name: str) -> None:
        name = unit_name(name)
        was_active = self.service_state(name) == "active"
        on_stop = self._hooks.get(name, (None, None))[1]
        if was_active and on_stop is not None:
            await on_stop(self)
        self.set_service(name, "inactive")
        if was_active:
            self.log("systemd", f"Stopped {name}.service.")

    async def stop_all_services(self) -> None:
        """Power-off: every running unit stops (its hooks run); the enabled flags stay."""
        for name in self.active_services():
            await self.stop_service(name)

    def _service(self, name: str) -> dict[str, Any]:
        return self._services.setdefault(unit_name(name), {"state": "inactive", "enabled": False})

    def _save_services(self) -> None:
        self._services_file.save(self._services)

    # --- journal -----------------------------------------------------------------------------------

    def log(self, unit: str, line: str) -> None:
        """Append a line to the unit's journal, stamped with lab time as journalctl shows it."""
        unit = unit_name(unit)
        stamp = datetime.fromtimestamp(self.clock.now(), UTC).strftime("%b %d %H:%M:%S")
        pid = 1 if unit == "systemd" else 1000 + zlib.crc32(unit.encode()) % 30000
        path = self._journal_file(unit)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as out:
            for part in line.splitlines() or [""]:
                out.write(f"{stamp} {self.hostname} {unit}[{pid}]: {part}\n")

    def journal(self, unit: str) -> list[str]:
        try:
            return self._journal_file(unit).read_text().splitlines()
        except FileNotFoundError:
            return []

    def _journal_file(self, unit: str) -> Path:
        return self.folder / "journal" / f"{unit_name(mangle_unit(unit))}.log"
