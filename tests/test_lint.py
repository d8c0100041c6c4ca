"""The code stays ruff-clean (configuration in pyproject.toml): CI fails on a lint error."""

import subprocess
import sys

from tests.labfiles import REPO


def test_ruff_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "labkit", "labsim", "tests", "benchmarks", "notebooks"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_labkit_and_labsim_may_not_import_each_other():
    """They meet on the wire only (DESIGN §3): ruff's banned-api (labkit/ruff.toml, labsim/ruff.toml)
    refuses the import, so test_ruff_clean fails on one."""
    for package, other in (("labkit", "labsim"), ("labsim", "labkit")):
        done = subprocess.run([sys.executable, "-m", "ruff", "check", "--stdin-filename", f"{package}/probe.py",
                               "--output-format", "concise", "-"], input=f"from {other} import x\nprint(x)\n",
                              cwd=REPO, capture_output=True, text=True)
        assert f"TID251 `{other}` is banned" in done.stdout, done.stdout + done.stderr
