"""Each injected fault as a PVE client sees it: the same status codes, reasons, task errors
and connection failures a real Proxmox VE host produces. Faults are set from Python
(``lab.lab.pve``, through the thread-safe ``lab.call``) and over the admin endpoint."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncssh
import pytest
import requests
from proxmoxer import ProxmoxAPI, ResourceException

from labsim.lab import LabHandle
from tests.labsim.pveclient import provision, token_client, wait_for, wait_task


def _clone_and_start(api: ProxmoxAPI, vmid: int = 120) -> None:
    assert wait_task(api, api.nodes("pve").qemu(9000).clone.post(newid=vmid))["exitstatus"] == "OK"
    assert wait_task(api, api.nodes("pve").qemu(vmid).status.start.post())["exitstatus"] == "OK"


def test_next_task_of_a_kind_fails_with_pve_task_error(lab: LabHandle, api: ProxmoxAPI) -> None:
    lab.call(lab.lab.pve.fail_next_task, "qmclone")
    upid = api.nodes("pve").qemu(9000).clone.post(newid=120, full=1)
    status = wait_task(api, upid)
    assert status["status"] == "stopped" and status["exitstatus"].startswith("clone failed: ")
    assert api.nodes("pve").tasks(upid).log.get()[-1]["t"] == f"TASK ERROR: {status['exitstatus']}"
    assert 120 not in [vm["vmid"] for vm in api.nodes("pve").qemu.get()]  # PVE cleans up a failed clone
    assert wait_task(api, api.nodes("pve").qemu(9000).clone.post(newid=120))["exitstatus"] == "OK"  # only the next


def test_held_lock_refuses_changes(lab: LabHandle, api: ProxmoxAPI) -> None:
    _clone_and_start(api)
    lab.call(lab.lab.pve.hold_lock, 120, "backup")
    with pytest.raises(ResourceException) as locked:
        api.nodes("pve").qemu(120).config.put(cores=4)
    assert locked.value.status_code == 500 and locked.value.content == "VM 120 is locked (backup)"
    shutdown = wait_task(api, api.nodes("pve").qemu(120).status.shutdown.post())
    assert shutdown["exitstatus"] == "VM 120 is locked (backup)"  # checked in the worker, as qemu-server does
    api.nodes("pve").qemu(120).config.put(cores=4, skiplock=1)  # root may skip the lock, as on PVE
    lab.call(lab.lab.pve.release_lock, 120)
    assert wait_task(api, api.nodes("pve").qemu(120).status.shutdown.post())["exitstatus"] == "OK"


def test_slow_shutdown_past_its_timeout(lab: LabHandle, api: ProxmoxAPI) -> None:
    _clone_and_start(api)
    lab.call(lab.lab.pve.faults.slow_shutdown.__setitem__, 120, 600.0)
    vm = api.nodes("pve").qemu(120)
    failed = wait_task(api, vm.status.shutdown.post(timeout=30))
    assert failed["exitstatus"] == "VM quit/powerdown failed - got timeout"
    assert vm.status.current.get()["status"] == "running"
    forced = vm.status.shutdown.post(timeout=30, forceStop=1)
    assert wait_task(api, forced)["exitstatus"] == "OK"
    assert "VM still running - terminating now with SIGTERM" in [line["t"] for line in
                                                                 api.nodes("pve").tasks(forced).log.get()]
    assert vm.status.current.get()["status"] == "stopped"


def test_agent_that_never_comes_up(lab: LabHandle, api: ProxmoxAPI) -> None:
    lab.call(lab.lab.pve.faults.agent_down.add, 120)
    _clone_and_start(api)
    lab.advance(600)  # long past boot: the VM runs, its agent does not answer
    assert api.nodes("pve").qemu(120).status.current.get()["status"] == "running"
    with pytest.raises(ResourceException) as agent:
        api.nodes("pve").qemu(120).agent("network-get-interfaces").get()
    assert agent.value.status_code == 500 and agent.value.content == "QEMU guest agent is not running"
    lab.call(lab.lab.pve.clear_faults)  # the fault healed: the agent of the running guest answers
    assert api.nodes("pve").qemu(120).agent.ping.post() == {"result": {}}


def test_storage_full(lab: LabHandle, api: ProxmoxAPI) -> None:
    lab.call(lab.lab.pve.faults.storage_full.add, "local-lvm")
    status = api.nodes("pve").storage("local-lvm").status.get()
    assert status["avail"] == 0 and status["used"] == status["total"]
    clone = wait_task(api, api.nodes("pve").qemu(9000).clone.post(newid=120, full=1))
    assert "insufficient free space" in clone["exitstatus"]


def test_dropped_and_slow_connections(lab: LabHandle, api: ProxmoxAPI) -> None:
    lab.call(setattr, lab.lab.pve.faults, "drop_requests", 1)
    with pytest.raises(requests.exceptions.ConnectionError):
        api.version.get()
    assert api.version.get()["release"]  # only the next request was dropped
    lab.call(setattr, lab.lab.pve.faults, "request_delay", 1.0)
    impatient = token_client(lab.status(), timeout=0.2)
    with pytest.raises(requests.exceptions.ReadTimeout):
        impatient.version.get()
    lab.call(lab.lab.pve.clear_faults)
    assert impatient.version.get()["release"]


def test_admin_endpoint_injects_and_clears(lab: LabHandle, api: ProxmoxAPI) -> None:
    status = lab.status()
    base, ca = status["pve"]["url"] + "/labsim", status["pve"]["ca_file"]
    token = {"Authorization": f"PVEAPIToken={status['pve']['token_id']}={status['pve']['token_secret']}"}
    assert requests.post(f"{base}/faults", json={"fault": "storage_full", "storage": "local-lvm"},
                         verify=ca, timeout=10).status_code == 401
    answer = requests.post(f"{base}/faults", json={"fault": "fail_next_task", "kind": "qmstart",
                                                   "message": "start failed: QEMU exited with code 1"},
                           headers=token, verify=ca, timeout=10)
    assert answer.status_code == 200 and answer.json()["data"]["task_failures"] == {
        "qmstart": ["start failed: QEMU exited with code 1"]}
    wait_task(api, api.nodes("pve").qemu(9000).clone.post(newid=120))
    start = wait_task(api, api.nodes("pve").qemu(120).status.start.post())
    assert start["exitstatus"] == "start failed: QEMU exited with code 1"
    assert api.nodes("pve").qemu(120).status.current.get()["status"] == "stopped"
    requests.post(f"{base}/faults", json={"fault": "hold_lock", "vmid": 120, "lock": "migrate"},
                  headers=token, verify=ca, timeout=10)
    with pytest.raises(ResourceException) as locked:
        api.nodes("pve").qemu(120).config.put(onboot=1)
    assert locked.value.content == "VM 120 is locked (migrate)"
    bad = requests.post(f"{base}/faults", json={"fault": "meteor"}, headers=token, verify=ca, timeout=10)
    assert bad.status_code == 400
    assert requests.delete(f"{base}/faults", headers=token, verify=ca, timeout=10).status_code == 200
    assert requests.get(f"{base}/status", headers=token, verify=ca, timeout=10).json()["data"]["running"] is True


async def test_admin_endpoint_drives_the_nodes_ssh_faults(lab: LabHandle, api: ProxmoxAPI) -> None:
    """A detached twin can be driven through the SSH faults too; OpenSSH sees each as on a real network."""
    status = lab.status()
    net = lab.lab.config.subnet
    ip = str(net.network_address + 20)
    key = status["ssh"]["private_key"]
    provision(api, 120, "k3s-master", ip, Path(key + ".pub").read_text().strip(), gateway=str(net.network_address + 1))
    base, ca = status["pve"]["url"] + "/labsim/faults", status["pve"]["ca_file"]
    token = {"Authorization": f"PVEAPIToken={status['pve']['token_id']}={status['pve']['token_secret']}"}

    def inject(**fault: object) -> dict:
        answer = requests.post(base, json=fault, headers=token, verify=ca, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]

    def ssh(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-i", key, "-p", str(lab.lab.config.ssh_port), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
             f"{status['ssh']['user']}@{ip}", command],
            capture_output=True, text=True, timeout=30)

    async with asyncssh.connect(ip, port=lab.lab.config.ssh_port, username=status["ssh"]["user"],
                                client_keys=[key], known_hosts=None) as conn:
        inject(fault="ssh_slow", vmid=120, seconds=1)
        answer = asyncio.ensure_future(conn.run("hostname"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(answer), 0.2)
        assert (await answer).stdout == "k3s-master\n"  # slow, not dead: the answer comes late
        inject(fault="ssh_slow", vmid=120, seconds=0)
    view = inject(fault="ssh_fail", vmid=120, command="mkdir", stderr="mkdir: No space left on device\n")
    assert view["ssh"] == {"120": {"drop": [], "fail": ["mkdir"], "slow": 0.0, "refused": False,
                                   "never_ready": None}}
    failed = ssh("sudo mkdir /x")
    assert (failed.returncode, failed.stderr) == (1, "mkdir: No space left on device\n")
    inject(fault="ssh_drop", vmid=120, command="hostname")
    assert ssh("hostname").returncode == 255  # the connection cut mid-command
    assert ssh("hostname").stdout == "k3s-master\n"  # only the next one
    inject(fault="ssh_refuse", vmid=120)
    refused = ssh("true")
    assert refused.returncode == 255 and "Connection refused" in refused.stderr
    assert requests.delete(base, headers=token, verify=ca, timeout=10).status_code == 200
    assert wait_for(lambda: ssh("hostname").stdout == "k3s-master\n")  # the port reopens
    assert requests.get(base, headers=token, verify=ca, timeout=10).json()["data"]["ssh"] == {}
    bad = requests.post(base, json={"fault": "ssh_slow", "vmid": 120}, headers=token, verify=ca, timeout=10)
    assert bad.status_code == 400 and "seconds" in bad.json()["message"]
