"""StatefulSets with volumeClaimTemplates on k3s' local-path StorageClass (WaitForFirstConsumer):
ordinal pods, a bound claim and a node-pinned volume per pod, ordered rolling updates."""

from __future__ import annotations

import asyncio

from tests.labsim.controller_lab import InProcessCluster, running, wait_for

LOCAL_PATH = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
              "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
              "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
              "volumeBindingMode": "WaitForFirstConsumer"}


def statefulset(replicas: int, image: str = "postgres:16") -> dict:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
            "spec": {"replicas": replicas, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}},
                                  "spec": {"containers": [{"name": "db", "image": image}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                               "spec": {"accessModes": ["ReadWriteOnce"],
                                                        "resources": {"requests": {"storage": "1Gi"}}}}]}}


def sts_done(cluster: InProcessCluster) -> dict | None:
    """What `kubectl rollout status sts/db` waits for."""
    sts = cluster.store.get(cluster.store.resource("apps/v1", "StatefulSet"), "default", "db")
    st = sts.get("status") or {}
    if st.get("observedGeneration") == sts["metadata"]["generation"] and st.get("readyReplicas") == \
            sts["spec"]["replicas"] == st.get("updatedReplicas") and st.get("currentRevision") == st.get("updateRevision"):
        return sts
    return None


async def test_statefulset_with_claims_on_local_path():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    cluster.add_node("node-b", 2)
    store = cluster.store
    pods, claims, volumes = (store.resource("v1", k) for k in ("Pod", "PersistentVolumeClaim", "PersistentVolume"))
    async with running(cluster):
        store.create(LOCAL_PATH)
        store.create(statefulset(3))
        await wait_for(lambda: sts_done(cluster))
        found = {p["metadata"]["name"]: p for p in store.list(pods, "default")}
        assert sorted(found) == ["db-0", "db-1", "db-2"]
        for name, pod in found.items():
            assert pod["spec"]["hostname"] == name and pod["spec"]["subdomain"] == "db"
            claim = store.get(claims, "default", f"data-{name}")
            assert claim["status"]["phase"] == "Bound" and claim["spec"]["storageClassName"] == "local-path"
            assert claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == pod["spec"]["nodeName"]
            volume = store.get(volumes, None, claim["spec"]["volumeName"])
            assert volume["status"]["phase"] == "Bound"
            assert volume["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
            assert volume["spec"]["hostPath"]["path"].startswith("/var/lib/rancher/k3s/storage/pvc-")
            pinned = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
            assert pinned["values"] == [pod["spec"]["nodeName"]]
        # Ordered creation: each pod started after its predecessor was created.
        created = [found[f"db-{i}"]["metadata"]["resourceVersion"] for i in range(3)]
        assert [int(v) for v in created] == sorted(int(v) for v in created)

        # A rolling update replaces every pod; each comes back on its node, with its claim.
        nodes = {name: pod["spec"]["nodeName"] for name, pod in found.items()}
        sts = store.get(store.resource("apps/v1", "StatefulSet"), "default", "db")
        sts["spec"]["template"]["spec"]["containers"][0]["image"] = "postgres:17"
        store.update(sts)
        done = await wait_for(lambda: sts_done(cluster) and all(
            p["spec"]["containers"][0]["image"] == "postgres:17" for p in store.list(pods, "default")) and sts_done(cluster))
        assert done["status"]["currentRevision"].startswith("db-")
        assert {p["metadata"]["name"]: p["spec"]["nodeName"] for p in store.list(pods, "default")} == nodes
        revisions = store.list(store.resource("apps/v1", "ControllerRevision"), "default")
        assert sorted(r["revision"] for r in revisions) == [1, 2]

        # Scaling down removes the highest ordinals and keeps their claims.
        sts = store.get(store.resource("apps/v1", "StatefulSet"), "default", "db")
        sts["spec"]["replicas"] = 1
        store.update(sts)
        await wait_for(lambda: [p["metadata"]["name"] for p in store.list(pods, "default")] == ["db-0"]
                       and sts_done(cluster))
        assert len(store.list(claims, "default")) == 3


async def test_deleting_a_claim_deletes_its_volume():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    store = cluster.store
    claims, volumes = store.resource("v1", "PersistentVolumeClaim"), store.resource("v1", "PersistentVolume")
    async with running(cluster):
        store.create({**LOCAL_PATH, "volumeBindingMode": "Immediate"})
        store.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                      "metadata": {"name": "scratch", "namespace": "default"},
                      "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}})
        claim = await wait_for(lambda: (c := store.get(claims, "default", "scratch"))["status"]["phase"] == "Bound" and c)
        assert claim["status"]["capacity"] == {"storage": "2Gi"}
        store.delete(claims, "default", "scratch")
        await wait_for(lambda: store.list(volumes) == [])


async def test_a_claim_in_use_is_deleted_only_after_its_pod():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    store = cluster.store
    claims, volumes, pods = (store.resource("v1", k) for k in ("PersistentVolumeClaim", "PersistentVolume", "Pod"))
    async with running(cluster):
        store.create(LOCAL_PATH)
        store.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                      "metadata": {"name": "data", "namespace": "default"},
                      "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user", "namespace": "default"},
                      "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}],
                               "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}})
        await wait_for(lambda: store.get(pods, "default", "user")["status"].get("phase") == "Running")
        claim = store.get(claims, "default", "data")
        assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
        store.delete(claims, "default", "data")
        await asyncio.sleep(0.2)
        terminating = store.get(claims, "default", "data")
        assert terminating["metadata"]["deletionTimestamp"] and store.list(volumes)
        store.delete(pods, "default", "user")
        await wait_for(lambda: store.get(claims, "default", "data") is None and store.list(volumes) == [])
