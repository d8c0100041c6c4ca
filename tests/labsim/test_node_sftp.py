"""SFTP on a node: uploads land in the node's files (home by default), persist across a lab
restart, and the user's permissions apply as over the shell."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from tests.labsim.node_lab import node_lab


async def test_put_and_get_persist_across_a_restart(tmp_path):
    local = tmp_path / "config.yaml"
    local.write_text("token: abc\n")
    async with node_lab(tmp_path) as lab:
        async with lab.connect() as conn, conn.start_sftp_client() as sftp:
            assert await sftp.getcwd() == "/home/ubuntu"
            await sftp.put(str(local), "config.yaml")
            await sftp.mkdir("/tmp/upload")
            await sftp.put(str(local), "/tmp/upload/copy.yaml")
        assert await lab.sh("cat ~/config.yaml && stat -c %U /tmp/upload/copy.yaml") == (
            "token: abc\nubuntu\n", "", 0)
        await lab.restart()
        async with lab.connect() as conn, conn.start_sftp_client() as sftp:
            await sftp.get("/home/ubuntu/config.yaml", str(tmp_path / "back.yaml"))
            assert sorted(await sftp.listdir("/tmp/upload")) == [".", "..", "copy.yaml"]
        assert (tmp_path / "back.yaml").read_text() == "token: abc\n"


async def test_sftp_is_confined_to_the_node_and_to_the_users_rights(tmp_path):
    local = tmp_path / "x"
    local.write_text("x")
    async with node_lab(tmp_path) as lab:
        async with lab.connect() as conn, conn.start_sftp_client() as sftp:
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.put(str(local), "/etc/x.conf")
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.get("/etc/shadow", str(tmp_path / "shadow"))
            with pytest.raises(asyncssh.SFTPError):
                await sftp.remove("/etc/hostname")
            assert (await sftp.stat("/../../etc/hostname")).size == len("k3s-master\n")
            await sftp.get("/etc/os-release", str(tmp_path / "os-release"))
        assert "Ubuntu 22.04.5 LTS" in (tmp_path / "os-release").read_text()
        assert await lab.sh("test -e /etc/x.conf || echo absent") == ("absent\n", "", 0)


async def test_openssh_scp_uploads_through_sftp(tmp_path):
    local = tmp_path / "payload"
    local.write_bytes(b"\x00binary\xff")
    async with node_lab(tmp_path) as lab:
        proc = await asyncio.create_subprocess_exec(
            "scp", "-q", "-i", str(lab.key_file), "-P", str(lab.port), "-F", "/dev/null",
            "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "StrictHostKeyChecking=accept-new",
            "-o", "BatchMode=yes", str(local), f"{lab.spec.user}@{lab.spec.ip}:payload",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert lab.node.read("/home/ubuntu/payload") == b"\x00binary\xff"
