"""The lab's state folder: JSON state files, written atomically so that a crash or a concurrent
reader never sees half a file (a restarted lab resumes from them), and the lock that lets one lab
at a time serve the folder."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        """The saved document, or None on first start."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None

    def save(self, document: dict[str, Any]) -> None:
        write_atomically(self.path, json.dumps(document, indent=1, sort_keys=True))


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lock_state_dir(state_dir: Path) -> int | None:
    """Take the state folder for this process: returns the lock's file descriptor (the lock lasts
    until it is closed or the process ends, even by kill -9), or None when another lab holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "labsim.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
