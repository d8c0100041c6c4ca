"""/openapi/v2 (JSON and the protobuf kubectl asks for) and the IntOrString/Quantity types of the
OpenAPI documents, with real kubectl 1.32 and 1.34: `kubectl apply -f list.yaml` validates a
`kind: List` client-side, `kubectl explain` names the apimachinery types."""

from __future__ import annotations

import json

import pytest

from tests.labsim.kube_fixtures import RunningCluster

LIST = """apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: from-list-%(v)s, namespace: default}
  data: {a: "1"}
- apiVersion: v1
  kind: Service
  metadata: {name: svc-%(v)s, namespace: default}
  spec:
    selector: {app: web}
    ports: [{port: 80, targetPort: http}]
"""
BAD_LIST = """apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: bad, namespace: default}
  spec: {x: 1}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: bad, namespace: default}
  spec:
    replicas: "two"
    selector: {matchLabels: {app: bad}}
    template:
      metadata: {labels: {app: bad}}
      spec: {containers: [{name: c, image: nginx:1.27}]}
"""


@pytest.mark.parametrize("version", ["1.32", "1.34"])
def test_apply_a_list_and_explain(shared_kube: RunningCluster, version: str) -> None:
    applied = shared_kube.kubectl("apply", "-f", "-", input=LIST % {"v": version.replace(".", "")}, version=version)
    assert "configmap/from-list-" in applied.stdout and "service/svc-" in applied.stdout
    refused = shared_kube.kubectl("apply", "-f", "-", input=BAD_LIST, version=version, check=False)
    assert refused.returncode == 1
    assert 'ValidationError(ConfigMap): unknown field "spec"' in refused.stderr
    assert 'DeploymentSpec.replicas: got "string", expected "integer"' in refused.stderr

    rolling = shared_kube.kubectl("explain", "deployment.spec.strategy.rollingUpdate", version=version).stdout
    assert "maxSurge\t<IntOrString>" in rolling and "maxUnavailable\t<IntOrString>" in rolling
    resources = shared_kube.kubectl("explain", "pod.spec.containers.resources", version=version).stdout
    assert "limits\t<map[string]Quantity>" in resources and "requests\t<map[string]Quantity>" in resources
    port = shared_kube.kubectl("explain", "service.spec.ports.targetPort", version=version).stdout
    assert "FIELD: targetPort <IntOrString>" in port


def test_openapi_v2_json(shared_kube: RunningCluster) -> None:
    doc = json.loads(shared_kube.kubectl("get", "--raw", "/openapi/v2").stdout)
    assert doc["swagger"] == "2.0"
    deployments = [d for d in doc["definitions"].values() if {"group": "apps", "version": "v1", "kind": "Deployment"}
                   in d.get("x-kubernetes-group-version-kind", [])]
    assert len(deployments) == 1
    assert doc["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    assert "#/components/" not in json.dumps(doc)  # every ref points into #/definitions/
