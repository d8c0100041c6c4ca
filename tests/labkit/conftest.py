"""Fixtures for labkit's own tests: a valid real-lab file whose files and secrets exist locally."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import asyncssh
import pytest
import yaml

from labkit import secrets, ssh
from labsim.pki import make_ca
from tests.labfiles import REPO
from tests.labkit.embedded import provisioned_lab
from tests.labkit.series import pytest_collection_modifyitems, series  # noqa: F401  (the session's 01-03 lab)

HOMELAB = REPO / "parameters" / "homelab.yaml"
PVE_TOKEN = "6f1c1d8e-3b1a-4a57-9e0e-5a9d2b8f0c11"
K3S_TOKEN = "k3s-canary-token-5d41402abc4b2a76"
CLOUDFLARE_TOKEN = "cf-canary-token-0c8d2f1e9a7b4c3d"
GRAFANA_PASSWORD = "grafana-canary-password-5e1f"
NTFY_TOKEN = "tk_ntfycanarytoken7a9b3c"


@pytest.fixture(autouse=True)
def _forget_secrets():
    secrets.forget_all()
    yield
    secrets.forget_all()


@pytest.fixture
def provisioned(tmp_path: Path):
    """An embedded lab of the test's own whose VMs are provisioned (notebook 01 done)."""
    with provisioned_lab(tmp_path) as lab:
        yield lab


@pytest.fixture
def session(provisioned):
    """SSH to the provisioned lab's nodes, host keys pinned."""
    s = ssh.connect(provisioned.lab)
    yield s
    s.close()


@pytest.fixture
def lab_doc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """homelab.yaml with its local files made in tmp_path and its secrets in the environment."""
    ca, key = _local_files()
    (tmp_path / "pve-ca.pem").write_bytes(ca)
    (tmp_path / "id.pub").write_text(key.export_public_key().decode().strip() + " operator\n")
    (tmp_path / "id").write_bytes(key.export_private_key())
    monkeypatch.setenv("LABKIT_PVE_TOKEN", PVE_TOKEN)
    monkeypatch.setenv("LABKIT_K3S_TOKEN", K3S_TOKEN)
    monkeypatch.setenv("LABKIT_CLOUDFLARE_TOKEN", CLOUDFLARE_TOKEN)
    monkeypatch.setenv("LABKIT_GRAFANA_PASSWORD", GRAFANA_PASSWORD)
    monkeypatch.setenv("LABKIT_NTFY_TOKEN", NTFY_TOKEN)
    monkeypatch.setenv("LABKIT_N8N_API_KEY", "n8n_api_" + "0" * 32)
    doc = yaml.safe_load(HOMELAB.read_text())
    for chart in doc["charts"].values():  # the repository's values files
        chart["values"] = str(HOMELAB.parent / chart["values"])
    doc["observability"]["rules"] = str(HOMELAB.parent / doc["observability"]["rules"])
    doc["observability"]["rule_tests"] = str(REPO / "tests" / "alerts")
    for chart in doc["observability"]["charts"].values():
        chart["values"] = str(HOMELAB.parent / chart["values"])
    doc["proxmox"]["ca_file"] = "pve-ca.pem"
    doc["ssh"].update(public_key="id.pub", private_key="file:id", known_hosts="known_hosts")
    doc["kubeconfig"] = "kubeconfig"
    return doc


@functools.cache
def _local_files() -> tuple[bytes, asyncssh.SSHKey]:
    """A PEM CA and an operator key pair, made once: what a real lab's files hold."""
    return make_ca("pve-ca-test").cert_pem, asyncssh.generate_private_key("ssh-ed25519")


def write(tmp_path: Path, doc: dict, name: str = "lab.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1000"]


@pytest.fixture
def chromium(tmp_path: Path):
    """Debian's headless Chromium driven through chromedriver (both installed by `make test`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("chromium and chromedriver are needed: run `make tools` (scripts/install-browser.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield browser
    finally:
        browser.quit()
