"""Lab files for tests: the sim lab on a loopback subnet and ports of its own, so that tests
(and several test runs on one machine) never collide on 127.0.2.0/24:8006."""

from __future__ import annotations

import itertools
import os
import random
import socket
from pathlib import Path
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parent.parent
SIM_YAML = REPO / "parameters" / "sim.yaml"
_counter = itertools.count()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _unique(space: int) -> int:
    return (os.getpid() * 131 + next(_counter) * 7 + random.randrange(1 << 12)) % space


def unique_subnet() -> str:
    """A /24 in 127.0.0.0/8 that no other test (or test process) of this run uses."""
    # Second octet 10-199 less 42 and 43: 127.42/16 and 127.43/16 are the embedded lab's default pod
    # and service networks (a lab file without them gets those); 200-247 hold the tests' own.
    n = _unique(188 * 250)
    second = 10 + n // 250
    return f"127.{second + 2 if second >= 42 else second}.{n % 250}"


def unique_pod_networks() -> tuple[str, str]:
    """A cluster CIDR (/22: four nodes' /24s) and a service CIDR (/24) of their own, so that
    parallel labs' pod IPs and ClusterIPs (which the twin binds) never collide."""
    n, m = _unique(32 * 64), _unique(16 * 256)
    return f"127.{200 + n // 64}.{(n % 64) * 4}.0/22", f"127.{232 + m // 256}.{m % 256}.0/24"


def sim_lab(tmp_path: Path, *, workers: int = 2, time_scale: float = 0.0, **overrides) -> dict:
    """The sim lab document with fresh addresses; ``overrides`` replace top-level sections."""
    doc = yaml.safe_load(SIM_YAML.read_text())
    net = unique_subnet()
    state = tmp_path / "labsim"
    doc["embedded"] = {"state_dir": str(state), "time_scale": time_scale}
    doc["proxmox"].update(
        port=free_port(),
        token_secret=f"file:{state}/secrets.yaml#pve_token_secret",
        ca_file=str(state / "pve" / "ca.pem"),
    )
    doc["network"].update(subnet=f"{net}.0/24", gateway=f"{net}.1", dns=[f"{net}.1"])
    names = ["k3s-master"] + [f"k3s-worker-{i:02d}" for i in range(1, workers + 1)]
    doc["nodes"] = [
        {"name": n, "role": "server" if i == 0 else "agent", "vmid": 120 + i, "ip": f"{net}.{20 + i}",
         "cores": 2, "memory_mib": 4096, "disk_gib": 32, "tags": ["k3s", "server" if i == 0 else "agent"]}
        for i, n in enumerate(names)
    ]
    doc["ssh"].update(
        public_key=str(state / "ssh" / "id_ed25519.pub"),
        private_key=f"file:{state}/ssh/id_ed25519",
        port=free_port(),
        known_hosts=str(state / "operator" / "known_hosts"),
    )
    cluster_cidr, service_cidr = unique_pod_networks()
    doc["k3s"].update(token=f"file:{state}/secrets.yaml#k3s_token", tls_san=[f"{net}.20", "k3s-master"],
                      cluster_cidr=cluster_cidr, service_cidr=service_cidr)
    doc["metallb"].update(addresses=f"{net}.100-{net}.149")
    doc["nfs"].update(server=f"{net}.2")
    doc["tls"]["solver"]["dns01"]["api_token"] = f"file:{state}/secrets.yaml#cloudflare_api_token"
    for issuer in doc["tls"]["issuers"]:  # the lab's Pebble, on an address of its own subnet
        issuer["server"] = f"https://{net}.3:14000/dir"
    for chart in doc["charts"].values():  # values files stay the repository's
        chart["values"] = str(SIM_YAML.parent / chart["values"])
    doc["observability"]["grafana"]["admin_password"] = f"file:{state}/secrets.yaml#grafana_admin_password"
    doc["observability"]["rules"] = str(SIM_YAML.parent / doc["observability"]["rules"])
    doc["observability"]["rule_tests"] = str(SIM_YAML.parent / "../tests/alerts")
    for chart in doc["observability"]["charts"].values():
        chart["values"] = str(SIM_YAML.parent / chart["values"])
    doc["observability"]["ntfy"].update(server=f"https://{net}.9", ca_file=str(state / "pebble" / "tls" / "ca.pem"),
                                        access_token=f"file:{state}/secrets.yaml#ntfy_access_token")
    doc["kubeconfig"] = str(state / "operator" / "kubeconfig")
    for issuer in doc["tls"]["issuers"]:  # the test CA files the lab's Pebble writes into its state
        where = urlsplit(issuer["server"])
        issuer.update(server_ca_file=str(state / "pebble" / "tls" / "ca.pem"),
                      ca_file=str(state / "pebble" / f"{where.hostname}-{where.port}" / "ca.pem"))
    doc.update(overrides)
    return doc


def minimal_lab(tmp_path: Path) -> dict:
    """The sim lab with every optional key left out (the defaults of labkit.params must make it
    work), its state in ``.labsim`` beside the file, PVE on an address of its own subnet."""
    doc = sim_lab(tmp_path)
    net = doc["network"]["subnet"].rsplit(".", 1)[0]
    secrets = "file:.labsim/secrets.yaml#"
    del doc["embedded"]
    doc["proxmox"] = {"host": f"{net}.3", "node": "pve", "token_id": "root@pam!labkit",
                      "token_secret": secrets + "pve_token_secret", "ca_file": ".labsim/pve/ca.pem"}
    doc["nodes"] = [{k: n[k] for k in ("name", "role", "vmid", "ip")} for n in doc["nodes"]]
    doc["ssh"] = {"public_key": ".labsim/ssh/id_ed25519.pub", "private_key": "file:.labsim/ssh/id_ed25519",
                  "known_hosts": ".labsim/operator/known_hosts"}
    doc["k3s"] = {"version": doc["k3s"]["version"], "token": secrets + "k3s_token"}
    doc["ingress"] = {"domain": doc["ingress"]["domain"]}
    for optional in ("tls", "charts", "observability"):
        doc.pop(optional, None)
    doc["metallb"] = {"addresses": doc["metallb"]["addresses"]}
    doc["nfs"] = {k: doc["nfs"][k] for k in ("server", "path")}
    doc["kubeconfig"] = ".labsim/operator/kubeconfig"
    return doc


def write_lab(tmp_path: Path, doc: dict | None = None, name: str = "lab.yaml", **kw) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc if doc is not None else sim_lab(tmp_path, **kw), sort_keys=False))
    return path


def state_dir(lab_file: Path) -> Path:
    """The embedded lab's state folder, as labkit reads it from the lab file."""
    from labkit.params import load_lab

    lab = load_lab(lab_file, check_files=False)
    assert lab.embedded is not None
    return lab.embedded.state_dir


def sim_config(lab_file: Path):
    """labsim's configuration for a lab file, made the way labkit makes it before it starts labsim
    (tests may use both packages; labkit and labsim never import each other)."""
    from labkit.embedded import write_sim_config
    from labkit.params import load_lab
    from labsim.config import SimConfig

    lab = load_lab(lab_file, check_files=False)
    write_sim_config(lab)
    assert lab.embedded is not None
    return SimConfig.load(lab.embedded.state_dir)

