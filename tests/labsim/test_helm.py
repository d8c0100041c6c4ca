"""Real helm (4 and 3) against the embedded lab's API: a small chart made here, installed,
upgraded with --wait, listed, rolled back and uninstalled (release Secrets arrive as protobuf;
helm 4 applies server-side and waits with watches)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.labsim.kube_fixtures import RunningCluster

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: hello\nversion: 0.1.0\nappVersion: '1.0'\n",
    "values.yaml": "replicaCount: 1\nimage: nginx:1.27\ngreeting: hello\n",
    "templates/deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels: {app: {{ .Release.Name }}}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
      - name: web
        image: {{ .Values.image }}
        ports: [{containerPort: 80, name: http}]
        env: [{name: GREETING, valueFrom: {configMapKeyRef: {name: {{ .Release.Name }}, key: greeting}}}]
""",
    "templates/service.yaml": """apiVersion: v1
kind: Service
metadata: {name: {{ .Release.Name }}}
spec:
  selector: {app: {{ .Release.Name }}}
  ports: [{port: 80, targetPort: http}]
""",
    "templates/configmap.yaml": """apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}}
data: {greeting: {{ .Values.greeting | quote }}}
""",
}


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    root = tmp_path / "hello"
    for name, text in CHART.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("helm", ["helm4", "helm3"])
def test_release_lifecycle(kube: RunningCluster, chart: Path, helm: str) -> None:
    def run(*args: str) -> str:
        return kube.tool(helm, *args).stdout

    def get(kind: str, name: str) -> dict:
        return json.loads(kube.kubectl("get", kind, name, "-o", "json").stdout)

    assert "STATUS: deployed" in run("install", "demo", str(chart), "--wait", "--timeout", "60s")
    assert get("deploy", "demo")["status"]["readyReplicas"] == 1
    secrets = kube.kubectl("get", "secrets", "-l", "owner=helm", "-o", "name").stdout.split()
    assert secrets == ["secret/sh.helm.release.v1.demo.v1"]
    run("upgrade", "demo", str(chart), "--wait", "--timeout", "60s", "--set", "replicaCount=2",
        "--set", "greeting=bonjour")
    assert get("deploy", "demo")["status"]["readyReplicas"] == 2
    assert get("configmap", "demo")["data"] == {"greeting": "bonjour"}
    releases = json.loads(run("list", "-o", "json"))
    assert [(r["name"], r["revision"], r["status"]) for r in releases] == [("demo", "2", "deployed")]
    run("rollback", "demo", "1", "--wait", "--timeout", "60s")
    history = json.loads(run("history", "demo", "-o", "json"))
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert get("deploy", "demo")["spec"]["replicas"] == 1
    assert get("configmap", "demo")["data"] == {"greeting": "hello"}
    run("uninstall", "demo", "--wait")
    assert json.loads(run("list", "-o", "json")) == []
    leftovers = kube.kubectl("get", "deploy,svc,cm,secrets", "-l", "app=demo", "-o", "name").stdout.split()
    assert leftovers == []
