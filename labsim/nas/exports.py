"""The NFS exports the lab's machines reach, by server address: what an NFS client on a node (a
pod's volume, the provisioner's mount) gets for ``server:/path``. Addresses on loopback are one
network for the whole machine, so this registry is too: a NAS registers its address while it
runs, and a server that is not registered, or has been made unreachable, is "down"."""

from __future__ import annotations

import errno
import os
import posixpath
from pathlib import Path
from typing import Protocol


class NfsServer(Protocol):
    reachable: bool
    full: bool  # no space left on its volume: writes through NFS fail (ENOSPC)

    def exports(self) -> dict[str, Path]: ...


class NfsUnreachable(OSError):
    """The server does not answer (powered off, cable out): what a soft mount reports."""


_SERVERS: dict[str, NfsServer] = {}


def register(ip: str, server: NfsServer) -> None:
    _SERVERS[ip] = server


def unregister(ip: str, server: NfsServer) -> None:
    if _SERVERS.get(ip) is server:
        del _SERVERS[ip]


def server(ip: str) -> NfsServer | None:
    """The NAS at this address, answering or not."""
    return _SERVERS.get(ip)


def known(ip: str) -> bool:
    """A NAS of a running lab has this address (whether it answers or not)."""
    return ip in _SERVERS


def full(real: Path) -> bool:
    """The real path is inside the export of a NAS whose volume is full."""
    return any(nas.full and real.is_relative_to(root.resolve())
               for nas in _SERVERS.values() for root in nas.exports().values())


def folder(server: str, path: str) -> Path:
    """The real folder behind ``server:path`` (an export or a folder inside one)."""
    nas = _SERVERS.get(server)
    if nas is None or not nas.reachable:
        raise NfsUnreachable(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT), f"{server}:{path}")
    wanted = posixpath.normpath("/" + path.lstrip("/"))
    for export, real in nas.exports().items():
        if wanted == export or wanted.startswith(export.rstrip("/") + "/"):
            return real / posixpath.relpath(wanted, export)
    # What mount.nfs says when the server has no such export.
    raise FileNotFoundError(errno.ENOENT, f"mounting {server}:{path} failed, reason given by server: "
                                          "No such file or directory", f"{server}:{path}")
