"""Start and stop the embedded lab (labsim) around a run, when the lab file says ``kind: embedded``.

labkit never imports labsim: it drives the ``labsim`` command, as a user would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from labkit.errors import LabError
from labkit.params import Lab


def labsim_command() -> str | None:
    beside = Path(sys.executable).parent / "labsim"  # the venv's console script
    return str(beside) if beside.exists() else shutil.which("labsim")


class EmbeddedLab:
    """Context manager: the embedded lab is up inside, and stopped after unless ``keep`` or it
    was already running before (then it is left as it was found)."""

    def __init__(self, lab: Lab, *, keep: bool = False, report: Callable[[str], None] = print):
        self.lab, self.keep, self.report = lab, keep, report
        self.started = False

    def __enter__(self) -> EmbeddedLab:
        if self.lab.kind != "embedded":
            return self
        if self.status().get("running"):
            self.report("embedded lab already running: using it as it is")
            return self
        self.report(f"starting the embedded lab (state in {self.state_dir})")
        try:
            self._labsim("up", "--params", str(self.lab.path.resolve()), "--detach", timeout=300)
        except BaseException:  # interrupted or failed mid-start: the lab, detached, may come up anyway
            self._labsim("down", timeout=120, check=False)
            raise
        self.started = True
        return self

    def __exit__(self, *exc) -> None:
        if self.started and not self.keep:
            self.report("stopping the embedded lab (--keep-lab leaves it running)")
            self._labsim("down", timeout=120)

    @property
    def state_dir(self) -> Path:
        assert self.lab.embedded is not None
        return self.lab.embedded.state_dir

    def status(self) -> dict:
        out = self._labsim("status", "--json", timeout=30, check=False)
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            return {}

    def _labsim(self, *args: str, timeout: int, check: bool = True) -> str:
        command = labsim_command()
        if command is None:
            raise LabError("kind: embedded needs the embedded lab, but the `labsim` command is not installed; "
                           "install the project (`make lab`, or `pip install -e .`)")
        argv = [command, args[0], "--state", str(self.state_dir), *args[1:]]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"`labsim {args[0]}` did not finish within {timeout} s") from None
        if check and done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise LabError(f"`labsim {' '.join(args[:1])}` failed (exit {done.returncode}): {tail}")
        return done.stdout
