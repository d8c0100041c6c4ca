"""What a real lab already has, generated on the embedded lab's first start: the PVE CA and
server certificate, the API token secret and root password, the operator's SSH key pair and
the k3s token. Later starts load them, so clients keep trusting the same CA and keys."""

from __future__ import annotations

import os
import secrets
import string
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import yaml

from labsim import pki

SECRETS_FILE = "secrets.yaml"
CA_CERT, CA_KEY = "pve/ca.pem", "pve/ca-key.pem"
SERVER_CERT, SERVER_KEY = "pve/pve-ssl.pem", "pve/pve-ssl.key"
SSH_KEY = "ssh/id_ed25519"


@dataclass(frozen=True)
class LabSecrets:
    pve_token_secret: str
    pve_root_password: str
    k3s_token: str
    cloudflare_api_token: str  # what the Cloudflare model accepts (labsim.apps.cloudflare)
    ntfy_access_token: str  # what the ntfy model accepts (labsim.apps.ntfy)
    server_cert: Path
    server_key: Path
    ca_file: Path
    ssh_private_key: Path


def ensure_secrets(state_dir: Path, server_names: list[str]) -> LabSecrets:
    """Load the lab's secrets, creating whichever are missing."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "operator").mkdir(exist_ok=True)
    values = _ensure_values(state_dir / SECRETS_FILE)
    _ensure_pki(state_dir, server_names)
    _ensure_ssh_key(state_dir / SSH_KEY)
    return LabSecrets(
        pve_token_secret=values["pve_token_secret"],
        pve_root_password=values["pve_root_password"],
        k3s_token=values["k3s_token"],
        cloudflare_api_token=values["cloudflare_api_token"],
        ntfy_access_token=values["ntfy_access_token"],
        server_cert=state_dir / SERVER_CERT,
        server_key=state_dir / SERVER_KEY,
        ca_file=state_dir / CA_CERT,
        ssh_private_key=state_dir / SSH_KEY,
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)


def _ensure_values(path: Path) -> dict[str, str]:
    values = yaml.safe_load(path.read_text()) if path.exists() else {}
    generated = {
        "pve_token_secret": lambda: str(uuid.uuid4()),  # PVE token secrets are UUIDs
        "pve_root_password": lambda: secrets.token_urlsafe(18),
        "k3s_token": lambda: f"K10{secrets.token_hex(32)}",
        # the DNS-01 token sim.yaml's tls section references (40 characters, as Cloudflare's)
        "cloudflare_api_token": lambda: secrets.token_urlsafe(30),
        "grafana_admin_password": lambda: secrets.token_urlsafe(18),  # sim.yaml's observability.grafana
        # sim.yaml's observability.ntfy.access_token: ntfy's tokens are tk_ and 29 lowercase letters/digits
        "ntfy_access_token": lambda: "tk_" + "".join(secrets.choice(string.ascii_lowercase + string.digits)
                                                     for _ in range(29)),
    }
    missing = {key: make() for key, make in generated.items() if key not in values}
    if missing:
        values.update(missing)
        _write_private(path, yaml.safe_dump(values, sort_keys=True).encode())
    return values


def _ensure_pki(state_dir: Path, server_names: list[str]) -> None:
    ca_cert, ca_key = state_dir / CA_CERT, state_dir / CA_KEY
    if ca_cert.exists() and ca_key.exists():
        ca = pki.KeyPair.load(ca_cert, ca_key)
    else:
        ca = pki.make_ca("Proxmox Virtual Environment (labsim)")
        ca.save(ca_cert, ca_key)
    if not (state_dir / SERVER_CERT).exists():
        pki.issue(ca, server_names[0], sans=server_names).save(state_dir / SERVER_CERT, state_dir / SERVER_KEY)


def _ensure_ssh_key(path: Path) -> None:
    if path.exists() and path.with_suffix(".pub").exists():
        return
    key = asyncssh.generate_private_key("ssh-ed25519", comment="operator@labsim")
    _write_private(path, key.export_private_key("openssh"))
    path.with_suffix(".pub").write_bytes(key.export_public_key("openssh"))
