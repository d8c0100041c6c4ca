"""The lab's ACME server: Pebble and challtestsrv started by the lab on the address of
tls.issuers (from the config labkit writes), its CA in the state and in ``labsim status``, the
ACME server down and back through the admin endpoint, and no process left once the lab stops."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests
import yaml

from labsim.lab import running_lab
from labsim.pebble import tools_dir
from tests.labfiles import sim_config

pytestmark = pytest.mark.skipif(not (tools_dir() / "pebble").exists(), reason="pebble is not installed (make programs)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"  # a zombie is gone
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_the_lab_serves_its_issuers_directory_from_pebble_and_keeps_its_ca(lab_file: Path) -> None:
    url = yaml.safe_load(lab_file.read_text())["tls"]["issuers"][0]["server"]
    with running_lab(sim_config(lab_file)) as lab:
        status = lab.status()
        acme = status["acme"]
        assert [d["url"] for d in acme["directories"]] == [url]  # staging and prod: one Pebble
        directory = acme["directories"][0]
        assert directory["running"] is True
        trust = acme["tls_ca_file"]
        assert "newAccount" in requests.get(url, verify=trust, timeout=10).json()  # TLS verified
        root = requests.get(directory["management"] + "/roots/0", verify=trust, timeout=10).text
        bundle = Path(directory["ca_file"]).read_text()
        assert bundle.startswith(root) and bundle.count("BEGIN CERTIFICATE") == 2  # root + intermediate
        pids = [json.loads(p.read_text())["pid"] for p in (lab.lab.state_dir / "pebble" / "run").glob("*.pid")]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)  # pebble and challtestsrv
        net = lab.lab.config.subnet.network_address
        cluster = lab.run(lab.lab.clusters.create_server(
            node_name="k3s-master", ip=str(net + 20), version="v1.34.3+k3s1", token="K10x", tls_san=[], disable=[],
            cluster_init=True, cluster_cidr=str(lab.lab.config.cluster_cidr), service_cidr=str(lab.lab.config.service_cidr)))
        assert cluster.pebble is lab.lab.pebble and cluster.cloudflare is lab.lab.cloudflare  # what its pods reach
        assert cluster.cloudflare.token == yaml.safe_load((lab.lab.state_dir / "secrets.yaml").read_text())[
            "cloudflare_api_token"]

        base = status["pve"]["url"] + "/labsim/faults"
        auth = {"Authorization": f"PVEAPIToken={status['pve']['token_id']}={status['pve']['token_secret']}"}
        answer = requests.post(base, json={"fault": "acme_down"}, headers=auth, verify=status["pve"]["ca_file"],
                               timeout=30)
        assert answer.json()["data"]["acme_down"] == [url]
        with pytest.raises(requests.ConnectionError):
            requests.get(url, verify=trust, timeout=10)
        requests.delete(base, headers=auth, verify=status["pve"]["ca_file"], timeout=30).raise_for_status()
        assert "newAccount" in requests.get(url, verify=trust, timeout=10).json()
        assert Path(directory["ca_file"]).read_text().count("BEGIN CERTIFICATE") == 4  # a new Pebble, a new CA
        pids = [json.loads(p.read_text())["pid"] for p in (lab.lab.state_dir / "pebble" / "run").glob("*.pid")]
    assert not [pid for pid in pids if _alive(pid)]  # nothing outlives the lab
    assert not list((lab.lab.state_dir / "pebble" / "run").glob("*.pid"))
