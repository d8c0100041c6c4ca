"""Deployments and ReplicaSets: pods reach Running with complete status, scale up and down,
roll out a new template within maxSurge/maxUnavailable, and report what rollout status reads."""

from __future__ import annotations

import asyncio
import ipaddress

from tests.labsim.controller_lab import InProcessCluster, running, wait_for


def deployment(name: str, replicas: int, image: str = "nginx:1.25", **strategy) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     **({"strategy": strategy} if strategy else {}),
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": image,
                                                           "ports": [{"name": "http", "containerPort": 80}]}]}}}}


def rolled_out(cluster: InProcessCluster, name: str) -> bool:
    """What `kubectl rollout status` waits for."""
    d = cluster.store.get(cluster.store.resource("apps/v1", "Deployment"), "default", name)
    st, want = d.get("status") or {}, d["spec"]["replicas"]
    return (st.get("observedGeneration") == d["metadata"]["generation"]
            and st.get("updatedReplicas", 0) == want and st.get("replicas", 0) == want
            and st.get("availableReplicas", 0) == want)


def pods(cluster: InProcessCluster, **labels) -> list[dict]:
    return cluster.store.list(cluster.store.resource("v1", "Pod"), "default", labels=labels or None)


def active_pods(cluster: InProcessCluster, **labels) -> list[dict]:
    """What a Deployment counts: not those Terminating (deleted, their kubelet stopping them)."""
    return [p for p in pods(cluster, **labels) if not p["metadata"].get("deletionTimestamp")]


def ready_pods(cluster: InProcessCluster, **labels) -> list[dict]:
    return [p for p in pods(cluster, **labels) if p["status"].get("phase") == "Running"
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])]


def after_every_pod_event(cluster: InProcessCluster, observe) -> asyncio.Task:
    """Call ``observe()`` after each pod write: intermediate states a poll could miss are seen."""

    async def follow() -> None:
        async for _ in cluster.store.subscribe(cluster.store.resource("v1", "Pod")):
            observe()

    return asyncio.create_task(follow())


async def test_deployment_pods_run_with_complete_status():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    cluster.add_node("node-b", 2)
    async with running(cluster):
        cluster.store.create(deployment("web", 3))
        await wait_for(lambda: rolled_out(cluster, "web"))
        found = pods(cluster, app="web")
        assert len(found) == 3
        for pod in found:
            status = pod["status"]
            assert status["phase"] == "Running"
            assert status["hostIP"].startswith("127.9.0.")
            node_index = (pod["spec"]["nodeName"][-1] == "a" and 1) or 2
            assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network(cluster.node_pod_cidr(node_index))
            types = {c["type"]: c["status"] for c in status["conditions"]}
            assert types == {"PodScheduled": "True", "Initialized": "True", "Ready": "True",
                             "ContainersReady": "True", "PodReadyToStartContainers": "True"}
            (container,) = status["containerStatuses"]
            assert container["ready"] and container["started"] and container["restartCount"] == 0
            assert container["imageID"].startswith("docker.io/library/nginx@sha256:")
            assert container["containerID"].startswith("containerd://")
            assert "running" in container["state"]
        assert len({p["status"]["podIP"] for p in found}) == 3
        assert {p["spec"]["nodeName"] for p in found} == {"node-a", "node-b"}  # spread
        (rs,) = cluster.store.list(cluster.store.resource("apps/v1", "ReplicaSet"), "default")
        assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
        assert rs["metadata"]["name"] == f"web-{rs['metadata']['labels']['pod-template-hash']}"
        conditions = {c["type"]: c["reason"] for c in
                      cluster.store.get(cluster.store.resource("apps/v1", "Deployment"), "default", "web")
                      ["status"]["conditions"]}
        assert conditions == {"Available": "MinimumReplicasAvailable", "Progressing": "NewReplicaSetAvailable"}


async def test_scale_up_and_down():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    deployments = cluster.store.resource("apps/v1", "Deployment")
    async with running(cluster):
        cluster.store.create(deployment("web", 2))
        await wait_for(lambda: rolled_out(cluster, "web"))
        for replicas in (5, 1):
            d = cluster.store.get(deployments, "default", "web")
            d["spec"]["replicas"] = replicas
            cluster.store.update(d)
            await wait_for(lambda n=replicas: rolled_out(cluster, "web") and len(pods(cluster, app="web")) == n)


async def test_rolling_update_respects_surge_and_unavailable():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    cluster.add_node("node-b", 2)
    deployments = cluster.store.resource("apps/v1", "Deployment")
    seen_max, seen_min_ready = 0, 99
    async with running(cluster):
        cluster.store.create(deployment("web", 4, type="RollingUpdate",
                                        rollingUpdate={"maxSurge": 1, "maxUnavailable": 0}))
        await wait_for(lambda: rolled_out(cluster, "web"))

        def observe() -> None:
            nonlocal seen_max, seen_min_ready
            seen_max = max(seen_max, len(active_pods(cluster, app="web")))
            seen_min_ready = min(seen_min_ready, len(ready_pods(cluster, app="web")))

        watch = after_every_pod_event(cluster, observe)
        d = cluster.store.get(deployments, "default", "web")
        d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.26"
        cluster.store.update(d)
        await wait_for(lambda: rolled_out(cluster, "web") and len(pods(cluster, app="web")) == 4 and all(
            p["spec"]["containers"][0]["image"] == "nginx:1.26" for p in pods(cluster, app="web")))
        watch.cancel()
        assert seen_max == 5  # maxSurge 1: one extra pod at a time
        assert seen_min_ready == 4  # maxUnavailable 0: a new pod is ready before an old one goes
        replicasets = cluster.store.list(cluster.store.resource("apps/v1", "ReplicaSet"), "default")
        revisions = sorted((rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], rs["spec"]["replicas"])
                           for rs in replicasets)
        assert revisions == [("1", 0), ("2", 4)]
        d = cluster.store.get(deployments, "default", "web")
        assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        events = cluster.store.list(cluster.store.resource("v1", "Event"), "default")
        assert any(e["reason"] == "ScalingReplicaSet" and "Scaled down replica set" in e["message"] for e in events)


async def test_replicaset_replaces_a_deleted_pod():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    async with running(cluster):
        cluster.store.create(deployment("web", 2))
        await wait_for(lambda: rolled_out(cluster, "web"))
        victim = pods(cluster, app="web")[0]["metadata"]["name"]
        cluster.store.delete(cluster.store.resource("v1", "Pod"), "default", victim)
        await wait_for(lambda: len(pods(cluster, app="web")) == 2
                       and victim not in {p["metadata"]["name"] for p in pods(cluster, app="web")}
                       and rolled_out(cluster, "web"))


async def test_recreate_replaces_all_pods_at_once():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    deployments = cluster.store.resource("apps/v1", "Deployment")
    mixed = False
    async with running(cluster):
        cluster.store.create(deployment("web", 3, type="Recreate"))
        await wait_for(lambda: rolled_out(cluster, "web"))

        def images() -> set[str]:
            return {p["spec"]["containers"][0]["image"] for p in pods(cluster, app="web")}

        def observe() -> None:
            nonlocal mixed
            mixed = mixed or len(images()) > 1

        watch = after_every_pod_event(cluster, observe)
        d = cluster.store.get(deployments, "default", "web")
        d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.26"
        cluster.store.update(d)
        await wait_for(lambda: rolled_out(cluster, "web") and images() == {"nginx:1.26"})
        watch.cancel()
        assert not mixed  # old and new pods never existed side by side


async def test_daemonset_rolls_out_a_new_template_one_node_at_a_time():
    cluster = InProcessCluster()
    for i in range(3):
        cluster.add_node(f"node-{i}", i + 1)
    store = cluster.store
    daemonsets = store.resource("apps/v1", "DaemonSet")
    most_down = 0
    async with running(cluster):
        store.create({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
                      "spec": {"selector": {"matchLabels": {"app": "agent"}},
                               "template": {"metadata": {"labels": {"app": "agent"}},
                                            "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}}}})

        def observe() -> None:
            nonlocal most_down
            most_down = max(most_down, 3 - len(ready_pods(cluster, app="agent")))

        def settled(image: str) -> bool:
            ds = store.get(daemonsets, "default", "agent")
            st = ds.get("status") or {}
            current = pods(cluster, app="agent")
            return (st.get("observedGeneration") == ds["metadata"]["generation"] and st.get("numberReady") == 3
                    and st.get("updatedNumberScheduled") == 3 and len(current) == 3
                    and {p["spec"]["containers"][0]["image"] for p in current} == {image})

        await wait_for(lambda: settled("agent:1"))
        most_down = 0
        watch = after_every_pod_event(cluster, observe)
        ds = store.get(daemonsets, "default", "agent")
        ds["spec"]["template"]["spec"]["containers"][0]["image"] = "agent:2"
        store.update(ds)
        await wait_for(lambda: settled("agent:2"))
        watch.cancel()
        assert most_down == 1  # maxUnavailable 1


async def test_indexed_job_runs_each_index_once():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    store = cluster.store
    jobs = store.resource("batch/v1", "Job")
    async with running(cluster):
        store.create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "shards", "namespace": "default"},
                      "spec": {"completions": 3, "parallelism": 3, "completionMode": "Indexed",
                               "template": {"spec": {"restartPolicy": "Never",
                                                     "containers": [{"name": "work", "image": "busybox:1.36"}]}}}})
        job = await wait_for(lambda: (j := store.get(jobs, "default", "shards")).get("status", {}).get("succeeded") == 3
                             and j)
        assert job["status"]["completedIndexes"] == "0-2"
        indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                         for p in pods(cluster, **{"job-name": "shards"}))
        assert indexes == ["0", "1", "2"]
