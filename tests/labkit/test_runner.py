"""`labkit run` on small notebooks made here: run folder, summary, latest, failures, secrets."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest

from tests.labkit.conftest import K3S_TOKEN, write

PARAMS = 'lab_file = ""\ndry_run = False'
LOAD = "import labkit\nfrom labkit.params import load_lab\nfrom labkit.changes import Change\nfrom labkit.report import Report\nlab = load_lab(lab_file)"


def notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "homelab-notebooks", "display_name": "homelab-notebooks", "language": "python"}
    params = nbformat.v4.new_code_cell(PARAMS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), params, nbformat.v4.new_code_cell(LOAD)]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def passing(path: Path) -> Path:
    return notebook(
        path,
        f'r = Report("{path.stem}")\nr.check("lab loaded", lab.name == "homelab")\n'
        'if not dry_run:\n    r.applied([Change("vm 120", "create"), Change("vm 121", "unchanged")])',
        "labkit.record(r, dry_run=dry_run)",
    )


@pytest.fixture
def series(tmp_path: Path, lab_doc: dict) -> dict:
    books = tmp_path / "notebooks"
    books.mkdir()
    return {"lab": write(tmp_path, lab_doc), "notebooks": books, "outputs": tmp_path / "outputs"}


def labkit_run(series: dict, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "labkit.cli", "run", "--params", str(series["lab"]), "--notebooks",
            str(series["notebooks"]), "--outputs", str(series["outputs"]), "--no-html", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def summary(series: dict) -> dict:
    return json.loads((series["outputs"] / "latest" / "summary.json").read_text())


def test_run_writes_folder_summary_and_latest(series):
    passing(series["notebooks"] / "01-first.ipynb")
    passing(series["notebooks"] / "02-second.ipynb")
    done = labkit_run(series)
    assert done.returncode == 0, done.stderr + done.stdout
    run = summary(series)
    assert run["run"]["status"] == "passed" and run["run"]["lab"] == "homelab"
    assert run["run"]["folder"].endswith("Z-homelab") and len(run["run"]["params_sha256"]) == 64
    assert [(n["name"], n["status"], n["checks_passed"], n["changes"]) for n in run["notebooks"]] == [
        ("01-first", "passed", 1, 1), ("02-second", "passed", 1, 1)]
    latest = series["outputs"] / "latest"
    assert latest.is_symlink() and (latest / "01-first.ipynb").exists()
    assert "| 01-first | passed |" in (latest / "summary.md").read_text()
    assert re.search(r"cell \d/6 · 01-first: r = Report\(", done.stdout)  # progress names the section and cell


def test_failure_stops_the_run_naming_notebook_and_cell(series):
    notebook(series["notebooks"] / "01-broken.ipynb", "x = 1", "raise RuntimeError('disk on fire')", "y = 2")
    passing(series["notebooks"] / "02-never.ipynb")
    done = labkit_run(series)
    assert done.returncode == 1
    nbs = summary(series)["notebooks"]
    assert nbs[0]["status"] == "failed" and nbs[1]["status"] == "skipped"
    assert "cell In [5] · 01-broken `raise RuntimeError('disk on fire')`: RuntimeError: disk on fire" in nbs[0]["error"]
    assert "01-broken" in done.stdout and "disk on fire" in done.stdout


def test_failed_checks_fail_the_notebook_by_name(series):
    notebook(series["notebooks"] / "01-checks.ipynb",
             'r = Report("01-checks")\nr.check("nodes Ready", False, "1/3 Ready")\nr.check("fine", True)',
             "labkit.record(r)")
    done = labkit_run(series)
    assert done.returncode == 1
    nb = summary(series)["notebooks"][0]
    assert nb["failed_checks"] == ["nodes Ready"] and nb["checks_passed"] == 1
    assert "ChecksFailed: 1 check(s) failed: nodes Ready (1/3 Ready)" in nb["error"]


def test_parameters_are_injected_and_dry_run_passed_through(series):
    passing(series["notebooks"] / "01-first.ipynb")
    done = labkit_run(series, "--dry-run")
    assert done.returncode == 0, done.stderr
    run = summary(series)
    assert run["run"]["dry_run"] is True and run["notebooks"][0]["changes"] == 0
    executed = nbformat.read(series["outputs"] / "latest" / "01-first.ipynb", as_version=4)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    # the lab file relative to the notebook (it lies in the notebooks' repository): no checkout path
    assert "dry_run = True" in injected.source and 'lab_file = "../lab.yaml"' in injected.source
    assert str(series["lab"].parent) not in injected.source
    assert "Dry run: nothing was changed." in (series["outputs"] / "latest" / "summary.md").read_text()


def test_only_and_from_select_notebooks(series):
    for name in ("01-a", "02-b", "03-c"):
        passing(series["notebooks"] / f"{name}.ipynb")
    assert labkit_run(series, "--only", "02").returncode == 0
    assert [n["name"] for n in summary(series)["notebooks"]] == ["02-b"]
    assert labkit_run(series, "--from", "02").returncode == 0
    assert [n["name"] for n in summary(series)["notebooks"]] == ["02-b", "03-c"]
    bad = labkit_run(series, "--only", "09")
    assert bad.returncode == 2 and "no notebook numbered 09" in bad.stderr  # a usage error


def test_a_printed_secret_never_reaches_outputs(series):
    notebook(series["notebooks"] / "01-leaky.ipynb",
             "token = lab.secret(lab.k3s.token)\nprint('the token is', token)\ntoken",
             'r = Report("01-leaky")\nr.check("ok", True)\nlabkit.record(r)')
    done = labkit_run(series)
    assert done.returncode == 0, done.stderr
    folder = series["outputs"] / "latest"
    for path in folder.iterdir():
        assert K3S_TOKEN not in path.read_text(), path
    assert summary(series)["notebooks"][0]["secrets_scrubbed"] >= 2
    assert "the token is ***" in (folder / "01-leaky.ipynb").read_text()
    assert "secret occurrence(s) were found and scrubbed" in (folder / "summary.md").read_text()


def test_html_draws_figures_with_one_plotly_shared_by_all_run_folders(series, tmp_path):
    notebook(series["notebooks"] / "01-figs.ipynb",
             "import pandas as pd\nfrom labkit import plots\n"
             "df = pd.DataFrame({'resource': ['cpu', 'mem'], 'requested': [6, 12], 'available': [16, 64]})",
             "plots.capacity(df, 'one')", "plots.capacity(df, 'two')", "plots.capacity(df, 'three')")
    argv = [sys.executable, "-m", "labkit.cli", "run", "--params", str(series["lab"]), "--notebooks",
            str(series["notebooks"]), "--outputs", str(series["outputs"])]
    folders = []
    for _ in range(2):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        folders.append((series["outputs"] / "latest").resolve())
    executed = (folders[1] / "01-figs.ipynb").read_text()
    assert executed.count("application/vnd.plotly.v1+json") == 3
    assert len(executed) < 100_000 and "Plotly.newPlot" not in executed  # data only: plotly.js is ~4.6 MB
    shared = series["outputs"] / "_assets" / "plotly.min.js"
    css = [p.name for p in shared.parent.glob("notebook-*.css")]
    assert shared.stat().st_size > 1_000_000 and len(css) == 1 and len(list(shared.parent.iterdir())) == 2
    for folder in folders:
        assert not list(folder.glob("*.js")) and sum(p.stat().st_size for p in folder.iterdir()) < 150_000
        page = (folder / "01-figs.html").read_text()
        assert '<script src="../_assets/plotly.min.js"></script>' in page and page.count("Plotly.newPlot(") == 3
        assert f'<link rel="stylesheet" href="../_assets/{css[0]}">' in page and "<style" not in page.split("</head>")[0]
        assert "https://" not in page.split("</head>")[0]  # nothing fetched from a CDN: works offline
    # Copied elsewhere with _assets/, a run folder's pages still find plotly.js.
    copy = tmp_path / "elsewhere"
    shutil.copytree(folders[0], copy / folders[0].name)
    shutil.copytree(shared.parent, copy / "_assets")
    assert (copy / folders[0].name / "../_assets/plotly.min.js").resolve().read_bytes() == shared.read_bytes()


def test_embedded_lab_without_labsim_fails_clearly(tmp_path, monkeypatch):
    from labkit import embedded
    from labkit.errors import LabError
    from labkit.params import load_lab
    from tests.labfiles import write_lab

    monkeypatch.setattr(embedded, "labsim_command", lambda: None)
    with pytest.raises(LabError, match="the `labsim` command is not installed"), \
            embedded.EmbeddedLab(load_lab(write_lab(tmp_path)), report=lambda _: None):
        pass


def test_check_exit_codes(tmp_path, lab_doc):
    good = write(tmp_path, lab_doc)
    ok = subprocess.run([sys.executable, "-m", "labkit.cli", "check", "--params", str(good)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "valid. Lab 'homelab' (real): 1 server(s) + 2 agent(s)" in ok.stdout
    lab_doc["nodes"][1]["ip"] = "192.168.2.300"
    bad = subprocess.run([sys.executable, "-m", "labkit.cli", "check", "--params", str(write(tmp_path, lab_doc))],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "nodes[1].ip: '192.168.2.300' is not an IPv4 address" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad_run = subprocess.run([sys.executable, "-m", "labkit.cli", "run", "--params", str(tmp_path / "lab.yaml")],
                             capture_output=True, text=True)
    assert bad_run.returncode == 2 and "Traceback" not in bad_run.stderr


def test_notebooks_run_with_the_runners_interpreter_whatever_kernel_is_registered(series, tmp_path):
    """Another checkout may have registered `homelab-notebooks` last; a run uses its own labkit."""
    data = tmp_path / "jupyter-data"
    stale = data / "kernels" / "homelab-notebooks"
    stale.mkdir(parents=True)
    (stale / "kernel.json").write_text(json.dumps({"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f",
                                                            "{connection_file}"], "display_name": "stale",
                                                   "language": "python"}))
    notebook(series["notebooks"] / "01-which.ipynb", "import sys\nprint('kernel python:', sys.executable)")
    argv = [sys.executable, "-m", "labkit.cli", "run", "--params", str(series["lab"]), "--notebooks",
            str(series["notebooks"]), "--outputs", str(series["outputs"]), "--no-html"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JUPYTER_DATA_DIR": str(data)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"kernel python: {sys.executable}" in (series["outputs"] / "latest" / "01-which.ipynb").read_text()


def test_a_notebooks_kernel_has_its_imports_and_kubernetes_api_classes_loaded_before_its_first_cell(series):
    """The kernel started ahead imports what the notebook imports, and labkit.kube loads the API
    classes kubernetes would load lazily in the cell that first talks to the cluster."""
    notebook(series["notebooks"] / "01-warm.ipynb",
             "import sys\nprint('loaded ahead:', sorted(m for m in ('labkit.kube', 'kubernetes.client.api.core_v1_api',"
             " 'kubernetes.client.api.apps_v1_api') if m in sys.modules))",
             "from labkit import kube")
    done = labkit_run(series)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded ahead: ['kubernetes.client.api.apps_v1_api', 'kubernetes.client.api.core_v1_api', 'labkit.kube']" \
        in (series["outputs"] / "latest" / "01-warm.ipynb").read_text()


def test_each_notebook_runs_in_a_fresh_forked_kernel_that_shows_tables_and_figures_labkits_way(series):
    """Kernels are forked from one process that imported labkit first (labkit.kernelfork): each
    notebook still gets a process of its own that no earlier cell touched, and labkit's display of
    tables and figures, which needs the kernel's shell the fork server never had, is in place."""
    notebook(series["notebooks"] / "01-first.ipynb",
             "import os\nfrom labkit import report\nreport.LEFT_BEHIND = True\nprint('pid', os.getpid())")
    notebook(series["notebooks"] / "02-second.ipynb",
             "import os\nimport pandas as pd\nimport plotly.graph_objects as go\nfrom labkit import plots, report\n"
             "print('pid', os.getpid(), 'left behind:', hasattr(report, 'LEFT_BEHIND'))",
             "pd.DataFrame({'node': ['k3s-master']})", "go.Figure(layout_title_text='drawn')")
    done = labkit_run(series)
    assert done.returncode == 0, done.stdout + done.stderr
    first, second = (nbformat.read(series["outputs"] / "latest" / name, as_version=4)
                     for name in ("01-first.ipynb", "02-second.ipynb"))
    first_pid = re.search(r"pid (\d+)", first.cells[-1].outputs[0]["text"])[1]
    printed = second.cells[-3].outputs[0]["text"]
    assert printed.startswith("pid ") and f"pid {first_pid} " not in printed and "left behind: False" in printed
    table, figure = second.cells[-2].outputs[0]["data"], second.cells[-1].outputs[0]["data"]
    assert "k3s-master" in table["text/html"] and ">0</th>" not in table["text/html"]  # no 0..n index
    assert "application/vnd.plotly.v1+json" in figure and figure["text/plain"] == "<plotly figure: drawn>"


def test_unset_secret_variables_stop_check_strict_and_run_before_anything(series, tmp_path, lab_doc, monkeypatch):
    passing(series["notebooks"] / "01-first.ipynb")
    monkeypatch.delenv("LABKIT_K3S_TOKEN")
    strict = subprocess.run([sys.executable, "-m", "labkit.cli", "check", "--params", str(series["lab"]), "--strict"],
                            capture_output=True, text=True)
    expected = "k3s.token: environment variable LABKIT_K3S_TOKEN is not set; export it before running"
    assert strict.returncode == 2 and expected in strict.stderr
    loose = subprocess.run([sys.executable, "-m", "labkit.cli", "check", "--params", str(series["lab"])],
                           capture_output=True, text=True)
    assert loose.returncode == 0 and f"note: {expected}" in loose.stdout
    done = labkit_run(series)
    assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr
    assert not series["outputs"].exists()


def test_a_run_that_cannot_start_leaves_no_empty_run_folder(series, tmp_path, lab_doc):
    passing(series["notebooks"] / "01-first.ipynb")
    (tmp_path / "secrets.yaml").write_text("other_key: value\n")
    lab_doc["k3s"]["token"] = "file:secrets.yaml#k3s_token"
    write(tmp_path, lab_doc)
    done = labkit_run(series)  # the lab file's check reads the secrets file: a usage error, before any folder
    assert done.returncode == 2 and "k3s.token: secret file:secrets.yaml#k3s_token: key 'k3s_token' not found" \
        in done.stderr
    assert not series["outputs"].exists() or list(series["outputs"].iterdir()) == []


def test_the_kernels_own_log_stays_off_the_console(series):
    """jupyter_client interrupts a kernel before shutting it down; ipykernel may log that as an
    ERROR ('KeyboardInterrupt caught in kernel.'), which must not reach an operator's terminal."""
    notebook(series["notebooks"] / "01-noisy.ipynb",
             "from ipykernel.kernelapp import IPKernelApp\n"
             "IPKernelApp.instance().log.error('KeyboardInterrupt caught in kernel.')")
    done = labkit_run(series)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "KeyboardInterrupt" not in done.stdout + done.stderr


def test_a_dead_kernel_is_reported_with_its_last_words_scrubbed(series):
    """What a kernel writes to its own stderr stays off the terminal (ipykernel's tracebacks when it is
    torn down mid-message); when it dies, the error quotes its last lines, with secrets redacted."""
    notebook(series["notebooks"] / "01-dies.ipynb",
             "import os\ntoken = lab.secret(lab.k3s.token)\n"
             "os.write(2, f'segfault near {token}\\n'.encode())  # the process's stderr, not the cell's\n"
             "os._exit(7)")
    notebook(series["notebooks"] / "02-next.ipynb", "print('never')")
    done = labkit_run(series)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "segfault near" not in done.stderr and K3S_TOKEN not in done.stdout + done.stderr
    first, second = summary(series)["notebooks"]
    assert (first["status"], second["status"]) == ("failed", "skipped")
    assert first["error"].startswith("DeadKernelError") and "the kernel's last words (stderr):\nsegfault near ***" \
        in first["error"], first["error"]


def test_notebook_parameters_from_the_command_line(series):
    """`-p reconcile true` reaches the notebooks that declare it; a misspelt name stops the run."""
    declares = series["notebooks"] / "01-declares.ipynb"
    notebook(declares, "print('reconcile is', repr(reconcile))")
    nb = nbformat.read(declares, as_version=4)
    nb.cells[1].source += "\nreconcile = False"
    nbformat.write(nb, declares)
    notebook(series["notebooks"] / "02-does-not.ipynb", "print(f\"has reconcile: {'reconcile' in globals()}\")")
    done = labkit_run(series, "-p", "reconcile", "true")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = series["outputs"] / "latest"
    assert "reconcile is True" in (folder / "01-declares.ipynb").read_text()
    assert "has reconcile: False" in (folder / "02-does-not.ipynb").read_text()  # not injected where undeclared
    typo = labkit_run(series, "-p", "reconcil", "true")
    assert typo.returncode == 2 and "-p reconcil: no notebook of this run has that parameter" in typo.stderr


def test_an_interrupt_inside_an_asyncio_task_leaves_no_traceback():
    """A Ctrl-C can land while one of papermill's asyncio tasks steps: the task ends with the
    KeyboardInterrupt, and asyncio would log 'Task exception was never retrieved' with its traceback
    when the task is collected (CI saw it once under load). Around a run, that log stays quiet."""
    script = (
        "import asyncio\nfrom labkit.runner import interruptible\n"
        "async def step():\n    raise KeyboardInterrupt\n"
        "with interruptible():\n    loop = asyncio.new_event_loop()\n    task = loop.create_task(step())\n"
        "    try:\n        loop.run_until_complete(task)\n    except KeyboardInterrupt:\n        pass\n"
        "    loop.close()\n    del task, loop\n"
        "import logging\nlogging.getLogger('asyncio').error('other errors still show')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "never retrieved" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "other errors still show" in done.stderr


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _kernel_processes(runner: int) -> list[int]:
    """The fork server the runner started and the kernels it forked."""
    server = [pid for pid in _children(runner) if b"labkit.kernelfork" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    return server + [kernel for pid in server for kernel in _children(pid)]


def _alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return False


@contextmanager
def _slow_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, list[int], Path, Path, Path]]:
    """`labkit run` of a notebook whose cell sleeps, on an embedded lab it starts, once that cell has
    started: the run, the kernel's processes (forked by the fork server: the runner's grandchildren),
    outputs, scratch folder, and the lab's ``labsim down`` status once the run has gone."""
    from tests.labfiles import state_dir, write_lab

    lab_file = write_lab(tmp_path)
    books, outputs, scratch = tmp_path / "notebooks", tmp_path / "outputs", tmp_path / "tmp"
    books.mkdir()
    scratch.mkdir()
    notebook(books / "01-slow.ipynb", "token = lab.secret(lab.proxmox.token_secret)\nprint('before', token)",
             "import time\nprint('waiting', flush=True)\ntime.sleep(600)", "print('after')")
    notebook(books / "02-next.ipynb", "print('never')")
    argv = [sys.executable, "-m", "labkit.cli", "run", "--params", str(lab_file), "--notebooks", str(books),
            "--outputs", str(outputs), "--no-html"]
    # SIGINT as in a terminal: a pytest started in the background (`nohup pytest &` from a script)
    # ignores SIGINT, and a child inherits that; a handled signal is reset to its default by exec.
    held = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(scratch), "PYTHONUNBUFFERED": "1"})
    finally:
        signal.signal(signal.SIGINT, held)
    down = tmp_path / "labsim-down.txt"
    try:
        for line in run.stdout:
            if "import time" in line:  # the slow cell has started
                break
        kernels = _kernel_processes(run.pid)
        assert len(kernels) >= 2  # the fork server and the notebook's kernel
        yield run, kernels, outputs, scratch, down
    finally:
        run.kill()
        status = subprocess.run([sys.executable, "-m", "labsim", "down", "--state", str(state_dir(lab_file))],
                                capture_output=True, text=True, timeout=120)
        down.write_text(status.stdout)


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupted_run_leaves_a_record_and_no_debris(tmp_path, signame, code):
    """Ctrl-C or SIGTERM mid-cell: kernel stopped, what ran kept (scrubbed), summary 'interrupted'
    naming notebook and cell, latest updated, no temporary folder, the embedded lab it started stopped."""
    with _slow_run(tmp_path) as (run, kernels, outputs, scratch, down):
        run.send_signal(getattr(signal, signame))
        out, err = run.communicate(timeout=180)
    assert down.read_text().startswith("labsim: not running")  # the embedded lab the run started is stopped
    assert run.returncode == code, out + err
    assert "Traceback" not in out + err
    assert f"interrupted ({signame})" in err
    summary = json.loads((outputs / "latest" / "summary.json").read_text())
    assert summary["run"]["status"] == "interrupted" and summary["run"]["interrupted_by"] == signame
    first, second = summary["notebooks"]
    assert (first["status"], second["status"]) == ("interrupted", "skipped")
    assert first["error"].startswith(f"interrupted by {signame} in cell 6/7 · 01-slow: import time")
    assert "**01-slow interrupted**" in (outputs / "latest" / "summary.md").read_text()
    executed = nbformat.read(outputs / "latest" / "01-slow.ipynb", as_version=4)
    printed = [o.get("text", "") for c in executed.cells for o in c.get("outputs", [])]
    assert "before ***\n" in printed and executed.cells[-1].outputs == []  # what ran, scrubbed
    assert first["secrets_scrubbed"] >= 1
    assert list(scratch.iterdir()) == []  # no unscrubbed notebook left in the temporary folder
    assert not any(_alive(pid) for pid in kernels)


def test_a_killed_run_leaves_no_kernel_behind(tmp_path):
    """A runner killed outright (SIGKILL: nothing of it runs) closes the fork server's channel by
    dying; the server kills the kernel it forked, mid-cell, and exits."""
    with _slow_run(tmp_path) as (run, kernels, *_):
        run.kill()
        run.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in kernels) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in kernels)


CANARY_CELLS = [
    "from labkit import secrets\nimport pandas as pd\nimport plotly.graph_objects as go\n"
    "canary = open(canary_file).read().strip()\nsecrets.register(canary)  # as labkit does with what it learns",
    "display(pd.DataFrame({'node': ['k3s-master'], 'token': [canary]}))",
    "class Holder:\n    def __init__(self, value):\n        self.value = value\n"
    "    def __repr__(self):\n        return f'Holder({self.value!r})'\nHolder(canary)",
    "go.Figure(layout_title_text=f'token {canary}')",
]


def test_secrets_only_the_kernel_knows_never_reach_outputs_nor_history(series, tmp_path):
    """Canaries the runner never resolves itself (the kernel reads and registers them, as it
    does a node token or a kubeconfig key) printed in a table, a repr, a figure and an exception."""
    canary = f"kernel-only-canary-{os.urandom(12).hex()}"
    canary_file = tmp_path / "canary.txt"
    canary_file.write_text(canary)
    path = notebook(series["notebooks"] / "01-canary.ipynb", *CANARY_CELLS)
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source += '\ncanary_file = ""'
    nb.cells.append(nbformat.v4.new_markdown_cell("## The step that fails\n\nIt names the canary."))
    nb.cells.append(nbformat.v4.new_code_cell("raise ValueError(f'cannot use {canary}')"))
    nbformat.write(nb, path)
    ipython = tmp_path / "ipython"
    scratch = tmp_path / "tmp"  # the run's own temp folder: other runs on this machine have theirs in /tmp
    scratch.mkdir()
    argv = [sys.executable, "-m", "labkit.cli", "run", "--params", str(series["lab"]), "--notebooks",
            str(series["notebooks"]), "--outputs", str(series["outputs"]), "-p", "canary_file", str(canary_file)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "IPYTHONDIR": str(ipython), "TMPDIR": str(scratch)})
    assert done.returncode == 1, done.stdout + done.stderr
    forms = [canary, base64.b64encode(canary.encode()).decode()]
    folder = series["outputs"] / "latest"
    files = sorted(folder.iterdir())
    assert {p.suffix for p in files} >= {".ipynb", ".html", ".json", ".md"}
    for file in files:
        text = file.read_text()
        assert not any(form in text for form in forms), file
    executed = (folder / "01-canary.ipynb").read_text()
    assert executed.count("***") >= 4 and "application/vnd.plotly.v1+json" in executed
    assert summary(series)["notebooks"][0]["secrets_scrubbed"] >= 4
    assert not any(form in done.stdout + done.stderr for form in forms)
    error = summary(series)["notebooks"][0]["error"]
    assert error.startswith("cell In [8] · The step that fails `raise ValueError(") and "cannot use ***" in error
    history = ipython / "profile_default" / "history.sqlite"  # the kernel kept no history of cells or -p values
    assert not history.exists() or not sqlite3.connect(history).execute("select * from history").fetchall()
    assert not list(scratch.glob("labkit-run-*/kernel-secrets.jsonl"))


def test_parameters_that_are_secrets_or_the_wrong_type_are_refused_before_anything(series):
    declares = notebook(series["notebooks"] / "01-declares.ipynb", "print(reconcile, note)")
    nb = nbformat.read(declares, as_version=4)
    nb.cells[1].source += '\nreconcile = False\nnote = ""'
    nbformat.write(nb, declares)
    k3s_token = "K10" + "ab" * 32 + "::server:hunter2hunter2"
    refused = {("api_token", "abc"): "-p api_token: the value looks like a secret's name",
               ("note", k3s_token): "-p note: the value looks like a k3s token",
               ("note", "6f1c1d8e-3b1a-4a57-9e0e-5a9d2b8f0c11"): "-p note: the value looks like a UUID",
               ("note", f"prefix {K3S_TOKEN}"): "-p note: the value holds the lab's secret k3s.token",
               ("reconcile", "1"): "-p reconcile: 1 is an int; 01-declares expects a bool like its default False"}
    for (name, value), expected in refused.items():
        done = labkit_run(series, "-p", name, value)
        assert done.returncode == 2 and expected in done.stderr, (name, done.stderr)
        assert value not in done.stderr + done.stdout or name == "reconcile"
        assert "Traceback" not in done.stderr and not list(series["outputs"].glob("*/*.ipynb"))
