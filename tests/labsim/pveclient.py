"""proxmoxer clients for a lab's status, and polling as a PVE client polls."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from proxmoxer import ProxmoxAPI

TASK_TIMEOUT = 30


def token_client(status: dict[str, Any], **kw: Any) -> ProxmoxAPI:
    pve = status["pve"]
    host, port = pve["url"].removeprefix("https://").rsplit(":", 1)
    user, token = pve["token_id"].split("!")
    return ProxmoxAPI(host, port=int(port), user=user, token_name=token, token_value=pve["token_secret"],
                      verify_ssl=pve["ca_file"], **kw)


def password_client(status: dict[str, Any], password: str) -> ProxmoxAPI:
    pve = status["pve"]
    host, port = pve["url"].removeprefix("https://").rsplit(":", 1)
    return ProxmoxAPI(host, port=int(port), user="root@pam", password=password, verify_ssl=pve["ca_file"])


def wait_task(api: ProxmoxAPI, upid: str, node: str = "pve") -> dict[str, Any]:
    """Poll a task until it stops, as a PVE client does; return its final status."""
    deadline = time.monotonic() + TASK_TIMEOUT
    while time.monotonic() < deadline:
        status = api.nodes(node).tasks(upid).status.get()
        if status["status"] == "stopped":
            return status
        time.sleep(0.02)
    raise AssertionError(f"task {upid} still running after {TASK_TIMEOUT} s")


def wait_for(probe: Any, timeout: float = TASK_TIMEOUT) -> Any:
    """Retry ``probe`` until it returns a truthy value without raising."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = probe()
            if result:
                return result
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def agent_ipv4(api: ProxmoxAPI, vmid: int, node: str = "pve") -> str:
    """The VM's eth0 IPv4 address, once its guest agent answers."""
    result = api.nodes(node).qemu(vmid).agent("network-get-interfaces").get()["result"]
    eth0 = next(i for i in result if i["name"] == "eth0")
    return next(a["ip-address"] for a in eth0["ip-addresses"] if a["ip-address-type"] == "ipv4")


def provision(api: ProxmoxAPI, vmid: int, name: str, ip: str, public_key: str, *, gateway: str,
              node: str = "pve") -> dict[str, Any]:
    """The provisioning half of the flow the notebooks run: clone the template, configure
    cloud-init and hardware, grow the disk, start, wait for the task and the agent's IP."""
    qemu = api.nodes(node).qemu
    clone = wait_task(api, qemu(9000).clone.post(newid=vmid, name=name, full=1), node)
    assert clone["exitstatus"] == "OK", clone
    qemu(vmid).config.put(
        cores=2, memory=4096, ciuser="ubuntu", sshkeys=quote(public_key, safe=""),
        ipconfig0=f"ip={ip}/24,gw={gateway}", nameserver=gateway, agent="enabled=1", tags="k3s;sim",
    )
    resize = qemu(vmid).resize.put(disk="scsi0", size="32G")
    assert wait_task(api, resize, node)["exitstatus"] == "OK"
    start = wait_task(api, qemu(vmid).status.start.post(), node)
    assert start["exitstatus"] == "OK", start
    return {"clone": clone, "start": start, "ip": wait_for(lambda: agent_ipv4(api, vmid, node))}


def teardown(api: ProxmoxAPI, vmid: int, node: str = "pve") -> None:
    """Shut the VM down (forced after the timeout) and destroy it."""
    qemu = api.nodes(node).qemu
    shutdown = wait_task(api, qemu(vmid).status.shutdown.post(timeout=60, forceStop=1), node)
    assert shutdown["exitstatus"] == "OK", shutdown
    assert qemu(vmid).status.current.get()["status"] == "stopped"
    assert wait_task(api, qemu(vmid).delete(), node)["exitstatus"] == "OK"
