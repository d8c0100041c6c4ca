"""Jobs run to completion (or fail past backoffLimit), CronJobs fire when the lab clock passes
their schedule, DaemonSets put one pod on every node."""

from __future__ import annotations

import asyncio

from labsim.clock import Clock
from tests.labsim.controller_lab import InProcessCluster, running, wait_for

CONTAINER = {"name": "task", "image": "busybox:1.36", "command": ["true"]}


def job(name: str, **spec) -> dict:
    annotations = spec.pop("annotations", {})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
            "spec": {**spec, "template": {"metadata": {"annotations": annotations},
                                          "spec": {"containers": [CONTAINER], "restartPolicy": "Never"}}}}


def get(cluster: InProcessCluster, api_version: str, kind: str, name: str, ns: str | None = "default") -> dict | None:
    return cluster.store.get(cluster.store.resource(api_version, kind), ns, name)


def conditions(obj: dict | None) -> dict[str, str]:
    return {c["type"]: c["status"] for c in ((obj or {}).get("status") or {}).get("conditions") or []}


async def test_job_completes():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    async with running(cluster):
        cluster.store.create(job("once", completions=3, parallelism=2))
        done = await wait_for(lambda: conditions(get(cluster, "batch/v1", "Job", "once")).get("Complete") == "True"
                              and get(cluster, "batch/v1", "Job", "once"))
        status = done["status"]
        assert status["succeeded"] == 3 and "active" not in status
        assert conditions(done)["SuccessCriteriaMet"] == "True"
        assert status["startTime"] <= status["completionTime"]
        pods = cluster.store.list(cluster.store.resource("v1", "Pod"), "default", labels={"job-name": "once"})
        assert len(pods) == 3 and {p["status"]["phase"] for p in pods} == {"Succeeded"}
        terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"


async def test_job_fails_past_backoff_limit():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    async with running(cluster):
        cluster.store.create(job("broken", backoffLimit=1, annotations={"sim.labsim.io/exit-code": "2"}))
        failed = await wait_for(lambda: conditions(get(cluster, "batch/v1", "Job", "broken")).get("Failed") == "True"
                                and get(cluster, "batch/v1", "Job", "broken"))
        assert failed["status"]["failed"] == 2
        reasons = [c.get("reason") for c in failed["status"]["conditions"]]
        assert "BackoffLimitExceeded" in reasons


async def test_cronjob_fires_when_the_lab_clock_advances():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    jobs = cluster.store.resource("batch/v1", "Job")
    async with running(cluster):
        cluster.store.create({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "backup", "namespace": "default"},
            "spec": {"schedule": "0 3 * * *", "successfulJobsHistoryLimit": 2,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [CONTAINER],
                                                                     "restartPolicy": "OnFailure"}}}}}})
        await wait_for(lambda: "status" in get(cluster, "batch/v1", "CronJob", "backup"))
        assert cluster.store.list(jobs, "default") == []
        for day in range(1, 4):
            cluster.clock.advance(24 * 3600)
            await wait_for(lambda n=day: len(cluster.store.list(jobs, "default")) == min(n, 2) and all(
                conditions(j).get("Complete") == "True" for j in cluster.store.list(jobs, "default")))
        cron = get(cluster, "batch/v1", "CronJob", "backup")
        assert cron["status"]["lastScheduleTime"].endswith("T03:00:00Z")
        assert "lastSuccessfulTime" in cron["status"]
        names = sorted(j["metadata"]["name"] for j in cluster.store.list(jobs, "default"))
        scheduled = [j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
                     for j in cluster.store.list(jobs, "default")]
        assert all(name.startswith("backup-") for name in names) and all(s.endswith("T03:00:00Z") for s in scheduled)


async def test_daemonset_runs_on_every_node_and_follows_new_nodes():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    cluster.add_node("node-b", 2, taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
    pods = cluster.store.resource("v1", "Pod")
    async with running(cluster):
        cluster.store.create({
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}}}})

        def running_on() -> set[str]:
            return {p["spec"]["nodeName"] for p in cluster.store.list(pods, "kube-system")
                    if p["status"].get("phase") == "Running"}

        await wait_for(lambda: running_on() == {"node-a"})  # the tainted node is not tolerated
        cluster.add_node("node-c", 3)
        cluster.set_node("node-a", lambda n: n["spec"].update(unschedulable=True))  # cordon: daemons stay
        await wait_for(lambda: running_on() == {"node-a", "node-c"})
        ds = await wait_for(lambda: (d := get(cluster, "apps/v1", "DaemonSet", "agent", "kube-system"))
                            and d["status"].get("numberReady") == 2 and d)
        assert ds["status"]["desiredNumberScheduled"] == 2
        assert ds["status"]["updatedNumberScheduled"] == 2

        before = {p["metadata"]["name"] for p in cluster.store.list(pods, "kube-system")}

        def not_ready(node: dict) -> None:
            next(c for c in node["status"]["conditions"] if c["type"] == "Ready")["status"] = "Unknown"

        cluster.set_node("node-c", not_ready)  # daemons tolerate it: the pod stays, only unready
        await wait_for(lambda: get(cluster, "apps/v1", "DaemonSet", "agent", "kube-system")["status"]
                       .get("numberReady") == 1)
        cluster.clock.advance(600)
        await asyncio.sleep(0.5)
        assert {p["metadata"]["name"] for p in cluster.store.list(pods, "kube-system")} == before


async def test_job_deadline_and_ttl_on_the_lab_clock():
    cluster = InProcessCluster(Clock(0.001))  # run-seconds 1e9 must outlast the test
    cluster.add_node("node-a", 1)
    jobs = cluster.store.resource("batch/v1", "Job")
    pods = cluster.store.resource("v1", "Pod")
    async with running(cluster):
        cluster.store.create(job("slow", activeDeadlineSeconds=60, annotations={"sim.labsim.io/run-seconds": "1e9"}))
        cluster.store.create(job("tidy", ttlSecondsAfterFinished=120))
        await wait_for(lambda: conditions(get(cluster, "batch/v1", "Job", "tidy")).get("Complete") == "True"
                       and get(cluster, "batch/v1", "Job", "slow").get("status", {}).get("active") == 1)
        cluster.clock.advance(61)
        failed = await wait_for(lambda: conditions(j := get(cluster, "batch/v1", "Job", "slow")).get("Failed") == "True"
                                and j)
        assert [c["reason"] for c in failed["status"]["conditions"] if c["type"] == "Failed"] == ["DeadlineExceeded"]
        # Its pod is stopped (the controller deletes it; the kubelet finishes the deletion a moment later).
        await wait_for(lambda: cluster.store.list(pods, "default", labels={"job-name": "slow"}) == [])
        assert get(cluster, "batch/v1", "Job", "tidy") is not None
        cluster.clock.advance(60)  # past the finished Job's TTL
        await wait_for(lambda: cluster.store.get(jobs, "default", "tidy") is None
                       and not cluster.store.list(pods, "default", labels={"job-name": "tidy"}))


async def test_cronjob_forbid_skips_while_a_run_is_active():
    cluster = InProcessCluster(Clock(0.001))
    cluster.add_node("node-a", 1)
    jobs = cluster.store.resource("batch/v1", "Job")
    async with running(cluster):
        cluster.store.create({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "long", "namespace": "default"},
            "spec": {"schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid",
                     "jobTemplate": {"spec": {"template": {
                         "metadata": {"annotations": {"sim.labsim.io/run-seconds": "1e9"}},
                         "spec": {"containers": [CONTAINER], "restartPolicy": "Never"}}}}}})
        await wait_for(lambda: "status" in get(cluster, "batch/v1", "CronJob", "long"))
        cluster.clock.advance(300)
        await wait_for(lambda: len(cluster.store.list(jobs, "default")) == 1)
        cluster.clock.advance(300)
        await wait_for(lambda: any(e["reason"] == "JobAlreadyActive" for e in
                                   cluster.store.list(cluster.store.resource("v1", "Event"), "default")))
        assert len(cluster.store.list(jobs, "default")) == 1
        assert len(get(cluster, "batch/v1", "CronJob", "long")["status"]["active"]) == 1
