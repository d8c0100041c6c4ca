"""The nodes' SSH service over the wire: asyncssh and OpenSSH clients log in with the cloud-init
key; other keys and users are refused; the host key survives a restart; the server goes with
the VM."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from tests.labsim.node_lab import node_lab, write_key


async def test_asyncssh_runs_a_command_and_returns_stdout_stderr_and_status(tmp_path):
    async with node_lab(tmp_path) as lab:
        result = await lab.run("hostname; echo oops >&2; exit 3")
        assert (result.stdout, result.stderr, result.exit_status) == ("k3s-master\n", "oops\n", 3)


async def test_openssh_client_logs_in_and_pins_the_host_key(tmp_path):
    async with node_lab(tmp_path) as lab:
        status, out, err = await lab.openssh("cat /etc/os-release | grep PRETTY_NAME; id -un")
        assert status == 0, err
        assert out == b'PRETTY_NAME="Ubuntu 22.04.5 LTS"\nubuntu\n'
        pinned = lab.known_hosts.read_text()
        assert lab.host.host_public_key(lab.spec.vmid).split()[1] in pinned
        status, out, _ = await lab.openssh("false")
        assert status == 1


async def test_openssh_feeds_stdin_and_sees_exit_status(tmp_path):
    async with node_lab(tmp_path) as lab:
        status, out, err = await lab.openssh("sudo tee /etc/motd >/dev/null && sudo cat /etc/motd",
                                             stdin=b"welcome\n")
        assert (status, out) == (0, b"welcome\n"), err
        status, _, err = await lab.openssh("no-such-tool --version")
        assert status == 127
        assert b"no-such-tool: command not found" in err


async def test_a_command_that_reads_no_input_returns_while_the_client_keeps_stdin_open(tmp_path):
    async with node_lab(tmp_path) as lab, lab.connect() as conn:
        process = await conn.create_process("uname -r")
        result = await process.wait(timeout=30)  # stdin never closed: sshd would not wait for it either
        assert result.stdout == "5.15.0-126-generic\n"


async def test_wrong_key_is_refused(tmp_path):
    async with node_lab(tmp_path) as lab:
        stranger = write_key(tmp_path / "stranger")
        with pytest.raises(asyncssh.PermissionDenied):
            async with lab.connect(key=stranger):
                pass
        status, _, err = await lab.openssh("true", key_file=tmp_path / "stranger")
        assert status == 255 and b"Permission denied (publickey)" in err


async def test_wrong_user_is_refused_even_with_the_right_key(tmp_path):
    async with node_lab(tmp_path) as lab:
        for user in ("root", "admin"):
            with pytest.raises(asyncssh.PermissionDenied):
                async with lab.connect(username=user):
                    pass


async def test_password_authentication_is_not_offered(tmp_path):
    async with node_lab(tmp_path) as lab:
        with pytest.raises(asyncssh.PermissionDenied):
            async with asyncssh.connect(lab.spec.ip, lab.port, username="ubuntu", password="ubuntu",
                                        client_keys=None, known_hosts=None):
                pass


async def test_host_key_is_stable_across_a_restart_and_differs_per_node(tmp_path):
    async with node_lab(tmp_path) as lab:
        async with lab.connect() as conn:
            before = conn.get_server_host_key().export_public_key()
        other = lab.spec.__class__(**{**lab.spec.__dict__, "vmid": 121, "name": "k3s-worker-01",
                                      "ip": lab.spec.ip.rsplit(".", 1)[0] + ".21"})
        lab.extra.append(other)
        await lab.host.start_node(other)
        await lab.restart()
        async with lab.connect() as conn:
            assert conn.get_server_host_key().export_public_key() == before
        async with lab.connect(ip=other.ip) as conn:
            assert conn.get_server_host_key().export_public_key() != before
        status, _, err = await lab.openssh("true")  # the pinned key still matches
        assert status == 0, err


async def test_new_keys_from_cloud_init_apply_to_the_running_node(tmp_path):
    async with node_lab(tmp_path) as lab:
        second = write_key(tmp_path / "second")
        await lab.resize(authorized_keys=[second.export_public_key().decode()])
        async with lab.connect(key=second) as conn:
            assert (await conn.run("cat ~/.ssh/authorized_keys")).exit_status == 0
        with pytest.raises(asyncssh.PermissionDenied):
            async with lab.connect():
                pass


async def test_stopping_the_vm_closes_the_port_and_drops_sessions(tmp_path):
    async with node_lab(tmp_path) as lab:
        conn = await lab.connect()
        await lab.host.stop_node(lab.spec.vmid)
        await conn.wait_closed()
        with pytest.raises(OSError):
            async with lab.connect():
                pass
        await lab.host.start_node(lab.spec)
        assert (await lab.run("hostname")).stdout == "k3s-master\n"


async def test_interactive_shell_keeps_its_working_directory(tmp_path):
    async with node_lab(tmp_path) as lab, lab.connect() as conn:
        result = await conn.run(input="cd /etc\npwd\nls hostname\nexit 4\n")
        assert result.stdout == "/etc\nhostname\n"
        assert result.exit_status == 4


async def test_a_node_outside_loopback_is_refused(tmp_path):
    async with node_lab(tmp_path) as lab:
        with pytest.raises(ValueError, match="not a loopback address"):
            await lab.host.start_node(lab.spec.__class__(**{**lab.spec.__dict__, "vmid": 130, "ip": "192.168.2.30"}))


async def test_disk_snapshots_roll_files_back_and_clones_start_from_their_source(tmp_path):
    async with node_lab(tmp_path) as lab:
        vmid = lab.spec.vmid
        await lab.sh("echo v1 | sudo tee /etc/app.conf")
        lab.host.snapshot_disk(vmid, "before")
        await lab.sh("echo v2 | sudo tee /etc/app.conf && sudo touch /etc/extra")
        await lab.host.stop_node(vmid)
        lab.host.rollback_disk(vmid, "before")
        await lab.host.start_node(lab.spec)
        assert await lab.sh("cat /etc/app.conf; test -e /etc/extra || echo no-extra") == ("v1\nno-extra\n", "", 0)
        lab.host.clone_disk(vmid, 131)
        clone = lab.spec.__class__(**{**lab.spec.__dict__, "vmid": 131, "name": "k3s-clone",
                                      "ip": lab.spec.ip.rsplit(".", 1)[0] + ".31"})
        await lab.host.start_node(clone)
        async with lab.connect(ip=clone.ip) as conn:
            assert (await conn.run("cat /etc/app.conf; hostname")).stdout == "v1\nk3s-clone\n"
            key = conn.get_server_host_key().export_public_key().decode().split()[1]
            assert key == lab.host.host_public_key(131).split()[1] != lab.host.host_public_key(vmid).split()[1]


async def test_openssh_login_shell_on_a_pty(tmp_path):
    async with node_lab(tmp_path) as lab:
        proc = await asyncio.create_subprocess_exec(
            "ssh", "-tt", "-i", str(lab.key_file), "-p", str(lab.port), "-F", "/dev/null",
            "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "StrictHostKeyChecking=accept-new",
            "-o", "BatchMode=yes", f"{lab.spec.user}@{lab.spec.ip}",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(b"cd /etc\ncat hostname\nexit 2\n"), 30)
        assert proc.returncode == 2, err
        text = out.decode().replace("\r", "")
        assert "ubuntu@k3s-master:~$ " in text and "ubuntu@k3s-master:/etc$ " in text
        assert "$ k3s-master\n" in text
