"""labkit.ssh against the embedded lab's SSH nodes (asyncssh servers on the VMs' addresses):
pinned host keys, commands, sudo, upload, fan-out, timeouts, dropped connections, redaction."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import asyncssh
import pytest

from labkit import secrets, ssh
from labkit.errors import SshError
from tests.labkit.embedded import EmbeddedLab


def faults(provisioned: EmbeddedLab):
    return provisioned.handle.lab.nodes.faults


def test_first_contact_is_recorded_then_matched(provisioned, session):
    names = [n.name for n in provisioned.lab.nodes]
    reach = session.reachable(names)
    assert set(reach["node"]) == set(names) and set(reach["cloud_init"]) == {"done"}
    table = session.host_key_table()
    assert list(table["event"]) == ["first contact: recorded"] * 3
    pinned = provisioned.lab.ssh.known_hosts.read_text().splitlines()
    assert len(pinned) == 3
    # first contacts happen concurrently, so the lines come in any order
    assert any(line.startswith(f"[{provisioned.lab.master.ip}]:{provisioned.lab.ssh.port} ssh-") for line in pinned)

    again = ssh.connect(provisioned.lab)
    again.fan_out(names, "true")
    assert list(again.host_key_table()["event"]) == ["known: matches"] * 3
    again.close()
    assert len(provisioned.lab.ssh.known_hosts.read_text().splitlines()) == 3  # nothing added


def test_a_changed_host_key_is_refused(provisioned, session):
    master = provisioned.lab.master
    session.run(master.name, "true")
    known = provisioned.lab.ssh.known_hosts
    pattern = f"[{master.ip}]:{provisioned.lab.ssh.port}"
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVrbm93bi1rZXktb2YtYW5vdGhlci1ob3N0LTAwMDAw"
    known.write_text(f"{pattern} {other}\n")
    with pytest.raises(ssh.HostKeyChanged) as err:
        ssh.connect(provisioned.lab).run(master.name, "true")
    message = str(err.value)
    assert master.name in message and str(known) in message and pattern in message
    assert "the host key changed: it presents SHA256:" in message and "pinned is SHA256:" in message
    assert known.read_text() == f"{pattern} {other}\n"  # the pin is not overwritten


def _hashed(known: Path) -> None:
    """Hash the file's host names as Debian's and Ubuntu's ssh does (HashKnownHosts yes)."""
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    known.with_name(known.name + ".old").unlink()
    assert "|1|" in known.read_text()


def test_hashed_revoked_and_cert_authority_entries_are_honoured(provisioned, session):
    master = provisioned.lab.master
    session.run(master.name, "true")
    known = provisioned.lab.ssh.known_hosts
    pattern = f"[{master.ip}]:{provisioned.lab.ssh.port}"
    actual = next(line for line in known.read_text().splitlines() if line.startswith(pattern)).split(maxsplit=1)[1]
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()

    known.write_text(f"{pattern} {actual}\n")
    _hashed(known)
    hashed = known.read_text()
    again = ssh.connect(provisioned.lab)
    again.run(master.name, "true")
    assert list(again.host_key_table()["event"]) == ["known: matches"] and known.read_text() == hashed

    known.write_text(f"{pattern} {other}\n")
    _hashed(known)
    hashed = known.read_text()
    with pytest.raises(ssh.HostKeyChanged, match="the host key changed"):
        ssh.connect(provisioned.lab).run(master.name, "true")
    assert known.read_text() == hashed  # no key appended beside the hashed pin

    cases = {f"@revoked {pattern} {actual}\n{pattern} {actual}\n": "is marked @revoked in",
             f"@revoked * {actual}\n": "is marked @revoked in",
             f"@cert-authority *.example.com,{pattern} {other}\n": "does not check host certificates",
             f"@revoked {pattern} {other}\n": "names this host only in @cert-authority or @revoked lines"}
    for content, expected in cases.items():
        known.write_text(content)
        with pytest.raises(ssh.HostKeyRefused, match=expected):
            ssh.connect(provisioned.lab).run(master.name, "true")
        assert known.read_text() == content

    known.write_text(f"[127.*]:*,![{master.ip}]:* {other}\n*.example.com {other}\n")  # negated: not this host
    lone = ssh.connect(provisioned.lab)
    lone.run(master.name, "true")
    assert list(lone.host_key_table()["event"]) == ["first contact: recorded"]


def test_known_hosts_patterns_match_as_openssh_reads_them(tmp_path):
    known = ssh.KnownHosts(tmp_path / "known_hosts")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBHklVyrsYDYPkINZQCPZpE6PgRElmVgOfMRfFyvPhfc"
    known.path.write_text(f"# comment\n10.0.0.?,!10.0.0.9 {key}\n[10.1.*]:2222 {key} c\n{key}\n")
    assert known.pinned("10.0.0.5", 22) == [key] and known.pinned("10.0.0.9", 22) == []
    assert known.pinned("10.0.0.50", 22) == [] and known.pinned("10.1.2.3", 2222) == [key]
    assert known.pinned("10.1.2.3", 22) == []
    known.path.write_text(f"10.0.0.5,[10.1.2.3]:2222 {key}\n")
    _hashed(known.path)
    assert known.pinned("10.0.0.5", 22) == [key] and known.pinned("10.1.2.3", 2222) == [key]
    assert known.pinned("10.0.0.6", 22) == [] and known.pinned("10.1.2.3", 22) == []


def test_run_captures_output_and_failures_name_node_and_command(provisioned, session):
    master = provisioned.lab.master.name
    result = session.run(master, "hostname")
    assert result.ok and result.stdout.strip() == master
    missing = session.run(master, "cat /no/such/file", check=False)
    assert missing.exit_status != 0 and "No such file" in missing.stderr
    with pytest.raises(SshError, match=rf"{master}: `cat /no/such/file` exited 1: .*No such file"):
        session.run(master, "cat /no/such/file")


def test_secrets_are_redacted_from_errors(provisioned, session):
    secrets.register("s3cr3t-value-for-the-test")
    with pytest.raises(SshError) as err:
        session.run(provisioned.lab.master.name, "cat /etc/s3cr3t-value-for-the-test")
    assert "s3cr3t-value-for-the-test" not in str(err.value)
    assert "cat /etc/***" in str(err.value)


def test_sudo_and_upload(provisioned, session):
    master = provisioned.lab.master.name
    session.run(master, "mkdir -p /etc/labkit-test && tee /etc/labkit-test/conf >/dev/null && chmod 600 /etc/labkit-test/conf",
                sudo=True, input="root only\n")
    assert not session.run(master, "cat /etc/labkit-test/conf", check=False).ok
    assert session.run(master, "cat /etc/labkit-test/conf", sudo=True).stdout == "root only\n"

    session.upload(master, "uploaded over SFTP\n", "/home/ubuntu/hello.txt", mode=0o600)
    assert session.run(master, "cat /home/ubuntu/hello.txt").stdout == "uploaded over SFTP\n"


def test_fan_out_runs_on_every_node(provisioned, session):
    names = [n.name for n in provisioned.lab.nodes]
    results = session.fan_out(names, "hostname")
    assert {n: r.stdout.strip() for n, r in results.items()} == {n: n for n in names}
    per_node = session.run_many({n: f"echo {i}" for i, n in enumerate(names)})
    assert [per_node[n].stdout.strip() for n in names] == ["0", "1", "2"]


def test_a_command_that_hangs_times_out(provisioned, session):
    worker = provisioned.lab.agents[0]
    faults(provisioned).slow(worker.vmid, 3)
    with pytest.raises(SshError, match=rf"{worker.name}: `hostname` did not finish within 1 s"):
        session.run(worker.name, "hostname", timeout=1)


def test_connection_dropped_mid_command_is_retried_once_then_reported(provisioned, session):
    worker = provisioned.lab.agents[0]
    session.run(worker.name, "true")
    faults(provisioned).drop_next(worker.vmid, "hostname")
    assert session.run(worker.name, "hostname").stdout.strip() == worker.name  # reconnected, retried

    faults(provisioned).drop_next(worker.vmid, "hostname")
    faults(provisioned).drop_next(worker.vmid, "hostname")
    with pytest.raises(SshError, match=rf"{worker.name}: connection lost while running `hostname`"):
        session.run(worker.name, "hostname")


def test_reachable_waits_for_a_node_whose_sshd_is_not_up_yet(provisioned, session):
    worker = provisioned.lab.agents[0]
    provisioned.handle.call(faults(provisioned).refuse_connections, worker.vmid)
    threading.Timer(0.5, provisioned.handle.call, (faults(provisioned).refuse_connections, worker.vmid, False)).start()
    reach = session.reachable([worker.name], timeout=20)
    assert list(reach["cloud_init"]) == ["done"]

    provisioned.handle.call(faults(provisioned).refuse_connections, worker.vmid)
    with pytest.raises(SshError, match=rf"{worker.name} \({worker.ip}:\d+\): cannot connect"):
        ssh.connect(provisioned.lab).reachable([worker.name], timeout=0.5)
