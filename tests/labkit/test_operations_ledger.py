"""The operations the twin performed for 01-03 on the session's series lab, as its ledger
(``operations.jsonl``) records them, and the critical path of each notebook computed from it
(benchmarks/bench_series_path.py): what the series benchmark reads, checked on a real run."""

from __future__ import annotations

from benchmarks.bench_series_path import notebook_windows, paths, windows
from labsim.operations import LEDGER_FILE, read_ledger
from tests.labfiles import state_dir
from tests.labkit.series import Series


def test_the_ledger_holds_01_to_03s_operations_and_each_notebook_has_a_path(series: Series) -> None:
    ops = read_ledger(state_dir(series.lab_file) / LEDGER_FILE)
    named = [op.what for op in ops]
    vms = [vm.vmid for vm in series.lab.nodes]
    for vmid in vms:  # 01: each VM cloned from the template, started, booted
        assert any(w.startswith("pve full clone") and w.endswith(f"-> {vmid}") for w in named), (vmid, named)
        assert f"vm {vmid} guest boot" in named and f"pve start {vmid}" in named
    nodes = [node.name for node in series.lab.nodes]
    assert {f"{name} cloud-init" for name in nodes} <= set(named)
    # 02: the server started, the agents joined; 03: nfs-common on every node
    servers = [node.name for node in series.lab.nodes if node.role == "server"]
    agents = [node.name for node in series.lab.nodes if node.role == "agent"]
    assert {f"{name} k3s server start" for name in servers} <= set(named)
    assert {f"{name} k3s agent join" for name in agents} <= set(named)
    assert {f"{name} apt install nfs-common" for name in nodes} <= set(named)
    # 03's chart installs: helm-install Jobs run, their workloads' pods pulled and started
    installs = [op for op in ops if op.what.startswith("pod kube-system/helm-install-metallb")]
    assert any("run to completion" in op.what and op.modelled_s > 0 for op in installs), installs
    assert any(op.what.startswith("pod infra/cert-manager-") and op.modelled_s > 0 for op in ops)
    assert all(op.start <= op.end for op in ops)

    built = [series.built["01-02"], series.built["03"]]
    found = {p.window.name: p for folder in built
             for p in paths(ops, windows(min(op.start for op in ops), max(op.end for op in ops),
                                         notebook_windows(folder)))}
    assert {"01-provision-vms", "02-bootstrap-k3s", "03-core-infra"} <= set(found)
    assert any(op.what.startswith("pve full clone") for op in found["01-provision-vms"].chain)
    assert any("k3s server start" in op.what for op in found["02-bootstrap-k3s"].chain)
    assert any(op.what.startswith("pod ") for op in found["03-core-infra"].chain)
