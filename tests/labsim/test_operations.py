"""The clock's ledger of modelled operations: named waits are recorded where the time is spent."""

from __future__ import annotations

from labsim.clock import Clock
from labsim.kube.controllers.kubelet import PULL_SECONDS
from labsim.operations import Ledger, Operation, read_ledger
from tests.labsim.controller_lab import InProcessCluster, running, wait_for


async def test_named_waits_are_recorded_and_unnamed_ones_not(tmp_path):
    clock = Clock(0)
    clock.ledger = Ledger(tmp_path / "operations.jsonl")
    await clock.sleep(10)  # a poll's period: nothing waits for it
    await clock.sleep(20, "pve full clone 9000 -> 101")
    clock.ledger.close()
    [op] = read_ledger(tmp_path / "operations.jsonl")
    assert (op.what, op.modelled_s) == ("pve full clone 9000 -> 101", 20.0) and op.start <= op.end
    assert list(clock.ledger.entries) == [op]
    assert read_ledger(tmp_path / "absent.jsonl") == []


async def test_a_rollout_records_each_pods_image_pull_and_start():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}
    pods = cluster.store.resource("v1", "Pod")
    async with running(cluster):
        cluster.store.create(deployment)
        running_pods = await wait_for(lambda: [p for p in cluster.store.list(pods, "default")
                                               if p["status"].get("phase") == "Running"][1:] and
                                      cluster.store.list(pods, "default"))
    started = {op.what: op for op in cluster.clock.ledger.entries if op.what.startswith("pod default/web-")}
    assert set(started) == {f"pod default/{p['metadata']['name']} image pull and start on node-a"
                            for p in running_pods}
    assert all(op.modelled_s == PULL_SECONDS > 0 and op.start <= op.end for op in started.values())
    assert all(isinstance(op, Operation) for op in started.values())
