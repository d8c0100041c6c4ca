"""One embedded lab for the whole session with notebooks 01, 02 and 03 done (``series``), on which the
tests of 03 and of the later notebooks run theirs with ``series.run("05")``: building 01-03 costs
over a minute, once is enough.

The lab is built the way a user builds it: ``labkit run --keep-lab`` (labsim as a separate process),
03 first as a dry run on the fresh cluster, then for real (test_notebook_03 asserts on both). It is
stopped (``labsim down``) when the session ends. A test that breaks something on it (a fault, a
wrong Secret) puts it back before it ends: later tests build on the same lab.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
import requests

from labkit.params import Lab, load_lab
from tests.labfiles import state_dir, write_lab

LABKIT = [sys.executable, "-m", "labkit"]
RUN_TIMEOUT = 900  # one `labkit run` of several notebooks; a fresh CI machine is slower than this one
BUILD_TIMEOUT = 1800  # pytest's timeout of a test on the series lab: its build (three runs) and its own


def labsim(lab_file: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "labsim", args[0], "--state", str(state_dir(lab_file)), *args[1:]],
                   capture_output=True, timeout=120)


@dataclass
class Series:
    lab_file: Path
    outputs: Path
    lab: Lab
    folders: list[Path] = field(default_factory=list)  # each run's folder, oldest first
    built: dict[str, Path] = field(default_factory=dict)  # the build's run folders: "01-02", "03-dry", "03"

    def run(self, *only: str, dry_run: bool = False, **parameters: Any) -> dict:
        """``labkit run --only ...`` on the series lab (kept up); its summary.json. A failed run fails
        the test with the run's output tail."""
        argv = [*LABKIT, "run", "--params", str(self.lab_file), "--only", *only, "--no-html", "--keep-lab",
                "--outputs", str(self.outputs), *(["--dry-run"] if dry_run else [])]
        for name, value in parameters.items():
            argv += ["-p", name, json.dumps(value)]  # JSON is YAML, as -p reads it
        done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        self.folders.append((self.outputs / "latest").resolve())
        return json.loads((self.folders[-1] / "summary.json").read_text())

    def ensure(self, notebook: str) -> None:
        """Run ``notebook`` (e.g. "04") unless a run on this lab has: what a later one stands on."""
        if not any(next(folder.glob(f"{notebook}-*.ipynb"), None) for folder in self.folders):
            self.run(notebook)

    def fault(self, fault: str, **fields: Any) -> None:
        """Inject a fault through the lab's admin endpoint (labsim.pve.admin), e.g. ``fault("nas_down")``."""
        pve = self.lab.proxmox
        answer = requests.post(f"https://{pve.host}:{pve.port}/labsim/faults", json={"fault": fault, **fields},
                               headers={"Authorization": f"PVEAPIToken={pve.token_id}={self.lab.secret(pve.token_secret)}"},
                               verify=str(pve.ca_file), timeout=60)
        assert answer.status_code == 200, answer.text

    def executed(self, folder: Path, notebook: str) -> nbformat.NotebookNode:
        """The executed notebook (e.g. ``03-core-infra``) of a run folder."""
        return nbformat.read(folder / f"{notebook}.ipynb", as_version=4)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on the series lab may be the one that builds it (01-03: minutes on a fresh CI machine,
    more than pytest's 300 s default): its timeout covers the build too."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None) and item._fixtureinfo.name2fixturedefs.get("series")
        if defs and defs[-1].scope == "session" and item.get_closest_marker("timeout") is None:  # this one's
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT))


@pytest.fixture(scope="session")
def series(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Series]:
    tmp = tmp_path_factory.mktemp("series")
    lab_file = write_lab(tmp)
    built = Series(lab_file, tmp / "outputs", load_lab(lab_file, check_files=False))
    try:
        for label, only, dry in (("01-02", ("01", "02"), False), ("03-dry", ("03",), True), ("03", ("03",), False)):
            summary = built.run(*only, dry_run=dry)
            assert [n["status"] for n in summary["notebooks"]] == ["passed"] * len(only), summary["notebooks"]
            built.built[label] = built.folders[-1]
        built.lab = load_lab(lab_file)  # its files (keys, CA, kubeconfig) exist now
        yield built
    finally:
        labsim(lab_file, "down")
