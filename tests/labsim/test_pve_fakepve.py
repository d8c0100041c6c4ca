"""A second opinion: the proxmoxer flow against fakepve (PyPI; AGPL, so test-only and imported by
nothing but its pytest plugin) and against labsim, side by side.

Where both model a call they must agree. Where they answer differently, the test pins the
difference, and this table says which one matches Proxmox VE:

| call                         | labsim                              | fakepve 0.5                  | PVE matches |
|------------------------------|-------------------------------------|------------------------------|-------------|
| GET config ``cores``         | ``2`` (int)                         | ``'2'`` (string)             | labsim: the schema types it integer |
| resize to 32G                | task OK, ``size=32G``               | task OK, size unchanged      | labsim: the volume grows |
| resize smaller               | task error ``shrinking disks...``   | task OK                      | labsim (qemu-server refuses to shrink) |
| unknown path                 | 501 ``Method '...' not implemented``| 404 ``Not Found``            | labsim |
| cloudinit/dump user          | cloud-config with hostname and keys | ``'fake'``                   | labsim |
| agent after boot             | eth0 with the ipconfig0 address     | ``QEMU guest agent is not running`` until a test scripts it | labsim (agent=1 and qemu-guest-agent in the image) |
| clone task log               | ``create full clone of drive scsi0 (...)`` | ``creating a clone of VM 9000 ...`` | labsim (qemu-server's wording) |
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from labsim.lab import LabHandle
from labsim.pve.vms import template_config
from tests.labsim.pveclient import password_client, wait_task

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ4tH0GZ5mHRzHgnDVbB8zPpSsY2kLTXu0L8xU0cXbd0 operator@lab"


def _error(call: Any) -> tuple[int, str, Any]:
    with pytest.raises(ResourceException) as raised:
        call()
    return raised.value.status_code, raised.value.content, raised.value.errors


def _agent_address(vm: Any) -> str:
    """eth0's address from the guest agent, or the error it keeps giving for a second."""
    deadline = time.monotonic() + 1
    while True:
        try:
            interfaces = vm.agent("network-get-interfaces").get()["result"]
            eth0 = next(i for i in interfaces if i["name"] == "eth0")
            return eth0["ip-addresses"][0]["ip-address"]
        except ResourceException as error:
            if time.monotonic() > deadline:
                return error.content
        time.sleep(0.02)


def flow(api: ProxmoxAPI, node: str, net: str) -> dict[str, Any]:
    """The provisioning flow, recording what each step answers."""
    n, seen = api.nodes(node), {}
    clone = wait_task(api, n.qemu(9000).clone.post(newid=120, name="k3s-master", full=1), node)
    seen["clone"] = clone
    seen["clone_log"] = n.tasks(clone["upid"]).log.get()
    seen["raw_sshkeys"] = _error(lambda: n.qemu(120).config.put(sshkeys=KEY))
    seen["bad_params"] = _error(lambda: n.qemu(9000).clone.post(newid=5, name="not a name", bogus=1))
    n.qemu(120).config.put(cores=2, memory=4096, ciuser="ubuntu", sshkeys=quote(KEY, safe=""),
                           ipconfig0=f"ip={net}.20/24,gw={net}.1", nameserver=f"{net}.1", agent="enabled=1",
                           tags="k3s;sim")
    seen["config"] = n.qemu(120).config.get()
    seen["resize"] = wait_task(api, n.qemu(120).resize.put(disk="scsi0", size="32G"), node)
    seen["scsi0"] = n.qemu(120).config.get()["scsi0"]
    seen["shrink"] = wait_task(api, n.qemu(120).resize.put(disk="scsi0", size="8G"), node)
    seen["start"] = wait_task(api, n.qemu(120).status.start.post(), node)
    seen["status"] = n.qemu(120).status.current.get()["status"]
    seen["agent"] = _agent_address(n.qemu(120))
    seen["delete_running"] = _error(lambda: n.qemu(120).delete())
    seen["nextid"] = api.cluster.nextid.get()
    (seen["resource"],) = [r for r in api.cluster.resources.get(type="vm") if r["vmid"] == 120]
    seen["shutdown"] = wait_task(api, n.qemu(120).status.shutdown.post(timeout=60, forceStop=1), node)
    seen["stopped"] = n.qemu(120).status.current.get()["status"]
    seen["destroy"] = wait_task(api, n.qemu(120).delete(), node)
    seen["gone"] = 120 not in [vm["vmid"] for vm in n.qemu.get()]
    return seen


@pytest.fixture
def fake_api(fakepve: Any, fakepve_cafile: str) -> ProxmoxAPI:
    config = template_config("ubuntu-2204-cloudinit", "local-lvm", "vmbr0", 9000)
    for key in ("template", "name"):
        config.pop(key)
    fakepve.add_vm(9000, "ubuntu-2204-cloudinit", node="pve1", config=config, template=True)
    host, port = fakepve.url.removeprefix("https://").rsplit(":", 1)
    return ProxmoxAPI(host, port=int(port), user="root@pam", password="secret", verify_ssl=fakepve_cafile)


def test_same_flow_against_fakepve_and_labsim(lab: LabHandle, fake_api: ProxmoxAPI) -> None:
    secrets = (lab.lab.state_dir / "secrets.yaml").read_text()
    password = next(line.split(": ", 1)[1] for line in secrets.splitlines() if line.startswith("pve_root_password"))
    net = str(lab.lab.config.subnet.network_address).rsplit(".", 1)[0]  # the test's own subnet
    ours = flow(password_client(lab.status(), password), "pve", net)
    theirs = flow(fake_api, "pve1", net)

    # Where both model the call, they agree.
    for step in ("clone", "resize", "start", "shutdown", "destroy"):
        assert ours[step]["status"] == theirs[step]["status"] == "stopped"
        assert ours[step]["exitstatus"] == theirs[step]["exitstatus"] == "OK", step
        assert set(ours[step]) == set(theirs[step]), step
        assert ours[step]["upid"].split(":")[5:] == theirs[step]["upid"].split(":")[5:], step  # type:id:user:
    assert ours["clone_log"][-1]["t"] == theirs["clone_log"][-1]["t"] == "TASK OK"
    assert ours["raw_sshkeys"] == theirs["raw_sshkeys"]  # 400, URL-encoding wanted, same wording
    assert ours["bad_params"] == theirs["bad_params"]
    assert ours["delete_running"] == theirs["delete_running"] == (500, "VM 120 is running - destroy failed", None)
    assert ours["nextid"] == theirs["nextid"] == "100"  # a string on PVE
    assert ours["status"] == theirs["status"] == "running"
    assert ours["stopped"] == theirs["stopped"] == "stopped" and ours["gone"] and theirs["gone"]
    assert ours["resource"]["tags"] == theirs["resource"]["tags"] == "k3s;sim"
    for key in ("ciuser", "sshkeys", "ipconfig0", "nameserver", "agent", "memory"):
        assert ours["config"][key] == theirs["config"][key], key

    # Where they differ (see the table above): labsim is the one that matches PVE.
    assert ours["config"]["cores"] == 2 and theirs["config"]["cores"] == "2"
    assert ours["agent"] == f"{net}.20" and theirs["agent"] == "QEMU guest agent is not running"
    assert "size=32G" in ours["scsi0"] and "size=2252M" in theirs["scsi0"]
    assert ours["shrink"]["exitstatus"] == "shrinking disks is not supported" and theirs["shrink"]["exitstatus"] == "OK"
    assert ours["clone_log"][0]["t"].startswith("create full clone of drive scsi0")
    assert theirs["clone_log"][0]["t"].startswith("creating a clone of VM 9000")


def test_unknown_paths_template_start_and_cloudinit(api: ProxmoxAPI, fake_api: ProxmoxAPI) -> None:
    assert _error(lambda: api.nodes("pve").nothing.get())[0] == 501
    assert _error(lambda: fake_api.nodes("pve1").nothing.get())[0] == 404
    ours = wait_task(api, api.nodes("pve").qemu(9000).status.start.post())
    theirs = wait_task(fake_api, fake_api.nodes("pve1").qemu(9000).status.start.post(), "pve1")
    assert ours["exitstatus"] == theirs["exitstatus"] == "you can't start a vm if it's a template"  # both agree
    assert api.nodes("pve").qemu(9000).cloudinit.dump.get(type="user").startswith("#cloud-config\n")
    assert fake_api.nodes("pve1").qemu(9000).cloudinit.dump.get(type="user") == "fake"


# Messages the twin answers (each asserted over the wire in test_pve_api or test_pve_faults), checked
# against the error catalogue fakepve extracted from PVE's own sources (qemu-server, pve-manager...).
WORDING = [
    ("POST /nodes/{node}/qemu/{vmid}/clone", "unable to create VM 120: config file already exists"),
    ("POST /nodes/{node}/qemu/{vmid}/clone", "VM 9000 is locked (backup)"),
    ("POST /nodes/{node}/qemu/{vmid}/clone", "parameter 'storage' not allowed for linked clones"),
    ("POST /nodes/{node}/qemu/{vmid}/status/start", "VM 120 already running"),
    ("POST /nodes/{node}/qemu/{vmid}/status/start", "you can't start a vm if it's a template"),
    ("POST /nodes/{node}/qemu/{vmid}/status/start", "VM 120 is locked (clone)"),
    ("POST /nodes/{node}/qemu/{vmid}/status/shutdown", "VM quit/powerdown failed - got timeout"),
    ("POST /nodes/{node}/qemu/{vmid}/status/reboot", "VM 120 not running"),
    ("DELETE /nodes/{node}/qemu/{vmid}", "VM 120 is running - destroy failed"),
    ("DELETE /nodes/{node}/qemu/{vmid}", "base volume 'local-lvm:base-8000-disk-0' is still in use by linked cloned"),
    ("PUT /nodes/{node}/qemu/{vmid}/resize", "shrinking disks is not supported"),
    ("PUT /nodes/{node}/qemu/{vmid}/resize", "disk 'scsi5' does not exist"),
    ("PUT /nodes/{node}/qemu/{vmid}/config", "VM 120 is locked (clone)"),
    ("PUT /nodes/{node}/qemu/{vmid}/config", "checksum mismatch (file change by other user?)"),
    ("PUT /nodes/{node}/qemu/{vmid}/config", "no options specified"),
    ("POST /nodes/{node}/qemu/{vmid}/template", "you can't convert a template to a template"),
    ("POST /nodes/{node}/qemu/{vmid}/template", "you can't convert a VM to template if VM is running"),
    ("POST /nodes/{node}/qemu/{vmid}/snapshot", "unable to use snapshot name 'current' (reserved name)"),
    ("POST /nodes/{node}/qemu/{vmid}/snapshot", "snapshot name 'before' already used"),
    ("POST /nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback", "snapshot 'before' does not exist"),
    ("GET /nodes/{node}/qemu/{vmid}/config", "Configuration file 'nodes/pve/qemu-server/120.conf' does not exist"),
]


@pytest.mark.parametrize(("method", "message"), WORDING, ids=[m for _, m in WORDING])
def test_error_wording_is_pves(method: str, message: str) -> None:
    from fakepve import errors

    templates = [e["message"] for e in errors.catalogue().get(method, [])]
    patterns = [re.escape(t).replace(r"\{", "{").replace(r"\}", "}") for t in templates]
    patterns = [re.sub(r"\{[a-z_]+\}", ".+", p) for p in patterns]
    assert any(re.fullmatch(p, message) for p in patterns), f"{method}: {message!r} not among {templates}"
