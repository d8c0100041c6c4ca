"""The guest's disk follows PVE's volume operations, over the wire (proxmoxer for PVE, asyncssh
into the VMs): a rollback brings files back, a snapshot with RAM resumes the running guest as it
was, a clone of a VM boots with its source's files under its own cloud-init identity, and
deleting a snapshot or destroying the VM frees the disk."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from labsim.lab import LabHandle, running_lab
from tests.labfiles import sim_config, write_lab
from tests.labsim.pveclient import agent_ipv4, provision, token_client, wait_for, wait_task

UNIT = "/etc/systemd/system/backup-agent.service"


def _address(lab: LabHandle, host: int) -> str:
    return str(lab.lab.config.subnet.network_address + host)


def _gateway(lab: LabHandle) -> str:
    return _address(lab, 1)


def _public_key(lab: LabHandle) -> str:
    return Path(lab.status()["ssh"]["private_key"] + ".pub").read_text().strip()


def _disk(lab: LabHandle, vmid: int) -> Path:
    return lab.lab.state_dir / "nodes" / str(vmid)


async def _ssh(lab: LabHandle, ip: str, command: str, check: bool = True) -> asyncssh.SSHCompletedProcess:
    status = lab.status()
    async with asyncssh.connect(ip, port=lab.lab.config.ssh_port, username=status["ssh"]["user"],
                                client_keys=[status["ssh"]["private_key"]], known_hosts=None) as conn:
        return await conn.run(command, check=check)


async def _read(lab: LabHandle, ip: str, path: str) -> str | None:
    """A file's text over SSH (as root), or None when it does not exist."""
    result = await _ssh(lab, ip, f"sudo cat {path}", check=False)
    return result.stdout if result.exit_status == 0 else None


async def _write(lab: LabHandle, ip: str, path: str, text: str) -> None:
    """Write a file over SSH: as the cloud-init user in its home, with sudo elsewhere."""
    sudo = "" if path.startswith("/home/ubuntu/") else "sudo "
    status = lab.status()
    async with asyncssh.connect(ip, port=lab.lab.config.ssh_port, username=status["ssh"]["user"],
                                client_keys=[status["ssh"]["private_key"]], known_hosts=None) as conn:
        await conn.run(f"{sudo}tee {path} >/dev/null", input=text, check=True)


def _start(api: ProxmoxAPI, vmid: int) -> None:
    assert wait_task(api, api.nodes("pve").qemu(vmid).status.start.post())["exitstatus"] == "OK"
    wait_for(lambda: agent_ipv4(api, vmid))


def _log(api: ProxmoxAPI, upid: str) -> list[str]:
    return [line["t"] for line in api.nodes("pve").tasks(upid).log.get(limit=500)]


async def test_rollback_brings_the_files_back(lab: LabHandle, api: ProxmoxAPI) -> None:
    ip = _address(lab, 20)
    provision(api, 120, "k3s-master", ip, _public_key(lab), gateway=_gateway(lab))
    vm = api.nodes("pve").qemu(120)
    await _write(lab, ip, "/home/ubuntu/notes.txt", "version 1\n")
    await _write(lab, ip, "/etc/app.conf", "mode=safe\n")

    upid = vm.snapshot.post(snapname="before", description="clean")
    assert wait_task(api, upid)["exitstatus"] == "OK"
    assert "snapshotting 'drive-scsi0' (local-lvm:vm-120-disk-0)" in _log(api, upid)
    assert vm.status.current.get()["status"] == "running"  # a snapshot without RAM leaves the VM running
    assert (await _ssh(lab, ip, "cat notes.txt")).stdout == "version 1\n"

    await _write(lab, ip, "/home/ubuntu/notes.txt", "version 2\n")
    await _ssh(lab, ip, "sudo rm /etc/app.conf && touch later.txt")
    assert await _read(lab, ip, "/etc/app.conf") is None

    rollback = wait_task(api, vm.snapshot("before").rollback.post())
    assert rollback["exitstatus"] == "OK"
    assert vm.status.current.get()["status"] == "stopped"  # PVE stops a running VM to roll its disk back
    with pytest.raises(OSError):
        await _ssh(lab, ip, "true")
    _start(api, 120)
    assert await _read(lab, ip, "/home/ubuntu/notes.txt") == "version 1\n"
    assert await _read(lab, ip, "/etc/app.conf") == "mode=safe\n"
    assert await _read(lab, ip, "/home/ubuntu/later.txt") is None
    assert (await _ssh(lab, ip, "stat -c %U notes.txt")).stdout.strip() == "ubuntu"  # owners come back too


async def test_rollback_with_start_boots_the_snapshot(lab: LabHandle, api: ProxmoxAPI) -> None:
    ip = _address(lab, 20)
    provision(api, 120, "k3s-master", ip, _public_key(lab), gateway=_gateway(lab))
    vm = api.nodes("pve").qemu(120)
    await _write(lab, ip, "/home/ubuntu/notes.txt", "version 1\n")
    wait_task(api, vm.snapshot.post(snapname="before"))
    await _write(lab, ip, "/home/ubuntu/notes.txt", "version 2\n")
    assert wait_task(api, vm.snapshot("before").rollback.post(start=1))["exitstatus"] == "OK"
    assert vm.status.current.get()["status"] == "running"
    wait_for(lambda: agent_ipv4(api, 120))
    assert await _read(lab, ip, "/home/ubuntu/notes.txt") == "version 1\n"


async def test_snapshot_with_ram_resumes_the_running_guest(lab: LabHandle, api: ProxmoxAPI) -> None:
    ip = _address(lab, 20)
    provision(api, 120, "k3s-master", ip, _public_key(lab), gateway=_gateway(lab))
    vm = api.nodes("pve").qemu(120)
    await _write(lab, ip, UNIT, "[Service]\nExecStart=/usr/local/bin/backup-agent\n")
    await _ssh(lab, ip, "sudo systemctl start backup-agent && sudo sysctl -w vm.swappiness=10")
    used_before = api.nodes("pve").storage("local-lvm").status.get()["used"]

    upid = vm.snapshot.post(snapname="warm", vmstate=1)
    assert wait_task(api, upid)["exitstatus"] == "OK"
    log = _log(api, upid)
    assert log[:2] == ['  Logical volume "vm-120-state-warm" created.', "saving VM state and RAM using storage 'local-lvm'"]
    assert log[2].startswith("completed saving the VM state in ")
    assert [(s["name"], s.get("vmstate")) for s in vm.snapshot.get()] == [("warm", 1), ("current", None)]
    state_size = (4096 * 2 + 500) << 20  # twice the guest's memory and 500 MiB for device state
    assert api.nodes("pve").storage("local-lvm").status.get()["used"] == used_before + state_size
    content = {c["volid"]: c["size"] for c in api.nodes("pve").storage("local-lvm").content.get(vmid=120)}
    assert content["local-lvm:vm-120-state-warm"] == state_size

    await _ssh(lab, ip, "sudo systemctl stop backup-agent && sudo sysctl -w vm.swappiness=60 && rm .profile")
    assert wait_task(api, vm.snapshot("warm").rollback.post())["exitstatus"] == "OK"
    # Started from the saved RAM: running at once, what ran runs again, runtime settings as they were.
    assert vm.status.current.get()["status"] == "running"
    assert (await _ssh(lab, ip, "systemctl is-active backup-agent")).stdout == "active\n"
    assert (await _ssh(lab, ip, "sysctl -n vm.swappiness")).stdout == "10\n"
    assert await _read(lab, ip, "/home/ubuntu/.profile") is not None
    assert vm.agent.ping.post() == {"result": {}}

    # A cold boot of the same disk: the unit is not enabled, the runtime setting is gone.
    wait_task(api, vm.status.stop.post())
    _start(api, 120)
    assert (await _ssh(lab, ip, "systemctl is-active backup-agent", check=False)).stdout == "inactive\n"
    assert (await _ssh(lab, ip, "sysctl -n vm.swappiness")).stdout == "60\n"

    delete = vm.snapshot("warm").delete()
    assert wait_task(api, delete)["exitstatus"] == "OK"
    assert '  Logical volume "vm-120-state-warm" successfully removed.' in _log(api, delete)
    assert api.nodes("pve").storage("local-lvm").status.get()["used"] == used_before


def test_no_room_for_the_ram_fails_the_snapshot_and_unlocks(lab: LabHandle, api: ProxmoxAPI) -> None:
    provision(api, 120, "k3s-master", _address(lab, 20), _public_key(lab), gateway=_gateway(lab))
    vm = api.nodes("pve").qemu(120)
    lab.call(lambda: lab.lab.pve.faults.storage_full.add("local-lvm"))
    failed = wait_task(api, vm.snapshot.post(snapname="warm", vmstate=1))
    assert failed["exitstatus"].startswith("lvcreate 'pve/vm-120-state-warm' error:")
    assert "lock" not in vm.config.get() and [s["name"] for s in vm.snapshot.get()] == ["current"]
    assert not (_disk(lab, 120) / "snapshots" / "warm").exists()
    # A thin snapshot of the disks alone allocates nothing.
    assert wait_task(api, vm.snapshot.post(snapname="cold"))["exitstatus"] == "OK"


async def test_clone_of_a_stopped_vm_boots_with_its_files(lab: LabHandle, api: ProxmoxAPI) -> None:
    source_ip, clone_ip = _address(lab, 20), _address(lab, 21)
    provision(api, 120, "k3s-master", source_ip, _public_key(lab), gateway=_gateway(lab))
    await _write(lab, source_ip, "/etc/app.conf", "mode=safe\n")
    await _write(lab, source_ip, "/home/ubuntu/notes.txt", "from the source\n")
    source_key = (await _ssh(lab, source_ip, "sudo cat /etc/machine-id")).stdout
    wait_task(api, api.nodes("pve").qemu(120).status.shutdown.post())

    qemu = api.nodes("pve").qemu
    clone = wait_task(api, qemu(120).clone.post(newid=121, name="k3s-worker-01"))  # a VM's clone is full
    assert clone["exitstatus"] == "OK"
    assert qemu(121).config.get()["scsi0"].startswith("local-lvm:vm-121-disk-0,")
    qemu(121).config.put(ipconfig0=f"ip={clone_ip}/24,gw={_gateway(lab)}")
    _start(api, 121)
    assert agent_ipv4(api, 121) == clone_ip

    assert await _read(lab, clone_ip, "/etc/app.conf") == "mode=safe\n"
    assert await _read(lab, clone_ip, "/home/ubuntu/notes.txt") == "from the source\n"
    assert (await _ssh(lab, clone_ip, "hostname")).stdout == "k3s-worker-01\n"  # cloud-init: its own name
    assert "k3s-worker-01" in (await _read(lab, clone_ip, "/etc/hosts") or "")
    assert (await _ssh(lab, clone_ip, "sudo cat /etc/machine-id")).stdout == source_key  # a disk copy, as on PVE
    # The source's disk is its own: the clone's writes do not reach it.
    await _write(lab, clone_ip, "/home/ubuntu/notes.txt", "changed on the clone\n")
    _start(api, 120)
    assert await _read(lab, source_ip, "/home/ubuntu/notes.txt") == "from the source\n"
    assert lab.lab.nodes.host_public_key(120) != lab.lab.nodes.host_public_key(121)


async def test_linked_clone_of_a_snapshot(lab: LabHandle, api: ProxmoxAPI) -> None:
    ip, clone_ip = _address(lab, 20), _address(lab, 22)
    provision(api, 120, "k3s-master", ip, _public_key(lab), gateway=_gateway(lab))
    qemu = api.nodes("pve").qemu
    await _write(lab, ip, "/home/ubuntu/notes.txt", "at the snapshot\n")
    wait_task(api, qemu(120).snapshot.post(snapname="golden"))
    await _write(lab, ip, "/home/ubuntu/notes.txt", "after the snapshot\n")

    with pytest.raises(ResourceException) as live:
        qemu(120).clone.post(newid=122, full=0)
    assert live.value.content == "Linked clone feature is not supported for drive 'scsi0'"
    with pytest.raises(ResourceException) as missing:
        qemu(120).clone.post(newid=122, snapname="nope")
    assert missing.value.content == "snapshot 'nope' does not exist"

    # LVM-thin clones a snapshot thinly; the clone runs while its source runs on.
    assert wait_task(api, qemu(120).clone.post(newid=122, name="k3s-worker-02", full=0,
                                               snapname="golden"))["exitstatus"] == "OK"
    config = qemu(122).config.get()
    assert config["scsi0"].startswith("local-lvm:vm-122-disk-0,") and "parent" not in config
    assert [s["name"] for s in qemu(122).snapshot.get()] == ["current"]
    qemu(122).config.put(ipconfig0=f"ip={clone_ip}/24,gw={_gateway(lab)}")
    _start(api, 122)
    assert await _read(lab, clone_ip, "/home/ubuntu/notes.txt") == "at the snapshot\n"
    assert (await _ssh(lab, clone_ip, "hostname")).stdout == "k3s-worker-02\n"
    assert await _read(lab, ip, "/home/ubuntu/notes.txt") == "after the snapshot\n"


async def test_delete_snapshot_and_destroy_free_the_disk(lab: LabHandle, api: ProxmoxAPI) -> None:
    ip = _address(lab, 20)
    provision(api, 120, "k3s-master", ip, _public_key(lab), gateway=_gateway(lab))
    vm = api.nodes("pve").qemu(120)
    await _write(lab, ip, "/home/ubuntu/notes.txt", "kept\n")
    for name in ("first", "second"):
        assert wait_task(api, vm.snapshot.post(snapname=name))["exitstatus"] == "OK"
    snapshots = _disk(lab, 120) / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["first", "second"]

    delete = vm.snapshot("first").delete()
    assert wait_task(api, delete)["exitstatus"] == "OK"
    assert _log(api, delete)[0] == '  Logical volume "snap_vm-120-disk-0_first" successfully removed.'
    assert [p.name for p in snapshots.iterdir()] == ["second"]
    assert {s["name"]: s.get("parent") for s in vm.snapshot.get()} == {"second": None, "current": "second"}
    assert await _read(lab, ip, "/home/ubuntu/notes.txt") == "kept\n"  # the disk itself is untouched

    wait_task(api, vm.status.stop.post())
    destroy = vm.delete()
    assert wait_task(api, destroy)["exitstatus"] == "OK"
    assert '  Logical volume "snap_vm-120-disk-0_second" successfully removed.' in _log(api, destroy)
    assert not _disk(lab, 120).exists()


async def test_snapshots_outlive_a_lab_restart(lab_file: Path) -> None:
    with running_lab(sim_config(lab_file)) as lab:
        api, ip = token_client(lab.status()), _address(lab, 20)
        provision(api, 120, "k3s-master", ip, _public_key(lab), gateway=_gateway(lab))
        await _write(lab, ip, "/home/ubuntu/notes.txt", "before the restart\n")
        wait_task(api, api.nodes("pve").qemu(120).snapshot.post(snapname="before"))
        await _write(lab, ip, "/home/ubuntu/notes.txt", "changed\n")
    with running_lab(sim_config(lab_file)) as lab:
        api = token_client(lab.status())
        assert await _read(lab, ip, "/home/ubuntu/notes.txt") == "changed\n"
        assert wait_task(api, api.nodes("pve").qemu(120).snapshot("before").rollback.post(start=1))["exitstatus"] == "OK"
        wait_for(lambda: agent_ipv4(api, 120))
        assert await _read(lab, ip, "/home/ubuntu/notes.txt") == "before the restart\n"


def test_a_clone_in_progress_never_points_at_its_sources_disk(tmp_path: Path) -> None:
    """PVE adds each disk to the new VM's config once it is copied: a clone the lab's stop
    interrupts must not leave a VM whose live disk is the template's base volume."""
    with running_lab(sim_config(write_lab(tmp_path, time_scale=0.05))) as lab:  # a full clone takes about a second
        api = token_client(lab.status())
        upid = api.nodes("pve").qemu(9000).clone.post(newid=150, name="copy", full=1)
        during = api.nodes("pve").qemu(150).config.get()
        assert during["lock"] == "clone" and "scsi0" not in during
        assert wait_task(api, upid)["exitstatus"] == "OK"
        after = api.nodes("pve").qemu(150).config.get()
    assert "lock" not in after and after["scsi0"].startswith("local-lvm:vm-150-disk-0")
