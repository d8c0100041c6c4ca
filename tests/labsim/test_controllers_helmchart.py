"""k3s' Helm controller: a HelmChart runs a helm-install Job, then what the chart creates
appears (Traefik: Deployment, LoadBalancer Service, default IngressClass) with a Helm release
Secret; a HelmChartConfig re-runs it; deleting the HelmChart uninstalls the release."""

from __future__ import annotations

import base64
import gzip
import json

from labsim.k3s.addons import k3s_crds, traefik
from tests.labsim.controller_lab import InProcessCluster, running, wait_for


def release_doc(secret: dict) -> dict:
    return json.loads(gzip.decompress(base64.b64decode(base64.b64decode(secret["data"]["release"]))))


async def test_traefik_helmchart_installs_upgrades_and_uninstalls():
    cluster = InProcessCluster()
    cluster.add_node("node-a", 1)
    store = cluster.store
    deployments, services, secrets = (store.resource(*k) for k in (("apps/v1", "Deployment"), ("v1", "Service"),
                                                                     ("v1", "Secret")))
    async with running(cluster):
        for crd in k3s_crds():  # as k3s registers them after the API server is up
            store.create(crd)
        for chart in traefik():
            store.create(chart)
        jobs = store.resource("batch/v1", "Job")
        charts = store.resource("helm.cattle.io/v1", "HelmChart")

        def deployed(version: int) -> dict | None:
            found = store.list(secrets, "kube-system", labels={"owner": "helm", "name": "traefik", "status": "deployed"})
            return found[0] if found and found[0]["metadata"]["labels"]["version"] == str(version) else None

        await wait_for(lambda: deployed(1))
        job = store.get(jobs, "kube-system", "helm-install-traefik")
        assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
        assert store.get(charts, "kube-system", "traefik")["status"]["jobName"] == "helm-install-traefik"
        bindings = store.resource("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")
        assert store.get(bindings, None, "helm-kube-system-traefik")["subjects"][0]["name"] == "helm-traefik"
        doc = release_doc(deployed(1))
        assert doc["info"]["status"] == "deployed" and doc["chart"]["metadata"]["name"] == "traefik"
        assert doc["config"]["image"]["repository"] == "rancher/mirrored-library-traefik"
        # the service controller allocates the ClusterIP after the release is recorded
        await wait_for(lambda: store.get(services, "kube-system", "traefik")["spec"].get("clusterIP"))
        svc = store.get(services, "kube-system", "traefik")
        assert svc["spec"]["type"] == "LoadBalancer"
        assert [p["port"] for p in svc["spec"]["ports"]] == [80, 443]
        ingress_class = store.get(store.resource("networking.k8s.io/v1", "IngressClass"), None, "traefik")
        assert ingress_class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"
        assert store.get(store.resource("apiextensions.k8s.io/v1", "CustomResourceDefinition"), None,
                         "ingressroutes.traefik.io")
        await wait_for(lambda: (store.get(deployments, "kube-system", "traefik").get("status") or {})
                       .get("availableReplicas") == 1)

        # Traefik reports its Service's load-balancer address on the Ingresses it serves.
        ingresses = store.resource("networking.k8s.io/v1", "Ingress")
        store.create({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                      "metadata": {"name": "site", "namespace": "default"},
                      "spec": {"rules": [{"host": "site.home.example.com"}]}})
        svc = store.get(services, "kube-system", "traefik")
        svc["status"] = {"loadBalancer": {"ingress": [{"ip": "127.9.0.100", "ipMode": "VIP"}]}}
        store.update(svc, subresource="status")
        await wait_for(lambda: (store.get(ingresses, "default", "site").get("status") or {}).get("loadBalancer")
                       == {"ingress": [{"ip": "127.9.0.100"}]})

        store.create({"apiVersion": "helm.cattle.io/v1", "kind": "HelmChartConfig",
                      "metadata": {"name": "traefik", "namespace": "kube-system"},
                      "spec": {"valuesContent": "deployment:\n  replicas: 2\n"}})
        await wait_for(lambda: deployed(2) and store.get(deployments, "kube-system", "traefik")["spec"]["replicas"] == 2)
        upgraded = store.get(services, "kube-system", "traefik")  # an upgrade keeps what was allocated
        assert upgraded["spec"]["clusterIP"] == svc["spec"]["clusterIP"]
        assert [p["nodePort"] for p in upgraded["spec"]["ports"]] == [p["nodePort"] for p in svc["spec"]["ports"]]
        assert release_doc(deployed(2))["info"]["description"] == "Upgrade complete"

        store.delete(charts, "kube-system", "traefik")
        await wait_for(lambda: store.get(charts, "kube-system", "traefik") is None)
        assert store.get(deployments, "kube-system", "traefik") is None
        assert store.get(services, "kube-system", "traefik") is None
        assert store.get(bindings, None, "helm-kube-system-traefik") is None
        assert store.list(secrets, "kube-system", labels={"owner": "helm", "name": "traefik"}) == []
        assert store.list(secrets, "kube-system", labels={"owner": "helm", "name": "traefik-crd"})  # still there
