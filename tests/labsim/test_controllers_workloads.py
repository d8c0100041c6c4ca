"""Deployments and ReplicaSets: pods reach Running with complete status, scale up and down,
roll out a new template within maxSurge/maxUnavailable, and report what rollout status reads."""

from __future__ import annotations

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
            node_index = pod["spec"]["nodeName"][-1] == "a" and 1 or 2
            assert status["podIP"].startswith(f"10.42.{node_index}.")
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
        d = cluster.store.get(deployments, "default", "web")
        d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.26"
        cluster.store.update(d)

        def watch_progress():
            nonlocal seen_max, seen_min_ready
            current = pods(cluster, app="web")
            seen_max = max(seen_max, len(current))
            seen_min_ready = min(seen_min_ready, sum(1 for p in current if p["status"].get("phase") == "Running"
                                                     and any(c["type"] == "Ready" and c["status"] == "True"
                                                             for c in p["status"]["conditions"])))
            return rolled_out(cluster, "web") and all(
                p["spec"]["containers"][0]["image"] == "nginx:1.26" for p in current) and len(current) == 4

        await wait_for(watch_progress)
        assert seen_max <= 5  # maxSurge 1
        assert seen_min_ready >= 4 - 1  # a new pod is created and started before an old one goes
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
