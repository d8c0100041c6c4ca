"""`labkit jupyter` (`make jupyter`) as its user meets it: JupyterLab in headless Chromium opens
01-provision-vms, runs all cells through the UI on the embedded lab, shows the checks table and the
figures without an error; SIGTERM then stops JupyterLab, its kernel and the lab."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.labfiles import REPO, free_port, sim_lab

NOTEBOOK = "01-provision-vms"


def _copy_series(work: Path) -> Path:
    """The notebook (its .ipynb and jupytext source, same mtime) with a lab of the test's own as
    ``../parameters/sim.yaml``, the notebook's default lab file."""
    notebooks, parameters = work / "notebooks", work / "parameters"
    notebooks.mkdir(parents=True)
    parameters.mkdir()
    for name in (f"{NOTEBOOK}.ipynb", f"{NOTEBOOK}.py", "jupytext.toml"):
        shutil.copy(REPO / "notebooks" / name, notebooks / name)
        os.utime(notebooks / name, (time.time(), time.time()))  # a pair jupytext reads without complaint
    (parameters / "sim.yaml").write_text(yaml.safe_dump(sim_lab(work), sort_keys=False))
    return parameters / "sim.yaml"


def _settings(folder: Path) -> None:
    """Every cell in the DOM (no windowing), so the test sees all outputs without scrolling."""
    tracker = folder / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))


def _get(url: str) -> dict | list:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"labkit jupyter ended (exit {process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within 240 s:\n{log.read_text()[-3000:]}")


def _processes_mentioning(*needles: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(needle in text for needle in needles):
            found.append(f"{cmdline.parent.name}: {text[:160]}")
    return found


@pytest.fixture
def jupyterlab(tmp_path: Path):
    """``labkit jupyter`` on a lab and notebooks folder of the test's own; yields (url, token, process)."""
    work = tmp_path / "work"
    lab_file = _copy_series(work)
    _settings(work / "lab-settings")
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_TOKEN": token, "JUPYTER_CONFIG_DIR": str(work / "jupyter-config"),
           "JUPYTERLAB_SETTINGS_DIR": str(work / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(work / "lab-workspaces")}
    log = tmp_path / "labkit-jupyter.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "labkit", "jupyter", "--params", str(lab_file),
                                    "--notebooks", str(work / "notebooks"), "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(f"{url}/api/status?token={token}", process, log)
        yield url, token, process, work, log
    finally:
        if process.poll() is None:  # the test failed before stopping it
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            subprocess.run([sys.executable, "-m", "labsim", "down", "--state", str(work / "labsim")],
                           capture_output=True, timeout=120)


def test_notebook_runs_in_jupyterlab_and_everything_stops_after(jupyterlab, chromium, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, token, process, work, log = jupyterlab
    chromium.get(f"{url}/lab/tree/{NOTEBOOK}.ipynb?token={token}")
    idle = '//*[contains(@class, "jp-StatusBar-TextItem") and contains(text(), "homelab-notebooks | Idle")]'
    WebDriverWait(chromium, 120).until(lambda b: b.find_elements(By.XPATH, idle))
    chromium.find_element(By.XPATH, '//div[contains(@class, "lm-MenuBar-itemLabel") and text()="Run"]').click()
    WebDriverWait(chromium, 20).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, 'li[data-command="runmenu:run-all"]'))[0].click()

    def prompts() -> list[str]:
        return [p.text for p in chromium.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputArea-prompt")]

    def all_ran(_) -> bool:
        shown = prompts()
        return bool(shown) and all(p.strip("[]: ").isdigit() for p in shown)

    WebDriverWait(chromium, 300).until(all_ran, message=f"not every cell ran: {prompts()}")
    WebDriverWait(chromium, 30).until(lambda b: b.find_elements(By.XPATH, idle))

    errors = chromium.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')
    assert not errors, [e.text[:500] for e in errors]
    assert "Traceback" not in chromium.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel").text
    checks = [t for t in chromium.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output table")
              if [h.text for h in t.find_elements(By.CSS_SELECTOR, "thead th")][:3] == ["check", "result", "detail"]]
    assert checks, "no checks table among the outputs"
    results = [row.find_elements(By.CSS_SELECTOR, "td")[1].text for row in checks[-1].find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert results and set(results) == {"pass"}, results
    drawn = ".jp-OutputArea .js-plotly-plot svg.main-svg"  # plotly's JupyterLab extension drew it
    WebDriverWait(chromium, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .js-plotly-plot")) >= 2,
                                      message="the capacity and timeline figures were not drawn")
    assert all(f.find_elements(By.CSS_SELECTOR, "svg.main-svg")
               for f in chromium.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .js-plotly-plot")), drawn
    chromium.save_screenshot(str(tmp_path / "jupyterlab.png"))
    kernels = [k["id"] for k in _get(f"{url}/api/kernels?token={token}")]
    assert kernels

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert "stopping the embedded lab" in log.read_text()
    assert not _processes_mentioning(str(work), *kernels)
