"""Scheduling constraints (cordon, taints, nodeSelector, requests), a node going NotReady,
Services and their endpoints, namespace deletion, garbage collection, PDB status."""

from __future__ import annotations

import asyncio
import ipaddress

from labsim.k3s.addons import k3s_crds, traefik
from tests.labsim.controller_lab import InProcessCluster, running, wait_for


def pod(name: str, ns: str = "default", labels: dict | None = None, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
            "spec": {"containers": [{"name": "main", "image": "nginx:1.25", "ports": [
                {"name": "http", "containerPort": 8080}]}], **spec}}


def replicaset(name: str, replicas: int, ns: str = "default") -> dict:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "main", "image": "nginx:1.25"}]}}}}


class Lab:
    def __init__(self, cluster: InProcessCluster) -> None:
        self.store = cluster.store
        self.pods = cluster.store.resource("v1", "Pod")

    def pod(self, name: str, ns: str = "default") -> dict | None:
        return self.store.get(self.pods, ns, name)

    def phase(self, name: str) -> str | None:
        return ((self.pod(name) or {}).get("status") or {}).get("phase")

    def scheduled(self, name: str) -> dict:
        return next((c for c in self.pod(name)["status"].get("conditions") or [] if c["type"] == "PodScheduled"), {})

    def ready_count(self, app: str) -> int:
        return sum(1 for p in self.store.list(self.pods, "default", labels={"app": app})
                   if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or []))


async def test_cordon_taints_selectors_and_requests_are_respected():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1, cpu="2", labels={"disk": "ssd"})
    cluster.add_node("node-b", 2, cpu="2", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    lab = Lab(cluster)
    async with running(cluster):
        cluster.set_node("node-a", lambda n: n["spec"].update(unschedulable=True))
        lab.store.create(pod("first"))
        await wait_for(lambda: lab.scheduled("first").get("status") == "False")
        message = lab.scheduled("first")["message"]
        assert message.startswith("0/2 nodes are available: ")
        assert "1 node(s) were unschedulable" in message and "1 node(s) had untolerated taint {dedicated: gpu}" in message
        events = lab.store.list(lab.store.resource("v1", "Event"), "default")
        assert any(e["reason"] == "FailedScheduling" and e["type"] == "Warning" for e in events)

        cluster.set_node("node-a", lambda n: n["spec"].pop("unschedulable"))  # uncordon
        await wait_for(lambda: lab.phase("first") == "Running")
        assert lab.pod("first")["spec"]["nodeName"] == "node-a"

        tolerant = pod("tolerant", nodeSelector={"kubernetes.io/hostname": "node-b"},
                       tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}])
        lab.store.create(tolerant)
        await wait_for(lambda: lab.phase("tolerant") == "Running")
        assert lab.pod("tolerant")["spec"]["nodeName"] == "node-b"

        lab.store.create(pod("ssd", nodeSelector={"disk": "ssd"}))
        await wait_for(lambda: lab.phase("ssd") == "Running")
        assert lab.pod("ssd")["spec"]["nodeName"] == "node-a"

        hungry = pod("hungry")
        hungry["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1500m", "memory": "1Gi"}}
        lab.store.create(hungry)
        await wait_for(lambda: lab.phase("hungry") == "Running")
        greedy = pod("greedy", affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}})
        greedy["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1"}}
        lab.store.create(greedy)
        await wait_for(lambda: lab.scheduled("greedy").get("status") == "False")
        assert "1 Insufficient cpu" in lab.scheduled("greedy")["message"]
        lab.store.delete(lab.pods, "default", "hungry")  # frees the cpu
        await wait_for(lambda: lab.phase("greedy") == "Running")


async def test_pods_on_a_not_ready_node_are_evicted_and_replaced():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    cluster.add_node("node-b", 2)
    lab = Lab(cluster)
    nodes = lab.store.resource("v1", "Node")
    async with running(cluster):
        lab.store.create(replicaset("web", 4))
        await wait_for(lambda: lab.ready_count("web") == 4)
        on_b = {p["metadata"]["name"] for p in lab.store.list(lab.pods, "default") if p["spec"]["nodeName"] == "node-b"}
        assert on_b

        def not_ready(node: dict) -> None:
            next(c for c in node["status"]["conditions"] if c["type"] == "Ready")["status"] = "Unknown"

        cluster.set_node("node-b", not_ready)
        await wait_for(lambda: lab.ready_count("web") == 4 - len(on_b))  # marked not ready, not yet evicted
        taints = {(t["key"], t["effect"]) for t in lab.store.get(nodes, None, "node-b")["spec"]["taints"]}
        assert taints == {("node.kubernetes.io/unreachable", "NoSchedule"), ("node.kubernetes.io/unreachable", "NoExecute")}
        assert {p["metadata"]["name"] for p in lab.store.list(lab.pods, "default")} >= on_b

        cluster.clock.advance(301)  # past the default tolerationSeconds
        await wait_for(lambda: lab.ready_count("web") == 4 and all(
            p["spec"]["nodeName"] == "node-a" for p in lab.store.list(lab.pods, "default")))
        events = lab.store.list(lab.store.resource("v1", "Event"), "default")
        assert sum(1 for e in events if e["reason"] == "TaintManagerEviction") == len(on_b)
        assert any(e["reason"] == "NodeNotReady" and e["involvedObject"]["name"] == "node-b" for e in events)


async def test_node_version_change_restarts_its_pods():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    lab = Lab(cluster)
    async with running(cluster):
        lab.store.create(pod("app"))
        await wait_for(lambda: lab.phase("app") == "Running")
        before = lab.pod("app")["status"]["containerStatuses"][0]

        def upgrade(node: dict) -> None:
            node["status"]["nodeInfo"].update(kubeletVersion="v1.35.0+k3s1", bootID="boot-2")

        cluster.set_node("node-a", upgrade)
        after = await wait_for(lambda: (cs := lab.pod("app")["status"]["containerStatuses"][0])["restartCount"] == 1
                               and cs)
        assert after["containerID"] != before["containerID"] and after["ready"]
        assert after["lastState"]["terminated"]["containerID"] == before["containerID"]


async def test_service_gets_a_cluster_ip_and_endpoints():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    lab = Lab(cluster)
    services = lab.store.resource("v1", "Service")
    endpoints = lab.store.resource("v1", "Endpoints")
    slices = lab.store.resource("discovery.k8s.io/v1", "EndpointSlice")
    async with running(cluster):
        for name in ("one", "two"):
            lab.store.create(pod(name, labels={"app": "web"}))
        lab.store.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                          "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80,
                                                                          "targetPort": "http"}]}})
        ep = await wait_for(lambda: len(((lab.store.get(endpoints, "default", "web") or {}).get("subsets") or [{}])[0]
                                        .get("addresses") or []) == 2 and lab.store.get(endpoints, "default", "web"))
        svc = lab.store.get(services, "default", "web")
        assert ipaddress.ip_address(svc["spec"]["clusterIP"]) in ipaddress.ip_network(cluster.service_cidr)
        assert svc["spec"]["clusterIPs"] == [svc["spec"]["clusterIP"]]
        (subset,) = ep["subsets"]
        assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
        assert {a["targetRef"]["name"] for a in subset["addresses"]} == {"one", "two"}
        (eps,) = lab.store.list(slices, "default", labels={"kubernetes.io/service-name": "web"})
        assert {e["targetRef"]["name"] for e in eps["endpoints"]} == {"one", "two"}
        assert all(e["conditions"]["ready"] for e in eps["endpoints"])

        relabelled = lab.pod("two")
        relabelled["metadata"]["labels"] = {"app": "other"}
        lab.store.update(relabelled)
        await wait_for(lambda: [a["targetRef"]["name"] for a in
                                lab.store.get(endpoints, "default", "web")["subsets"][0]["addresses"]] == ["one"])
        lab.store.delete(services, "default", "web")
        await wait_for(lambda: lab.store.get(endpoints, "default", "web") is None
                       and not lab.store.list(slices, "default"))


async def test_namespace_deletion_and_garbage_collection():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    lab = Lab(cluster)
    namespaces = lab.store.resource("v1", "Namespace")
    replicasets = lab.store.resource("apps/v1", "ReplicaSet")
    configmaps = lab.store.resource("v1", "ConfigMap")
    async with running(cluster):
        lab.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "scratch"}})
        await wait_for(lambda: lab.store.get(lab.store.resource("v1", "ServiceAccount"), "scratch", "default")
                       and lab.store.get(configmaps, "scratch", "kube-root-ca.crt"))
        lab.store.create(replicaset("web", 2, ns="scratch"))
        await wait_for(lambda: len(lab.store.list(lab.pods, "scratch")) == 2)

        # A dependent whose owner is gone (a race, a restore) is collected.
        owner = lab.store.get(replicasets, "scratch", "web")
        stray = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "stray", "namespace": "scratch", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone", "uid": "0000-gone"}]}}
        kept = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "kept", "namespace": "scratch", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone", "uid": "0000-gone"},
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": owner["metadata"]["uid"]}]}}
        lab.store.create(stray)
        lab.store.create(kept)
        await wait_for(lambda: lab.store.get(configmaps, "scratch", "stray") is None
                       and len(lab.store.get(configmaps, "scratch", "kept")["metadata"]["ownerReferences"]) == 1)

        # A finalizer holds the namespace in Terminating until it is removed.
        held = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "held", "namespace": "scratch", "finalizers": ["example.com/hold"]}}
        lab.store.create(held)
        lab.store.delete(namespaces, None, "scratch")
        await wait_for(lambda: lab.store.list(lab.pods, "scratch") == [])
        space = lab.store.get(namespaces, None, "scratch")
        assert space["status"]["phase"] == "Terminating"
        assert [c["metadata"]["name"] for c in lab.store.list(configmaps, "scratch")] == ["held"]
        held = lab.store.get(configmaps, "scratch", "held")
        held["metadata"]["finalizers"] = []
        lab.store.update(held)
        await wait_for(lambda: lab.store.get(namespaces, None, "scratch") is None)


async def test_pod_disruption_budget_status():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    lab = Lab(cluster)
    budgets = lab.store.resource("policy/v1", "PodDisruptionBudget")
    async with running(cluster):
        lab.store.create(replicaset("web", 3))
        lab.store.create({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                          "metadata": {"name": "web", "namespace": "default"},
                          "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})
        status = await wait_for(lambda: (s := lab.store.get(budgets, "default", "web")["status"])
                                .get("currentHealthy") == 3 and s)
        assert (status["expectedPods"], status["desiredHealthy"], status["disruptionsAllowed"]) == (3, 2, 1)


async def test_host_ports_are_not_shared_on_a_node():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    lab = Lab(cluster)
    async with running(cluster):
        for name in ("lb-1", "lb-2"):
            holder = pod(name)
            holder["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 80, "protocol": "TCP"}]
            lab.store.create(holder)
        await wait_for(lambda: lab.phase("lb-1") == "Running" and lab.scheduled("lb-2").get("status") == "False")
        assert "1 node(s) didn't have free ports for the requested pod ports" in lab.scheduled("lb-2")["message"]
        lab.store.delete(lab.pods, "default", "lb-1")
        await wait_for(lambda: lab.phase("lb-2") == "Running")


async def test_fault_annotations_image_pull_readiness_and_crash_loop():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    lab = Lab(cluster)

    def faulty(name: str, **annotations) -> dict:
        obj = pod(name)
        obj["metadata"]["annotations"] = {f"sim.labsim.io/{k.replace('_', '-')}": v for k, v in annotations.items()}
        return obj

    def waiting(name: str) -> str | None:
        statuses = lab.pod(name)["status"].get("containerStatuses") or [{"state": {}}]
        return statuses[0]["state"].get("waiting", {}).get("reason")

    async with running(cluster):
        lab.store.create(faulty("no-image", image_pull="fail"))
        lab.store.create(faulty("never-ready", ready="false"))
        lab.store.create(faulty("crasher", exit_code="1", run_seconds="3"))
        await wait_for(lambda: waiting("no-image") == "ImagePullBackOff")
        assert lab.phase("no-image") == "Pending"
        events = {e["reason"] for e in lab.store.list(lab.store.resource("v1", "Event"), "default")
                  if e["involvedObject"]["name"] == "no-image"}
        assert {"Failed", "BackOff"} <= events

        await wait_for(lambda: lab.phase("never-ready") == "Running")
        ready = next(c for c in lab.pod("never-ready")["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False" and ready["reason"] == "ContainersNotReady"

        await wait_for(lambda: waiting("crasher") == "CrashLoopBackOff")
        crashed = lab.pod("crasher")["status"]["containerStatuses"][0]
        assert crashed["restartCount"] == 1 and crashed["lastState"]["terminated"]["exitCode"] == 1
        assert "back-off 10s restarting failed container=main" in crashed["state"]["waiting"]["message"]
        cluster.clock.advance(10)  # the back-off runs on the lab clock
        await wait_for(lambda: waiting("crasher") == "CrashLoopBackOff"
                       and lab.pod("crasher")["status"]["containerStatuses"][0]["restartCount"] == 2)
        message = lab.pod("crasher")["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        assert message.startswith("back-off 20s")


async def test_a_converged_cluster_is_quiet_even_after_the_controllers_restart():
    cluster = InProcessCluster()
    for i in range(3):
        cluster.add_node(f"node-{i}", i + 1)
    store = cluster.store

    async def settled() -> int:
        """The resourceVersion once nothing has been written for a while."""
        last = -1
        while store.resource_version != last:
            last = store.resource_version
            await asyncio.sleep(0.3)
        return last

    async with running(cluster, keep_state=True):
        for obj in [*k3s_crds(), *traefik(), replicaset("web", 4)]:
            store.create(obj)
        store.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                      "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
        await wait_for(lambda: Lab(cluster).ready_count("web") == 4)
        converged = await settled()
    async with running(cluster):  # as after a restart of the lab: everything is resynced
        await settled()
        # Only k3s' Traefik moves: its pod runs a real program, which the twin restarts with the lab,
        # so its readiness goes round once (and with it its Endpoints, slice, ReplicaSet and
        # Deployment status); nothing else is written.
        moved = {(obj["kind"], obj["metadata"]["name"]) for _, obj in store.all_objects()
                 if int(obj["metadata"]["resourceVersion"]) > converged}
        assert ("Deployment", "traefik") in moved and all(name.startswith("traefik") for _, name in moved), moved
