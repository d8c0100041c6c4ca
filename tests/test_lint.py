"""The code stays ruff-clean (configuration in pyproject.toml): CI fails on a lint error."""

import subprocess
import sys

from tests.labfiles import REPO


def test_ruff_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "labkit", "labsim", "tests", "benchmarks", "notebooks"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_labkit_and_labsim_never_import_each_other():
    """They meet on the wire only (DESIGN §3)."""
    for package, other in (("labkit", "labsim"), ("labsim", "labkit")):
        offenders = [str(p.relative_to(REPO)) for p in (REPO / package).rglob("*.py")
                     if f"import {other}" in p.read_text() or f"from {other}" in p.read_text()]
        assert not offenders, f"{package} imports {other}: {offenders}"
