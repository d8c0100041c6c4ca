"""labkit.proxmox against the embedded lab's PVE API over HTTPS: connect with TLS verification,
plan, capacity, apply, wait, idempotence, and the faults a careful operator handles."""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import threading
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
import yaml

from labkit import proxmox
from labkit.errors import ProxmoxError
from labkit.params import load_lab
from tests.labfiles import REPO
from tests.labkit.embedded import EmbeddedLab, embedded_lab


@pytest.fixture
def sim(tmp_path):
    with embedded_lab(tmp_path) as lab:
        yield lab


def provision(sim: EmbeddedLab, **kw) -> proxmox.Applied:
    api = proxmox.connect(sim.lab)
    applied = proxmox.apply(api, sim.lab, proxmox.plan(api, sim.lab), **kw)
    proxmox.wait_agents(api, sim.lab, [n.name for n in sim.lab.nodes], timeout=10)
    return applied


def vm_config(sim: EmbeddedLab, vmid: int) -> dict:
    api = proxmox.connect(sim.lab)
    return api.nodes(sim.lab.proxmox.node).qemu(vmid).config.get()


# -- connect ------------------------------------------------------------------------------------------


def test_connect_verifies_tls_with_the_lab_ca(sim):
    api = proxmox.connect(sim.lab)
    assert api.version.get()["version"]
    cap = proxmox.capacity(api, sim.lab)
    assert cap.cpus > 0 and cap.memory_total > cap.memory_used > 0 and cap.storage_avail > 0


def _with_trust(sim: EmbeddedLab, tmp_path, **trust) -> proxmox.Api:
    doc = yaml.safe_load(sim.path.read_text())
    doc["proxmox"].pop("ca_file")
    doc["proxmox"].update(trust)
    path = tmp_path / "trust.yaml"
    path.write_text(yaml.safe_dump(doc))
    return proxmox.connect(load_lab(path))


def _fingerprint(sim: EmbeddedLab) -> str:
    pem = ssl.get_server_certificate((sim.lab.proxmox.host, sim.lab.proxmox.port))
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2))


def test_pinned_fingerprint_is_accepted_and_a_wrong_one_refused(sim, tmp_path):
    assert _with_trust(sim, tmp_path, fingerprint=_fingerprint(sim)).version.get()
    wrong = ":".join(["AB"] * 32)
    with pytest.raises(ProxmoxError, match="TLS verification .* failed against fingerprint"):
        _with_trust(sim, tmp_path, fingerprint=wrong)


def test_a_foreign_ca_is_refused(sim, tmp_path):
    from labsim import pki

    other = tmp_path / "other-ca.pem"
    other.write_bytes(pki.make_ca("someone else").cert_pem)
    with pytest.raises(ProxmoxError, match="TLS verification"):
        _with_trust(sim, tmp_path, ca_file=str(other))


def test_a_wrong_token_is_refused_without_echoing_it(sim, tmp_path):
    (tmp_path / "bad.yaml").write_text("pve_token_secret: 00000000-dead-beef-0000-000000000000\n")
    doc = yaml.safe_load(sim.path.read_text())
    doc["proxmox"]["token_secret"] = f"file:{tmp_path}/bad.yaml#pve_token_secret"
    (tmp_path / "badtoken.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ProxmoxError, match="refused the API token") as err:
        proxmox.connect(load_lab(tmp_path / "badtoken.yaml"))
    assert "dead-beef" not in str(err.value)


# -- plan, apply, idempotence -------------------------------------------------------------------------


def test_full_flow_creates_configures_and_boots_every_vm(sim):
    api = proxmox.connect(sim.lab)
    plan = proxmox.plan(api, sim.lab)
    assert [(v.name, v.action) for v in plan.items] == [(n.name, "create") for n in sim.lab.nodes]
    assert proxmox.check_capacity(plan, sim.lab, proxmox.capacity(api, sim.lab)).ok

    applied = provision(sim)
    assert [c.action for c in applied.changes] == ["create"] * 3

    master = sim.lab.master
    config = vm_config(sim, master.vmid)
    assert config["cores"] == 2 and str(config["memory"]) == "4096" and config["ciuser"] == "ubuntu"
    assert config["ipconfig0"] == f"ip={master.ip}/24,gw={sim.lab.network.gateway}"
    assert unquote(config["sshkeys"]).strip() == sim.lab.ssh.public_key.read_text().strip()
    assert "%20" in config["sshkeys"]  # URL-encoded as PVE wants it
    assert config["nameserver"] == str(sim.lab.network.dns[0])
    assert config["searchdomain"] == sim.lab.network.search_domain
    assert str(config["agent"]).startswith("1") and config["onboot"] == 1
    assert sorted(config["tags"].split(";")) == ["k3s", "server"]

    table = proxmox.vm_table(api, sim.lab)
    assert list(table["status"]) == ["running"] * 3
    assert list(table["disk_gib"]) == [32.0] * 3
    assert list(table["ip"]) == [str(n.ip) for n in sim.lab.nodes]


def test_second_run_plans_nothing_and_starts_no_task(sim):
    provision(sim)
    api = proxmox.connect(sim.lab)
    before = proxmox.task_ids(api, sim.lab)
    plan = proxmox.plan(api, sim.lab)
    assert plan.is_empty, plan.changes()
    applied = proxmox.apply(api, sim.lab, plan)
    assert applied.changes == []
    assert proxmox.task_ids(api, sim.lab) == before  # counted from PVE, not from labkit


def test_vmid_held_by_another_vm_is_an_error_and_nothing_changes(sim):
    api = proxmox.connect(sim.lab)
    node = sim.lab.proxmox.node
    upid = api.nodes(node).qemu(9000).clone.post(newid=121, name="someone-elses-vm", full=1)
    proxmox.wait_task(api, node, upid, what="test clone")
    before = proxmox.task_ids(api, sim.lab)
    with pytest.raises(ProxmoxError, match="vmid 121 is taken by VM 'someone-elses-vm'"):
        proxmox.plan(api, sim.lab)
    assert proxmox.task_ids(api, sim.lab) == before
    assert api.nodes(node).qemu(121).config.get()["name"] == "someone-elses-vm"


def test_drift_is_reported_and_fixed_only_with_reconcile(sim):
    provision(sim)
    api = proxmox.connect(sim.lab)
    worker = sim.lab.agents[0]
    api.nodes(sim.lab.proxmox.node).qemu(worker.vmid).config.put(cores=4, tags="k3s;agent;extra")
    plan = proxmox.plan(api, sim.lab)
    drifted = plan.of("drift")
    assert [v.name for v in drifted] == [worker.name]
    assert set(drifted[0].drift) == {"cores", "tags"} and drifted[0].needs_reboot
    assert "cores: 4 -> 2" in drifted[0].change().detail

    skipped = proxmox.apply(api, sim.lab, plan)
    assert skipped.changes == [] and "reconcile" in skipped.skipped[0].detail
    assert vm_config(sim, worker.vmid)["cores"] == 4

    proxmox.apply(api, sim.lab, plan, reconcile=True)
    assert vm_config(sim, worker.vmid)["cores"] == 2
    assert proxmox.plan(api, sim.lab).is_empty


def test_a_stopped_vm_is_started_and_a_stopped_drifted_one_reconciled_then_started(sim):
    provision(sim)
    api = proxmox.connect(sim.lab)
    node = sim.lab.proxmox.node
    stopped, drifted = sim.lab.agents
    for vm in (stopped, drifted):
        proxmox.wait_task(api, node, api.nodes(node).qemu(vm.vmid).status.stop.post(), what="test stop")
    api.nodes(node).qemu(drifted.vmid).config.put(memory=2048)
    plan = proxmox.plan(api, sim.lab)
    assert {v.name: v.action for v in plan.items if v.action != "unchanged"} == {stopped.name: "start",
                                                                                drifted.name: "drift"}
    proxmox.apply(api, sim.lab, plan, reconcile=True)
    proxmox.wait_agents(api, sim.lab, [stopped.name, drifted.name], timeout=10)
    assert proxmox.plan(api, sim.lab).is_empty
    assert set(proxmox.vm_table(api, sim.lab)["status"]) == {"running"}


def test_capacity_check_refuses_over_commit_and_says_by_how_much(sim):
    api = proxmox.connect(sim.lab)
    cap = proxmox.capacity(api, sim.lab)
    plan = proxmox.plan(api, sim.lab)
    tight = proxmox.check_capacity(plan, sim.lab, cap, memory_overcommit=12 * 1024**3 / cap.memory_total / 2)
    assert not tight.ok
    assert "GiB over" in tight.problems[0] and tight.problems[0].startswith("memory")
    roomy = proxmox.check_capacity(plan, sim.lab, cap, memory_overcommit=1.0)
    assert roomy.ok and list(roomy.usage["resource"])[0] == "memory (GiB)"


def test_destroy_needs_the_name_and_the_confirmation(sim):
    provision(sim)
    api = proxmox.connect(sim.lab)
    node = sim.lab.proxmox.node
    proxmox.wait_task(api, node, api.nodes(node).qemu(9000).clone.post(newid=150, name="scratch", full=1),
                      what="test clone")
    plan = proxmox.plan(api, sim.lab, destroy=["scratch"])
    assert [v.name for v in plan.of("destroy")] == ["scratch"]
    proxmox.apply(api, sim.lab, plan)  # not confirmed: nothing happens
    assert any(v.name == "scratch" for v in proxmox.list_vms(api))
    proxmox.apply(api, sim.lab, plan, confirm_destroy=True)
    assert not any(v.name == "scratch" for v in proxmox.list_vms(api))
    with pytest.raises(ProxmoxError, match="is a template"):
        proxmox.plan(api, sim.lab, destroy=["ubuntu-2204-cloudinit"])
    with pytest.raises(ProxmoxError, match="is a node of the lab file"):
        proxmox.plan(api, sim.lab, destroy=[sim.lab.agents[-1].name])


# -- faults -----------------------------------------------------------------------------------------------


def test_task_error_surfaces_pve_message(sim):
    sim.handle.call(sim.pve.fail_next_task, "qmclone", "clone failed: no space left on device")
    api = proxmox.connect(sim.lab)
    with pytest.raises(ProxmoxError, match=r"clone 9000 -> 120 \(k3s-master\) failed: clone failed: no space left"):
        proxmox.apply(api, sim.lab, proxmox.plan(api, sim.lab))


def test_locked_vm_is_retried_with_backoff_then_reported(sim):
    provision(sim)
    api = proxmox.connect(sim.lab)
    worker = sim.lab.agents[0]
    api.nodes(sim.lab.proxmox.node).qemu(worker.vmid).config.put(cores=3)
    sim.handle.call(sim.pve.hold_lock, worker.vmid, "backup")
    plan = proxmox.plan(api, sim.lab)
    with pytest.raises(ProxmoxError, match=r"stayed locked for 1 s .*locked \(backup\)"):
        proxmox.apply(api, sim.lab, plan, reconcile=True, lock_timeout=1)

    # A lock that is released while labkit backs off: the change goes through.
    threading.Timer(0.5, sim.handle.call, (sim.pve.release_lock, worker.vmid)).start()
    proxmox.apply(api, sim.lab, plan, reconcile=True, lock_timeout=20)
    assert vm_config(sim, worker.vmid)["cores"] == 2


def test_agent_that_never_answers_times_out_naming_the_vm_and_what_to_check(sim):
    worker = sim.lab.agents[0]
    sim.handle.call(sim.pve.faults.agent_down.add, worker.vmid)
    api = proxmox.connect(sim.lab)
    proxmox.apply(api, sim.lab, proxmox.plan(api, sim.lab))
    with pytest.raises(ProxmoxError) as err:
        proxmox.wait_agents(api, sim.lab, [n.name for n in sim.lab.nodes], timeout=1)
    message = str(err.value)
    assert f"VM {worker.vmid} ({worker.name})" in message
    assert "qemu-guest-agent" in message and "agent=1" in message


# -- labkit's calls against PVE's own schema ----------------------------------------------------------

SCHEMA = json.loads((REPO / "tests" / "labsim" / "data" / "pve_schema_subset.json").read_text())
TEMPLATED = [(r"/nodes/[^/]+", "/nodes/{node}"), (r"/qemu/\d+", "/qemu/{vmid}"),
             (r"/tasks/UPID:[^/]+", "/tasks/{upid}"), (r"/storage/[^/]+", "/storage/{storage}")]


def _schema_key(request: requests.PreparedRequest) -> tuple[str, set[str]]:
    url = urlsplit(request.url or "")
    path = unquote(url.path).removeprefix("/api2/json")
    for pattern, name in TEMPLATED:
        path = re.sub(pattern, name, path)
    names = set(parse_qs(url.query)) | set(parse_qs(request.body or "" if isinstance(request.body, str) else ""))
    return f"{request.method} {path}", {re.sub(r"\d+$", "[n]", n) if n[-1].isdigit() else n for n in names}


def test_every_call_labkit_makes_exists_in_pve_schema_with_its_parameters(sim):
    api = proxmox.connect(sim.lab)
    seen: list[requests.PreparedRequest] = []
    api._store["session"].hooks["response"].append(lambda response, **_: seen.append(response.request))
    lab = sim.lab
    proxmox.capacity(api, lab)
    proxmox.apply(api, lab, proxmox.plan(api, lab), agent_timeout=10)
    api.nodes(lab.proxmox.node).qemu(lab.agents[0].vmid).config.put(cores=3)  # drift, for a reconcile
    proxmox.wait_task(api, lab.proxmox.node, api.nodes(lab.proxmox.node).qemu(9000).clone.post(
        newid=150, name="scratch", full=1), what="test clone")
    plan = proxmox.plan(api, lab, destroy=["scratch"])
    proxmox.apply(api, lab, plan, reconcile=True, confirm_destroy=True, agent_timeout=10)
    proxmox.vm_table(api, lab)
    proxmox.task_ids(api, lab)
    keys = {_schema_key(r)[0] for r in seen}
    assert {"POST /nodes/{node}/qemu/{vmid}/clone", "PUT /nodes/{node}/qemu/{vmid}/resize",
            "POST /nodes/{node}/qemu/{vmid}/status/reboot", "DELETE /nodes/{node}/qemu/{vmid}",
            "GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces"} <= keys
    for request in seen:
        key, params = _schema_key(request)
        assert key in SCHEMA, f"{key} is not a PVE API method"
        unknown = params - set(SCHEMA[key]["params"])
        assert not unknown, f"{key}: PVE has no parameter(s) {sorted(unknown)}"


def test_a_host_that_stops_answering_is_named_not_a_raw_connection_error(tmp_path):
    with embedded_lab(tmp_path) as sim:
        api = proxmox.connect(sim.lab)
        node = sim.lab.proxmox.node
        upid = api.nodes(node).qemu(9000).clone.post(newid=150, name="scratch", full=1)
    with pytest.raises(ProxmoxError, match=r"^clone scratch: task status: no answer from Proxmox VE \(\[Errno 111\] "
                                           r"Connection refused\); is the host up") as failure:
        proxmox.wait_task(api, node, upid, what="clone scratch")
    assert "HTTPSConnectionPool" not in str(failure.value) and "/api2/json" not in str(failure.value)


def test_waiting_for_the_agent_of_a_stopped_vm_fails_at_once_saying_why(sim):
    """A VM the plan left stopped (drift without reconcile) never boots: no 5-minute wait for its agent."""
    api = proxmox.connect(sim.lab)
    master = sim.lab.master
    proxmox.wait_task(api, sim.lab.proxmox.node, api.nodes(sim.lab.proxmox.node).qemu(9000).clone.post(
        newid=master.vmid, name=master.name, full=1), what="clone")  # cloned, never configured nor started
    assert proxmox.plan(api, sim.lab).changes()[0].action == "drift"
    with pytest.raises(ProxmoxError, match=rf"^VM {master.vmid} \({master.name}\) is not running, so its guest "
                                           r"agent cannot answer\. .*reconcile=True"):
        proxmox.wait_agent(api, sim.lab, master, timeout=30)


def test_a_vm_without_its_disk_yet_is_named_in_the_plan_error(tmp_path):
    """A clone in progress (or one a crash interrupted) has no disk yet: the plan says which VM and what to do."""
    with embedded_lab(tmp_path, time_scale=0.05) as sim:  # a full clone takes about a second
        api = proxmox.connect(sim.lab)
        master = sim.lab.master
        api.nodes(sim.lab.proxmox.node).qemu(9000).clone.post(newid=master.vmid, name=master.name, full=1)
        with pytest.raises(ProxmoxError, match=rf"^VM {master.vmid} \({master.name}\) has no boot disk: its clone "
                                               rf"is still running \(lock: clone\)\. .*qm destroy {master.vmid}"):
            proxmox.plan(api, sim.lab)
