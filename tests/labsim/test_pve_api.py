"""PVE's shapes and wording, endpoint by endpoint, as proxmoxer (or plain HTTPS) sees them."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
import requests
from proxmoxer import ProxmoxAPI, ResourceException

from labsim.lab import LabHandle
from tests.labsim.pveclient import wait_for, wait_task

UPID = re.compile(r"^UPID:pve:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:(\w+):(\d+):([^:]+):$")


def _clone(api: ProxmoxAPI, newid: int, **kw) -> dict:
    return wait_task(api, api.nodes("pve").qemu(9000).clone.post(newid=newid, **kw))


def test_template_9000_exists_on_first_start(api: ProxmoxAPI) -> None:
    config = api.nodes("pve").qemu(9000).config.get()
    assert config["name"] == "ubuntu-2204-cloudinit" and config["template"] == 1
    assert config["ide2"].endswith("cloudinit,media=cdrom") and config["agent"] == "1"
    (entry,) = [vm for vm in api.nodes("pve").qemu.get() if vm["vmid"] == 9000]
    assert entry["template"] == 1 and entry["status"] == "stopped"


def test_node_totals_agree_with_node_list(api: ProxmoxAPI) -> None:
    (listed,) = api.nodes.get()
    status = api.nodes("pve").status.get()
    assert listed["node"] == "pve" and listed["status"] == "online"
    assert status["memory"]["total"] == listed["maxmem"] and status["memory"]["used"] == listed["mem"]
    assert status["cpuinfo"]["cpus"] == listed["maxcpu"] and status["rootfs"]["total"] == listed["maxdisk"]
    assert api.version.get()["release"].startswith("8.")
    (member,) = api.cluster.status.get()
    assert member["type"] == "node" and member["name"] == "pve" and member["online"] == 1


def test_running_vm_memory_counts_on_the_node(api: ProxmoxAPI) -> None:
    before = api.nodes("pve").status.get()["memory"]["used"]
    _clone(api, 120)
    api.nodes("pve").qemu(120).config.put(memory=4096)
    wait_task(api, api.nodes("pve").qemu(120).status.start.post())
    assert api.nodes("pve").status.get()["memory"]["used"] == before + (4096 << 20)


def test_nextid_is_a_string_and_checks_a_requested_id(api: ProxmoxAPI) -> None:
    assert api.cluster.nextid.get() == "100"
    _clone(api, 100)
    assert api.cluster.nextid.get() == "101"
    with pytest.raises(ResourceException) as taken:
        api.cluster.nextid.get(vmid=100)
    assert taken.value.status_code == 400 and taken.value.errors == {"vmid": "VM 100 already exists"}


def test_cluster_resources_show_tags_and_locks(lab: LabHandle, api: ProxmoxAPI) -> None:
    _clone(api, 120, name="k3s-master")
    api.nodes("pve").qemu(120).config.put(tags="k3s,server")
    lab.call(lab.lab.pve.hold_lock, 120, "backup")
    resources = api.cluster.resources.get()
    assert {r["type"] for r in resources} == {"qemu", "node", "storage"}
    (vm,) = [r for r in resources if r.get("vmid") == 120]
    assert vm["tags"] == "k3s;server" and vm["lock"] == "backup" and vm["id"] == "qemu/120"
    assert [r["type"] for r in api.cluster.resources.get(type="storage")] == ["storage", "storage"]


def test_storage_list_status_and_content(api: ProxmoxAPI) -> None:
    storages = {s["storage"]: s for s in api.nodes("pve").storage.get()}
    assert storages["local-lvm"]["type"] == "lvmthin" and storages["local"]["type"] == "dir"
    used_before = api.nodes("pve").storage("local-lvm").status.get()["used"]
    _clone(api, 120, full=1)
    wait_task(api, api.nodes("pve").qemu(120).resize.put(disk="scsi0", size="32G"))
    status = api.nodes("pve").storage("local-lvm").status.get()
    assert status["used"] == used_before + (32 << 30) and status["avail"] == status["total"] - status["used"]
    volumes = {v["volid"]: v for v in api.nodes("pve").storage("local-lvm").content.get(vmid=120)}
    assert volumes["local-lvm:vm-120-disk-0"]["size"] == 32 << 30
    assert [s["storage"] for s in api.nodes("pve").storage.get(content="images")] == ["local-lvm"]


def test_linked_clone_holds_a_clone_lock_while_it_runs(tmp_path) -> None:
    from labsim.lab import running_lab
    from tests.labfiles import sim_config, write_lab
    from tests.labsim.pveclient import token_client

    # time_scale 1: the clone takes its modelled seconds, until the test moves lab time on.
    with running_lab(sim_config(write_lab(tmp_path, time_scale=1.0))) as lab:
        api = token_client(lab.status())
        upid = api.nodes("pve").qemu(9000).clone.post(newid=120, name="k3s-master")
        assert api.nodes("pve").tasks(upid).status.get()["status"] == "running"
        assert api.nodes("pve").qemu(120).config.get()["lock"] == "clone"
        with pytest.raises(ResourceException) as locked:
            api.nodes("pve").qemu(120).config.put(cores=4)
        assert locked.value.status_code == 500 and locked.value.content == "VM 120 is locked (clone)"
        start = api.nodes("pve").qemu(120).status.start.post()  # qemu-server checks the lock in the worker
        lab.advance(60)
        assert wait_task(api, start)["exitstatus"] == "VM 120 is locked (clone)"
        assert wait_task(api, upid)["exitstatus"] == "OK"
        config = api.nodes("pve").qemu(120).config.get()
        assert "lock" not in config
        assert config["scsi0"].startswith("local-lvm:base-9000-disk-0/vm-120-disk-0,")  # linked to the template


def test_config_types_pending_and_delete(api: ProxmoxAPI) -> None:
    _clone(api, 120)
    vm = api.nodes("pve").qemu(120)
    vm.config.put(cores="4", onboot="true", description="a node")
    config = vm.config.get()
    assert config["cores"] == 4 and config["onboot"] == 1 and config["description"] == "a node"
    wait_task(api, vm.status.start.post())
    vm.config.put(cores=8)  # not hotpluggable: pending until the next start
    pending = {p["key"]: p for p in vm.pending.get()}
    assert pending["cores"] == {"key": "cores", "value": 4, "pending": 8}
    assert vm.config.get(current=1)["cores"] == 4 and vm.config.get()["cores"] == 8
    assert vm.status.current.get()["cpus"] == 4
    upid = vm.config.post(delete="description")
    assert UPID.match(upid).group(1) == "qmconfig" and wait_task(api, upid)["exitstatus"] == "OK"
    assert "description" not in vm.config.get()


def test_parameter_errors_are_400_per_parameter(api: ProxmoxAPI) -> None:
    vm = api.nodes("pve").qemu(9000)
    with pytest.raises(ResourceException) as bad:
        api.nodes("pve").qemu(9000).clone.post(newid=5, name="not a name", bogus=1)
    assert bad.value.status_code == 400
    assert bad.value.errors == {
        "newid": "invalid format - value does not look like a valid VM ID\n",
        "name": "invalid format - value does not look like a valid DNS name\n",
        "bogus": "property is not defined in schema and the schema does not allow additional properties",
    }
    with pytest.raises(ResourceException) as missing:
        api.nodes("pve").qemu(9000).clone.post()
    assert missing.value.errors == {"newid": "property is missing and it is not optional"}
    with pytest.raises(ResourceException) as raw_key:
        vm.config.put(sshkeys="ssh-ed25519 AAAAC3Nza operator@lab")  # PVE wants it URL-encoded
    assert raw_key.value.status_code == 400
    assert raw_key.value.errors["sshkeys"].startswith("invalid format - invalid urlencoded string: ssh-ed25519 ")
    vm.config.put(sshkeys=quote("ssh-ed25519 AAAAC3Nza operator@lab", safe=""))


def test_resize_grows_and_refuses_to_shrink(api: ProxmoxAPI) -> None:
    _clone(api, 120)
    vm = api.nodes("pve").qemu(120)
    wait_task(api, vm.resize.put(disk="scsi0", size="+10G"))
    assert "size=12492M" in vm.config.get()["scsi0"]  # 2252M + 10G, written as PVE writes sizes
    shrink = wait_task(api, vm.resize.put(disk="scsi0", size="8G"))  # PVE 8+ checks inside the resize task
    assert shrink["exitstatus"] == "shrinking disks is not supported"
    assert "size=12492M" in vm.config.get()["scsi0"]


def test_power_and_delete_rules(api: ProxmoxAPI) -> None:
    _clone(api, 120)
    vm = api.nodes("pve").qemu(120)
    template = wait_task(api, api.nodes("pve").qemu(9000).status.start.post())
    assert template["exitstatus"] == "you can't start a vm if it's a template"
    wait_task(api, vm.status.start.post())
    again = wait_task(api, vm.status.start.post())
    assert again["exitstatus"] == "VM 120 already running"
    with pytest.raises(ResourceException) as running:
        vm.delete()
    assert running.value.status_code == 500 and running.value.content == "VM 120 is running - destroy failed"
    assert wait_task(api, vm.status.reboot.post())["exitstatus"] == "OK"
    assert wait_task(api, vm.status.stop.post())["exitstatus"] == "OK"
    assert vm.status.current.get()["status"] == "stopped"
    upid = vm.delete()
    assert UPID.match(upid).groups() == ("qmdestroy", "120", "root@pam!labkit")
    wait_task(api, upid)
    with pytest.raises(ResourceException) as gone:
        vm.status.current.get()
    assert gone.value.content == "Configuration file 'nodes/pve/qemu-server/120.conf' does not exist"


def test_snapshots_create_list_rollback_delete(api: ProxmoxAPI) -> None:
    _clone(api, 120)
    vm = api.nodes("pve").qemu(120)
    assert wait_task(api, vm.snapshot.post(snapname="before", description="clean"))["exitstatus"] == "OK"
    vm.config.put(cores=6)
    names = {s["name"]: s for s in vm.snapshot.get()}
    assert names["before"]["description"] == "clean" and names["current"]["parent"] == "before"
    assert wait_task(api, vm.snapshot("before").rollback.post())["exitstatus"] == "OK"
    assert vm.config.get()["cores"] == 2
    assert wait_task(api, vm.snapshot("before").delete())["exitstatus"] == "OK"
    assert [s["name"] for s in vm.snapshot.get()] == ["current"]
    assert wait_task(api, vm.snapshot("before").rollback.post())["exitstatus"] == "snapshot 'before' does not exist"
    with pytest.raises(ResourceException) as reserved:
        vm.snapshot.post(snapname="current")
    assert reserved.value.content == "unable to use snapshot name 'current' (reserved name)"


def test_agent_answers_only_when_enabled_and_booted(api: ProxmoxAPI) -> None:
    _clone(api, 120)
    vm = api.nodes("pve").qemu(120)
    with pytest.raises(ResourceException) as stopped:
        vm.agent.ping.post()
    assert stopped.value.content == "VM 120 is not running"
    vm.config.put(agent=0)
    wait_task(api, vm.status.start.post())
    with pytest.raises(ResourceException) as disabled:
        vm.agent("get-osinfo").get()
    assert disabled.value.content == "No QEMU guest agent configured"
    wait_task(api, vm.status.stop.post())
    vm.config.put(agent=1)
    wait_task(api, vm.status.start.post())
    assert wait_for(lambda: vm.agent.ping.post()) == {"result": {}}
    assert vm.agent("get-osinfo").get()["result"]["version-id"] == "22.04"


def test_task_log_and_listing(api: ProxmoxAPI) -> None:
    upid = api.nodes("pve").qemu(9000).clone.post(newid=120, full=1)
    status = wait_task(api, upid)
    assert set(status) >= {"upid", "node", "pid", "pstart", "starttime", "type", "id", "user", "status", "exitstatus"}
    log = api.nodes("pve").tasks(upid).log.get()
    assert log[0] == {"n": 1, "t": "create full clone of drive scsi0 (local-lvm:base-9000-disk-0)"}
    assert log[-1]["t"] == "TASK OK"
    assert api.nodes("pve").tasks.get(vmid=9000)[0]["upid"] == upid


def test_unknown_paths_are_501(lab: LabHandle) -> None:
    status = lab.status()
    headers = {"Authorization": f"PVEAPIToken={status['pve']['token_id']}={status['pve']['token_secret']}"}
    answer = requests.get(status["pve"]["url"] + "/api2/json/nodes/pve/nothing", headers=headers,
                          verify=status["pve"]["ca_file"], timeout=10)
    assert answer.status_code == 501
    assert answer.json() == {"data": None, "message": "Method 'GET /nodes/pve/nothing' not implemented\n"}


def test_cloudinit_dump_network(api: ProxmoxAPI) -> None:
    _clone(api, 120, name="k3s-master")
    api.nodes("pve").qemu(120).config.put(ipconfig0="ip=127.0.2.20/24,gw=127.0.2.1", nameserver="127.0.2.1",
                                          searchdomain="home.example.com")
    network = api.nodes("pve").qemu(120).cloudinit.dump.get(type="network")
    assert "address: '127.0.2.20'" in network and "netmask: '255.255.255.0'" in network
    assert "gateway: '127.0.2.1'" in network and "- 'home.example.com'" in network


def test_create_template_and_linked_clones(api: ProxmoxAPI) -> None:
    node = api.nodes("pve")
    created = wait_task(api, node.qemu.post(vmid=8000, name="base", cores=1, memory="1024", scsi0="local-lvm:4",
                                            ide2="local-lvm:cloudinit", scsihw="virtio-scsi-pci", boot="order=scsi0"))
    assert created["type"] == "qmcreate" and created["exitstatus"] == "OK"
    config = node.qemu(8000).config.get()
    assert config["scsi0"] == "local-lvm:vm-8000-disk-0,size=4G"
    assert config["ide2"] == "local-lvm:vm-8000-cloudinit,media=cdrom"
    assert wait_task(api, node.qemu(8000).template.post())["exitstatus"] == "OK"
    assert node.qemu(8000).config.get()["scsi0"] == "local-lvm:base-8000-disk-0,size=4G"
    with pytest.raises(ResourceException) as twice:
        node.qemu(8000).template.post()
    assert twice.value.content == "you can't convert a template to a template"
    wait_task(api, node.qemu(8000).clone.post(newid=130, name="linked"))
    node.qemu(130).config.put(scsi1="local-lvm:8")  # a second disk, allocated as PVE names volumes
    assert node.qemu(130).config.get()["scsi1"] == "local-lvm:vm-130-disk-1,size=8G"
    assert node.qemu(130).config.get()["scsi0"].startswith("local-lvm:base-8000-disk-0/vm-130-disk-0,")
    in_use = wait_task(api, node.qemu(8000).delete())
    assert in_use["exitstatus"] == "base volume 'local-lvm:base-8000-disk-0' is still in use by linked cloned"
    wait_task(api, node.qemu(130).delete())
    assert wait_task(api, node.qemu(8000).delete())["exitstatus"] == "OK"
    with pytest.raises(ResourceException) as exists:
        node.qemu.post(vmid=9000)
    assert exists.value.content == "unable to create VM 9000 - VM 9000 already exists on node 'pve'"


def test_refusals_in_pves_words(api: ProxmoxAPI) -> None:
    _clone(api, 120)
    vm = api.nodes("pve").qemu(120)
    assert _error(lambda: vm.config.put(cores=2, digest="0" * 40)) == "checksum mismatch (file change by other user?)"
    assert _error(lambda: vm.config.put()) == "no options specified"
    assert wait_task(api, vm.resize.put(disk="scsi5", size="1G"))["exitstatus"] == "disk 'scsi5' does not exist"
    wait_task(api, vm.snapshot.post(snapname="before"))
    assert wait_task(api, vm.snapshot.post(snapname="before"))["exitstatus"] == "snapshot name 'before' already used"
    wait_task(api, vm.status.start.post())
    assert _error(lambda: vm.template.post()) == "you can't convert a VM to template if VM is running"
    assert _error(lambda: api.nodes("pve").qemu(9000).clone.post(newid=121, storage="local-lvm")) == \
        "parameter 'storage' not allowed for linked clones"
    assert _error(lambda: api.nodes("pve").qemu(9000).clone.post(newid=120)) == \
        "unable to create VM 120: config file already exists"
    with pytest.raises(ResourceException) as bad:
        vm.config.put(cores=0)
    assert bad.value.errors == {"cores": "value must have a minimum value of 1"}


def _error(call) -> str:
    with pytest.raises(ResourceException) as raised:
        call()
    assert raised.value.status_code == 500
    return raised.value.content
