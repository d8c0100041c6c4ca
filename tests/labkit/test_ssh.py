"""labkit.ssh against the embedded lab's SSH nodes (asyncssh servers on the VMs' addresses):
pinned host keys, commands, sudo, upload, fan-out, timeouts, dropped connections, redaction."""

from __future__ import annotations

import threading

import pytest

from labkit import secrets, ssh
from labkit.errors import SshError
from tests.labkit.embedded import EmbeddedLab, provisioned_lab


@pytest.fixture
def sim(tmp_path):
    with provisioned_lab(tmp_path) as lab:
        yield lab


@pytest.fixture
def session(sim):
    s = ssh.connect(sim.lab)
    yield s
    s.close()


def faults(sim: EmbeddedLab):
    return sim.handle.lab.nodes.faults


def test_first_contact_is_recorded_then_matched(sim, session):
    names = [n.name for n in sim.lab.nodes]
    reach = session.reachable(names)
    assert set(reach["node"]) == set(names) and set(reach["cloud_init"]) == {"done"}
    table = session.host_key_table()
    assert list(table["event"]) == ["first contact: recorded"] * 3
    pinned = sim.lab.ssh.known_hosts.read_text().splitlines()
    assert len(pinned) == 3
    assert pinned[0].startswith(f"[{sim.lab.master.ip}]:{sim.lab.ssh.port} ssh-")

    again = ssh.connect(sim.lab)
    again.fan_out(names, "true")
    assert list(again.host_key_table()["event"]) == ["known: matches"] * 3
    again.close()
    assert len(sim.lab.ssh.known_hosts.read_text().splitlines()) == 3  # nothing added


def test_a_changed_host_key_is_refused(sim, session):
    master = sim.lab.master
    session.run(master.name, "true")
    known = sim.lab.ssh.known_hosts
    pattern = f"[{master.ip}]:{sim.lab.ssh.port}"
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVrbm93bi1rZXktb2YtYW5vdGhlci1ob3N0LTAwMDAw"
    known.write_text(f"{pattern} {other}\n")
    with pytest.raises(ssh.HostKeyChanged) as err:
        ssh.connect(sim.lab).run(master.name, "true")
    message = str(err.value)
    assert master.name in message and str(known) in message and pattern in message
    assert known.read_text() == f"{pattern} {other}\n"  # the pin is not overwritten


def test_run_captures_output_and_failures_name_node_and_command(sim, session):
    master = sim.lab.master.name
    result = session.run(master, "hostname")
    assert result.ok and result.stdout.strip() == master
    missing = session.run(master, "cat /no/such/file", check=False)
    assert missing.exit_status != 0 and "No such file" in missing.stderr
    with pytest.raises(SshError, match=rf"{master}: `cat /no/such/file` exited 1: .*No such file"):
        session.run(master, "cat /no/such/file")


def test_secrets_are_redacted_from_errors(sim, session):
    secrets.register("s3cr3t-value-for-the-test")
    with pytest.raises(SshError) as err:
        session.run(sim.lab.master.name, "cat /etc/s3cr3t-value-for-the-test")
    assert "s3cr3t-value-for-the-test" not in str(err.value)
    assert "cat /etc/***" in str(err.value)


def test_sudo_and_upload(sim, session):
    master = sim.lab.master.name
    session.run(master, "mkdir -p /etc/labkit-test && tee /etc/labkit-test/conf >/dev/null && chmod 600 /etc/labkit-test/conf",
                sudo=True, input="root only\n")
    assert not session.run(master, "cat /etc/labkit-test/conf", check=False).ok
    assert session.run(master, "cat /etc/labkit-test/conf", sudo=True).stdout == "root only\n"

    session.upload(master, "uploaded over SFTP\n", "/home/ubuntu/hello.txt", mode=0o600)
    assert session.run(master, "cat /home/ubuntu/hello.txt").stdout == "uploaded over SFTP\n"


def test_fan_out_runs_on_every_node(sim, session):
    names = [n.name for n in sim.lab.nodes]
    results = session.fan_out(names, "hostname")
    assert {n: r.stdout.strip() for n, r in results.items()} == {n: n for n in names}
    per_node = session.run_many({n: f"echo {i}" for i, n in enumerate(names)})
    assert [per_node[n].stdout.strip() for n in names] == ["0", "1", "2"]


def test_a_command_that_hangs_times_out(sim, session):
    worker = sim.lab.agents[0]
    faults(sim).slow(worker.vmid, 3)
    with pytest.raises(SshError, match=rf"{worker.name}: `hostname` did not finish within 1 s"):
        session.run(worker.name, "hostname", timeout=1)


def test_connection_dropped_mid_command_is_retried_once_then_reported(sim, session):
    worker = sim.lab.agents[0]
    session.run(worker.name, "true")
    faults(sim).drop_next(worker.vmid, "hostname")
    assert session.run(worker.name, "hostname").stdout.strip() == worker.name  # reconnected, retried

    faults(sim).drop_next(worker.vmid, "hostname")
    faults(sim).drop_next(worker.vmid, "hostname")
    with pytest.raises(SshError, match=rf"{worker.name}: connection lost while running `hostname`"):
        session.run(worker.name, "hostname")


def test_reachable_waits_for_a_node_whose_sshd_is_not_up_yet(sim, session):
    worker = sim.lab.agents[0]
    sim.handle.call(faults(sim).refuse_connections, worker.vmid)
    threading.Timer(0.5, sim.handle.call, (faults(sim).refuse_connections, worker.vmid, False)).start()
    reach = session.reachable([worker.name], timeout=20)
    assert list(reach["cloud_init"]) == ["done"]

    sim.handle.call(faults(sim).refuse_connections, worker.vmid)
    with pytest.raises(SshError, match=rf"{worker.name} \({worker.ip}:\d+\): cannot connect"):
        ssh.connect(sim.lab).reachable([worker.name], timeout=0.5)
