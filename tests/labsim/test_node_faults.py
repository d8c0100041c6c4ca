"""Faults on the nodes' SSH service, as a client sees them."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from tests.labsim.node_lab import node_lab


async def test_a_dropped_connection_mid_command_is_a_lost_connection_to_the_client(tmp_path):
    async with node_lab(tmp_path) as lab:
        lab.host.faults.drop_next(lab.spec.vmid, "tee /etc/k3s.conf")
        async with lab.connect() as conn:
            assert (await conn.run("hostname")).exit_status == 0  # not the command named
            result = await conn.run("echo data | sudo tee /etc/k3s.conf")
            # asyncssh's view of a connection lost mid-command: part of the output, no exit status,
            # and a connection that is gone.
            assert (result.stdout, result.exit_status, result.returncode) == ("da", None, None)
            await asyncio.wait_for(conn.wait_closed(), 10)
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.run("hostname")
        # The command ran before the cut (a retry must be idempotent), and only once was dropped.
        assert await lab.sh("cat /etc/k3s.conf") == ("data\n", "", 0)
        assert await lab.sh("echo again | sudo tee /etc/k3s.conf") == ("again\n", "", 0)


async def test_openssh_sees_a_dropped_connection_as_exit_255(tmp_path):
    async with node_lab(tmp_path) as lab:
        lab.host.faults.drop_next(lab.spec.vmid)
        status, _, err = await lab.openssh("cat /etc/os-release")
        assert status == 255, err


async def test_fail_next_makes_one_command_fail_without_running(tmp_path):
    async with node_lab(tmp_path) as lab:
        lab.host.faults.fail_next(lab.spec.vmid, "mkdir", "mkdir: cannot create directory '/x': No space left on device\n")
        assert await lab.sh("sudo mkdir /x") == ("", "mkdir: cannot create directory '/x': No space left on device\n", 1)
        assert await lab.sh("test -d /x || echo absent") == ("absent\n", "", 0)
        assert await lab.sh("sudo mkdir /x && test -d /x && echo made") == ("made\n", "", 0)


async def test_refused_connections_until_healed(tmp_path):
    async with node_lab(tmp_path) as lab:
        lab.host.faults.refuse_connections(lab.spec.vmid)
        with pytest.raises(ConnectionRefusedError):
            async with lab.connect():
                pass
        status, _, err = await lab.openssh("true")
        assert status == 255 and b"Connection refused" in err
        lab.host.faults.clear(lab.spec.vmid)
        for _ in range(50):  # the port reopens in the background
            try:
                assert (await lab.run("hostname")).stdout == "k3s-master\n"
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the port never reopened")


async def test_a_slow_node_lets_the_client_time_out(tmp_path):
    async with node_lab(tmp_path) as lab, lab.connect() as conn:
        lab.host.faults.slow(lab.spec.vmid, 5)
        with pytest.raises(asyncssh.TimeoutError):
            await conn.run("hostname", timeout=0.2)
        lab.host.faults.slow(lab.spec.vmid, 0)
        assert (await conn.run("hostname", timeout=10)).stdout == "k3s-master\n"
