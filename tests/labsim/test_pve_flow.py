"""The provisioning flow over the wire with proxmoxer, TLS verified against the lab's CA:
token and password (ticket + CSRF) auth, clone → configure → resize → start → agent IP →
shutdown → delete, and SSH into the booted VM with the operator key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh
import pytest
import requests
import yaml
from proxmoxer import AuthenticationError, ProxmoxAPI, ResourceException

from labsim.lab import LabHandle
from tests.labsim.pveclient import agent_ipv4, password_client, provision, teardown, wait_for, wait_task


def _vm_address(lab: LabHandle, host: int) -> tuple[str, str]:
    net = lab.lab.config.subnet
    return str(net.network_address + host), str(net.network_address + 1)


def _public_key(lab: LabHandle) -> str:
    return Path(lab.status()["ssh"]["private_key"] + ".pub").read_text().strip()


def test_flow_with_api_token(lab: LabHandle, api: ProxmoxAPI) -> None:
    ip, gateway = _vm_address(lab, 20)
    result = provision(api, 120, "k3s-master", ip, _public_key(lab), gateway=gateway)

    assert result["ip"] == ip
    assert result["clone"]["upid"].startswith("UPID:pve:")
    assert result["clone"]["type"] == "qmclone" and result["clone"]["user"] == "root@pam!labkit"
    config = api.nodes("pve").qemu(120).config.get()
    assert config["cores"] == 2 and isinstance(config["cores"], int)
    assert config["memory"] == "4096"  # a property string in PVE's schema, not an int
    assert config["ciuser"] == "ubuntu" and config["sshkeys"].startswith("ssh-ed25519%20")
    assert config["ipconfig0"] == f"ip={ip}/24,gw={gateway}"
    assert "size=32G" in config["scsi0"] and config["tags"] == "k3s;sim"
    assert "lock" not in config and "template" not in config

    (resource,) = [r for r in api.cluster.resources.get(type="vm") if r["vmid"] == 120]
    assert resource["status"] == "running" and resource["tags"] == "k3s;sim"
    assert resource["maxdisk"] == 32 << 30 and resource["maxmem"] == 4096 << 20
    user_data = api.nodes("pve").qemu(120).cloudinit.dump.get(type="user")
    assert "hostname: k3s-master" in user_data and _public_key(lab) in user_data
    assert {"vmid": 120, "name": "k3s-master", "status": "running", "ip": ip,
            "ssh_port": lab.lab.config.ssh_port} in lab.status()["vms"]

    teardown(api, 120)
    assert 120 not in [vm["vmid"] for vm in api.nodes("pve").qemu.get()]


def test_flow_with_password_ticket_and_csrf(lab: LabHandle) -> None:
    secrets = yaml.safe_load((lab.lab.state_dir / "secrets.yaml").read_text())
    api = password_client(lab.status(), secrets["pve_root_password"])
    ip, gateway = _vm_address(lab, 21)
    assert provision(api, 121, "k3s-worker-01", ip, _public_key(lab), gateway=gateway)["ip"] == ip
    task = api.nodes("pve").tasks.get(vmid=121)[0]
    assert task["user"] == "root@pam"  # a ticket acts as the user, a token as user!token
    teardown(api, 121)


def test_wrong_credentials_are_refused(lab: LabHandle) -> None:
    status = lab.status()
    with pytest.raises(AuthenticationError):
        password_client(status, "not-the-password")
    url, ca = status["pve"]["url"] + "/api2/json", status["pve"]["ca_file"]
    bad_token = {"Authorization": f"PVEAPIToken={status['pve']['token_id']}=00000000-0000-0000-0000-000000000000"}
    answer = requests.get(f"{url}/version", headers=bad_token, verify=ca, timeout=10)
    assert answer.status_code == 401 and answer.json() == {"data": None, "message": "invalid token value!\n"}
    assert requests.get(f"{url}/version", verify=ca, timeout=10).status_code == 401


def test_ticket_writes_need_the_csrf_token(lab: LabHandle) -> None:
    status = lab.status()
    url, ca = status["pve"]["url"] + "/api2/json", status["pve"]["ca_file"]
    secrets = yaml.safe_load((lab.lab.state_dir / "secrets.yaml").read_text())
    login = requests.post(f"{url}/access/ticket", data={"username": "root@pam", "password": secrets["pve_root_password"]},
                          verify=ca, timeout=10).json()["data"]
    cookies = {"PVEAuthCookie": login["ticket"]}
    assert requests.get(f"{url}/nodes", cookies=cookies, verify=ca, timeout=10).status_code == 200
    unprotected = requests.post(f"{url}/nodes/pve/qemu/9000/clone", data={"newid": 130}, cookies=cookies,
                                verify=ca, timeout=10)
    assert unprotected.status_code == 401 and unprotected.reason == "Permission denied - invalid csrf token"
    protected = requests.post(f"{url}/nodes/pve/qemu/9000/clone", data={"newid": 130}, cookies=cookies,
                              headers={"CSRFPreventionToken": login["CSRFPreventionToken"]}, verify=ca, timeout=10)
    assert protected.status_code == 200 and protected.json()["data"].startswith("UPID:pve:")


def test_non_ascii_tokens_tickets_and_passwords_are_refused_with_401(lab: LabHandle) -> None:
    status = lab.status()
    url, ca = status["pve"]["url"] + "/api2/json", status["pve"]["ca_file"]
    secrets = yaml.safe_load((lab.lab.state_dir / "secrets.yaml").read_text())
    login = requests.post(f"{url}/access/ticket", data={"username": "root@pam", "password": secrets["pve_root_password"]},
                          verify=ca, timeout=10).json()["data"]
    tries = [{"Authorization": f"PVEAPIToken={status['pve']['token_id']}=s\u00e9cret"},
             {"Authorization": "PVEAPIToken=r\u00f6ot@pam!labkit=secret"},
             {"Cookie": "PVEAuthCookie=PVE:root@pam:00000000::s\u00efg"},
             {"Cookie": f"PVEAuthCookie={login['ticket']}", "CSRFPreventionToken": "00000000:\u00e9t\u00e9"}]
    for headers in tries:
        answer = requests.post(f"{url}/nodes/pve/qemu/9000/clone", data={"newid": 131}, verify=ca, timeout=10,
                               headers={k: v.encode() for k, v in headers.items()})
        assert answer.status_code == 401, (headers, answer.status_code, answer.text)
    wrong = requests.post(f"{url}/access/ticket", data={"username": "root@pam", "password": "p\u00e4sswort"},
                          verify=ca, timeout=10)
    assert wrong.status_code == 401


def test_tls_is_verified_against_the_lab_ca(lab: LabHandle, tmp_path: Path) -> None:
    url = lab.status()["pve"]["url"] + "/api2/json/version"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, timeout=10)  # the system trust store does not know the lab's CA
    ca = Path(lab.status()["pve"]["ca_file"])
    assert requests.get(url, verify=str(ca), timeout=10).status_code == 401  # TLS fine, no credentials


async def test_ssh_into_the_booted_vm(lab: LabHandle, api: ProxmoxAPI) -> None:
    ip, gateway = _vm_address(lab, 20)
    provision(api, 120, "k3s-master", ip, _public_key(lab), gateway=gateway)
    status = lab.status()
    (vm,) = [vm for vm in status["vms"] if vm["vmid"] == 120]
    key = status["ssh"]["private_key"]
    async with asyncssh.connect(vm["ip"], port=vm["ssh_port"], username=status["ssh"]["user"],
                                client_keys=[key], known_hosts=None) as conn:
        assert (await conn.run("hostname", check=True)).stdout.strip() == "k3s-master"
        assert (await conn.run("nproc", check=True)).stdout.strip() == "2"
    done = subprocess.run(
        ["ssh", "-i", key, "-p", str(vm["ssh_port"]), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", f"{status['ssh']['user']}@{vm['ip']}",
         "cat /etc/os-release"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert 'VERSION_ID="22.04"' in done.stdout

    api.nodes("pve").qemu(120).config.put(cores=4)  # pending while it runs: the guest still has 2 CPUs
    wait_task(api, api.nodes("pve").qemu(120).status.reboot.post())
    wait_for(lambda: agent_ipv4(api, 120))
    async with asyncssh.connect(vm["ip"], port=vm["ssh_port"], username=status["ssh"]["user"],
                                client_keys=[key], known_hosts=None) as conn:
        assert (await conn.run("nproc", check=True)).stdout.strip() == "4"
    teardown(api, 120)
    with pytest.raises(OSError):  # powered off: nothing listens on the VM's address any more
        await asyncssh.connect(vm["ip"], port=vm["ssh_port"], username="ubuntu", client_keys=[key],
                               known_hosts=None, connect_timeout=5)


def test_tickets_expire_after_two_hours_of_lab_time(lab: LabHandle) -> None:
    secrets = yaml.safe_load((lab.lab.state_dir / "secrets.yaml").read_text())
    api = password_client(lab.status(), secrets["pve_root_password"])
    assert api.nodes.get()[0]["node"] == "pve"
    lab.advance(2 * 3600 + 60)
    with pytest.raises(ResourceException) as expired:
        api.nodes.get()
    assert expired.value.status_code == 401 and expired.value.content == "permission denied - invalid PVE ticket"
