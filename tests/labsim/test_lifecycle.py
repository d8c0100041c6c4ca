"""The lab's lifecycle: what the first start generates, restart resuming state, loopback only,
the lab clock, and the ``labsim`` command (up --detach, status --json, down) as a process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labsim.clock import Clock
from labsim.config import ConfigError, SimConfig
from labsim.lab import detached_lab, running_lab
from labsim.state import lock_state_dir
from tests.labfiles import sim_config, sim_lab, write_lab
from tests.labsim.pveclient import token_client, wait_for, wait_task

STATUS_KEYS = {"running", "state_dir", "pve", "vms", "ssh", "kube"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_generates_what_a_real_lab_has(lab_file: Path) -> None:
    with running_lab(sim_config(lab_file)) as lab:
        state = lab.lab.state_dir
        secrets = yaml.safe_load((state / "secrets.yaml").read_text())
        assert _mode(state / "secrets.yaml") == 0o600
        assert set(secrets) >= {"pve_token_secret", "k3s_token"}
        assert (state / "pve" / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert _mode(state / "ssh" / "id_ed25519") == 0o600
        assert (state / "ssh" / "id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
        assert (state / "operator").is_dir()
        status = lab.status()
        assert set(status) >= STATUS_KEYS and status["running"] is True
        assert status["pve"]["token_secret"] == secrets["pve_token_secret"]
        assert status["ssh"]["private_key"] == str(state / "ssh" / "id_ed25519")
        assert status["kube"] is None  # no cluster yet


def test_restart_resumes_state(lab_file: Path) -> None:
    with running_lab(sim_config(lab_file)) as lab:
        api = token_client(lab.status())
        wait_task(api, api.nodes("pve").qemu(9000).clone.post(newid=120, name="k3s-master"))
        wait_task(api, api.nodes("pve").qemu(9000).clone.post(newid=121, name="k3s-worker-01"))
        api.nodes("pve").qemu(120).config.put(cores=4, tags="k3s")
        wait_task(api, api.nodes("pve").qemu(120).status.start.post())
        wait_for(lambda: api.nodes("pve").qemu(120).agent.ping.post())  # booted before the lab stops
        upid = api.nodes("pve").qemu(121).status.start.post()
        wait_task(api, upid)
        wait_task(api, api.nodes("pve").qemu(121).status.stop.post())
        ca = Path(lab.status()["pve"]["ca_file"]).read_bytes()
        secret = lab.status()["pve"]["token_secret"]
    with running_lab(sim_config(lab_file)) as lab:
        status = lab.status()
        assert Path(status["pve"]["ca_file"]).read_bytes() == ca and status["pve"]["token_secret"] == secret
        api = token_client(status)
        vms = {vm["vmid"]: vm for vm in api.nodes("pve").qemu.get()}
        assert set(vms) == {120, 121, 9000}
        assert vms[120]["status"] == "running" and vms[121]["status"] == "stopped"
        assert api.nodes("pve").qemu(120).config.get()["cores"] == 4
        assert api.nodes("pve").tasks(upid).status.get()["exitstatus"] == "OK"  # old UPIDs still answer
        assert api.nodes("pve").qemu(120).agent.ping.post() == {"result": {}}  # kept running, agent and all


def test_refuses_non_loopback_addresses_and_an_incomplete_config(tmp_path: Path) -> None:
    good = json.loads((sim_config(write_lab(tmp_path)).state_dir / "config.json").read_text())
    with pytest.raises(ConfigError, match="not a loopback address"):
        SimConfig.from_dict({**good, "pve_host": "192.168.2.10"}, tmp_path)
    with pytest.raises(ConfigError, match="loopback only"):
        SimConfig.from_dict({**good, "subnet": "192.168.2.0/24"}, tmp_path)
    with pytest.raises(ConfigError, match=r"service_cidr: 10.43.0.0/16 is not inside 127.0.0.0/8"):
        SimConfig.from_dict({**good, "service_cidr": "10.43.0.0/16"}, tmp_path)
    with pytest.raises(ConfigError, match=r"nfs_server: 192.168.2.2 is not a loopback address"):
        SimConfig.from_dict({**good, "nfs_server": "192.168.2.2"}, tmp_path)  # the real NAS
    with pytest.raises(ConfigError, match=r"missing \['ssh_port'\], unknown \['ssh.port'\]"):
        SimConfig.from_dict({**{k: v for k, v in good.items() if k != "ssh_port"}, "ssh.port": 22}, tmp_path)


def test_a_nodes_network_is_the_labs_ranges_within_loopback(tmp_path: Path) -> None:
    doc = sim_lab(tmp_path)
    net = doc["network"]["subnet"].rsplit(".", 1)[0]
    doc["metallb"]["addresses"] = f"{net}.100-{net}.103"
    doc["k3s"].update(cluster_cidr="127.42.0.0/16", service_cidr="127.43.0.0/16")
    config = sim_config(write_lab(tmp_path, doc))
    assert [str(n) for n in config.networks] == [f"{net}.0/24", f"{net}.100/30", "127.42.0.0/16", "127.43.0.0/16"]
    good = json.loads((config.state_dir / "config.json").read_text())
    with pytest.raises(ConfigError, match=r"metallb_pool: 10\.0\.0\.1-10\.0\.0\.9 is not inside 127\.0\.0\.0/8"):
        SimConfig.from_dict({**good, "metallb_pool": "10.0.0.1-10.0.0.9"}, tmp_path)  # it would open the LAN


async def test_clock_scales_sleeps_and_advance_wakes_sleepers() -> None:
    instant = Clock(0)
    await asyncio.wait_for(instant.sleep(3600), 5)  # time_scale 0: an hour of lab time is instant
    slow = Clock(1.0)
    before = slow.now()
    sleeper = asyncio.create_task(slow.sleep(3600))
    await asyncio.sleep(0)
    slow.advance(1800)
    await asyncio.sleep(0)
    assert not sleeper.done()  # half of its modelled hour is still ahead
    slow.advance(1800)
    await asyncio.wait_for(sleeper, 5)
    assert slow.now() - before >= 3600


def _labsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labsim", *args], capture_output=True, text=True, timeout=120)


def test_cli_up_detach_status_down(tmp_path: Path) -> None:
    state = sim_config(write_lab(tmp_path)).state_dir
    up = _labsim("up", "--state", str(state), "--detach")
    try:
        assert up.returncode == 0, up.stderr
        shown = _labsim("status", "--state", str(state), "--json").stdout
        secret = yaml.safe_load((state / "secrets.yaml").read_text())["pve_token_secret"]
        assert secret not in shown
        assert json.loads(shown)["pve"]["token_secret"].startswith("(hidden: --show-secrets")
        status = json.loads(_labsim("status", "--state", str(state), "--json", "--show-secrets").stdout)
        assert set(status) >= STATUS_KEYS and status["running"] is True
        assert status["pve"]["token_secret"] == secret
        assert status["state_dir"] == str(state)
        api = token_client(status)
        assert [vm["vmid"] for vm in api.nodes("pve").qemu.get()] == [9000]
        assert (state / "labsim.pid").read_text().strip() == str(status["pid"])
        again = _labsim("up", "--state", str(state), "--detach")
        assert again.returncode == 0 and "already running" in again.stdout
        human = _labsim("status", "--state", str(state))
        assert human.returncode == 0 and "ubuntu-2204-cloudinit" in human.stdout
    finally:
        down = _labsim("down", "--state", str(state))
    assert down.returncode == 0, down.stderr
    assert not (state / "labsim.pid").exists()
    stopped = _labsim("status", "--state", str(state), "--json").stdout
    assert json.loads(stopped)["running"] is False and secret not in stopped
    assert json.loads(stopped)["pve"]["ca_file"] == str(state / "pve" / "ca.pem")
    assert _labsim("status", "--state", str(state)).returncode == 3
    never = _labsim("status", "--state", str(tmp_path / "never"))  # a folder no lab was started in
    assert never.returncode == 3 and "not running" in never.stdout


def test_cli_up_reports_a_taken_port(tmp_path: Path) -> None:
    config = sim_config(write_lab(tmp_path))
    other = tmp_path / "other"
    other.mkdir()
    (other / "labsim.log").write_text("labsim: lab 'sim' up: an earlier run\nlabsim: stopped\n")
    (other / "config.json").write_text((config.state_dir / "config.json").read_text())  # the same addresses
    with running_lab(config):
        up = _labsim("up", "--state", str(other), "--detach")
    assert up.returncode == 1 and "address already in use" in up.stderr.lower()
    assert "another lab or program holds it" in up.stderr
    assert "an earlier run" not in up.stderr  # only this attempt's lines, not the log's history


def test_detached_lab_helper(tmp_path: Path) -> None:
    state = sim_config(write_lab(tmp_path)).state_dir
    with detached_lab(state) as status:
        assert status["running"] is True
        assert token_client(status).version.get()["release"]
    after = json.loads(_labsim("status", "--state", str(state), "--json").stdout)
    assert after["running"] is False


def test_a_killed_lab_restarts_with_its_running_vms_agents(tmp_path: Path) -> None:
    """kill -9 saves nothing more: the restarted lab derives the guest agents from the VMs' run state."""
    state = sim_config(write_lab(tmp_path, time_scale=0.1)).state_dir  # the agent starts well after the boot's last save
    assert _labsim("up", "--state", str(state), "--detach").returncode == 0
    try:
        status = json.loads(_labsim("status", "--state", str(state), "--json", "--show-secrets").stdout)
        api = token_client(status)
        wait_task(api, api.nodes("pve").qemu(9000).clone.post(newid=120, name="k3s-master"))
        wait_task(api, api.nodes("pve").qemu(120).status.start.post())
        wait_for(lambda: api.nodes("pve").qemu(120).agent.ping.post())
        os.kill(status["pid"], signal.SIGKILL)
        wait_for(lambda: _labsim("status", "--state", str(state)).returncode == 3)
        assert _labsim("up", "--state", str(state), "--detach").returncode == 0
        assert api.nodes("pve").qemu(120).status.current.get()["status"] == "running"
        assert wait_for(lambda: api.nodes("pve").qemu(120).agent.ping.post(), timeout=10) == {"result": {}}
    finally:
        assert _labsim("down", "--state", str(state)).returncode == 0


def test_concurrent_ups_from_any_folder_one_wins(tmp_path: Path) -> None:
    """Two `labsim up --detach` at once, from a folder whose modules would shadow the standard library's."""
    state = sim_config(write_lab(tmp_path)).state_dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secrets.py").write_text("raise SystemExit('imported from the caller\\'s folder')\n")
    argv = [str(Path(sys.executable).parent / "labsim"), "up", "--state", str(state), "--detach"]  # as a user
    ups = [subprocess.Popen(argv, cwd=elsewhere, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
    try:
        said = sorted(up.communicate(timeout=120)[0] for up in ups)
        assert [up.returncode for up in ups] == [0, 0], said
        status = json.loads(_labsim("status", "--state", str(state), "--json", "--show-secrets").stdout)
        assert status["running"] is True
        assert (state / "labsim.pid").read_text().strip() == str(status["pid"])  # the loser left it alone
        assert said[0].startswith(f"labsim: already running (pid {status['pid']})")
        assert said[1].startswith(f"labsim: up (pid {status['pid']})")
        foreground = _labsim("up", "--state", str(state))
        assert foreground.returncode == 4 and "already running" in foreground.stdout
    finally:
        assert _labsim("down", "--state", str(state)).returncode == 0
    assert not (state / "labsim.pid").exists()


def test_up_waits_for_no_lab_holding_the_state_folder(tmp_path: Path) -> None:
    """A lab that took the folder but has not written its pid yet still counts as running."""
    state = sim_config(write_lab(tmp_path)).state_dir
    held = lock_state_dir(state)
    assert held is not None
    try:
        up = _labsim("up", "--state", str(state))
    finally:
        os.close(held)
    assert up.returncode == 4 and "already running" in up.stdout
    assert not (state / "secrets.yaml").exists() and not (state / "labsim.pid").exists()  # touched nothing
