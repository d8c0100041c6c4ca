"""Containers you can exec into: real kubectl (1.34 and 1.32) and the kubernetes Python client
over WebSocket against plain containers (busybox, ubuntu) run by the node shell model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from kubernetes import client
from kubernetes.stream import stream

from tests.labsim.kube_fixtures import RunningCluster
from tests.polling import wait_until

VERSIONS = ["1.34", "1.32"]

PODS = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: rt}
data: {mode: fast, "app.conf": "listen 8080\\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: rt}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: box, namespace: rt}
spec:
  containers:
  - name: main
    image: busybox:1.37
    command: [sleep, "3600"]
    workingDir: /work
    env:
    - {name: GREETING, value: hello}
    - name: MODE
      valueFrom: {configMapKeyRef: {name: settings, key: mode}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    volumeMounts:
    - {name: config, mountPath: /etc/app}
    - {name: creds, mountPath: /etc/creds}
    - {name: shared, mountPath: /shared}
  - name: helper
    image: ubuntu:24.04
    command: [sleep, infinity]
    envFrom: [{secretRef: {name: creds}}]
    volumeMounts:
    - {name: shared, mountPath: /data}
  volumes:
  - {name: config, configMap: {name: settings}}
  - {name: creds, secret: {secretName: creds}}
  - {name: shared, emptyDir: {}}
"""


@pytest.fixture(scope="module")
def kube(shared_kube: RunningCluster) -> RunningCluster:
    shared_kube.kubectl("create", "namespace", "rt")
    shared_kube.kubectl("apply", "-f", "-", input=PODS)
    wait_until(lambda: shared_kube.kubectl("get", "pod", "box", "-n", "rt", "-o", "jsonpath={.status.phase}")
               .stdout == "Running", timeout=30)
    return shared_kube


def _exec(kube: RunningCluster, version: str, *args: str, input: str | None = None, container: str = "main"):
    return kube.kubectl("exec", "-n", "rt", *(["-i"] if input is not None else []), "box", "-c", container, "--",
                        *args, version=version, check=False, input=input)


@pytest.mark.parametrize("version", VERSIONS)
def test_exec_runs_in_the_container_with_its_env_files_and_exit_code(kube: RunningCluster, version: str) -> None:
    done = _exec(kube, version, "sh", "-c", "echo $GREETING $MODE $POD_NAME; pwd; hostname; cat /etc/app/mode; "
                 "cat /etc/creds/password; head -1 /etc/os-release; echo oops >&2; exit 3")
    assert done.returncode == 3
    assert done.stdout == 'hello fast box\n/work\nbox\nfasts3cretNAME="BusyBox"\n'  # no newline in the secret
    assert done.stderr == "oops\ncommand terminated with exit code 3\n"
    # -c picks the other container: another image, another environment, the same emptyDir
    assert _exec(kube, version, "sh", "-c", "echo from-main > /shared/note").returncode == 0
    helper = _exec(kube, version, "bash", "-c", "cat /data/note; echo $password; grep ^ID= /etc/os-release",
                   container="helper")
    assert (helper.returncode, helper.stdout) == (0, "from-main\ns3cret\nID=ubuntu\n")


@pytest.mark.parametrize("version", VERSIONS)
def test_exec_stdin_and_missing_programs(kube: RunningCluster, version: str) -> None:
    done = _exec(kube, version, "sh", "-c", "cat > /tmp/in; wc -c < /tmp/in; cat /tmp/in", input="line one\nline 2\n")
    assert (done.returncode, done.stdout) == (0, "16\nline one\nline 2\n")
    missing = _exec(kube, version, "apt-get", "install", "-y", "curl")  # busybox has no apt-get
    assert missing.returncode == 126
    assert 'exec: "apt-get": executable file not found in $PATH' in missing.stderr
    wrong = _exec(kube, version, "true", container="nope")
    assert wrong.returncode == 1 and "container nope is not valid for pod box" in wrong.stderr


@pytest.mark.parametrize("version", VERSIONS)
def test_cp_both_ways(kube: RunningCluster, version: str, tmp_path: Path) -> None:
    source = tmp_path / "site"
    (source / "img").mkdir(parents=True)
    (source / "index.html").write_text("<h1>hi</h1>\n")
    blob = bytes(range(256)) * 400
    (source / "img" / "logo.bin").write_bytes(blob)
    target = f"/srv-{version}"
    kube.kubectl("cp", str(source), f"rt/box:{target}", "-c", "main", version=version)
    listed = _exec(kube, version, "sh", "-c", f"cat {target}/index.html; wc -c < {target}/img/logo.bin")
    assert listed.stdout == f"<h1>hi</h1>\n{len(blob)}\n"
    back = tmp_path / "back"
    kube.kubectl("cp", f"rt/box:{target}", str(back), "-c", "main", version=version)
    assert (back / "index.html").read_text() == "<h1>hi</h1>\n"
    assert (back / "img" / "logo.bin").read_bytes() == blob


@pytest.mark.parametrize("version", VERSIONS)
def test_run_rm_interactive_feeds_stdin_and_reports_the_exit_code(kube: RunningCluster, version: str) -> None:
    tag = version.replace(".", "")
    ok = kube.kubectl("run", f"ok{tag}", "-n", "rt", "--rm", "-i", "--restart=Never", "--image=busybox", "--",
                      "sh", "-c", "echo started; cat", input="piped in\n", version=version, timeout=60)
    assert ok.stdout.startswith("started\npiped in\n")
    assert f'pod "ok{tag}" deleted' in ok.stdout
    failed = kube.kubectl("run", f"ko{tag}", "-n", "rt", "--rm", "-i", "--restart=Never", "--image=busybox", "--",
                          "sh", "-c", "echo bad >&2; exit 4", input="", version=version, timeout=60, check=False)
    assert failed.returncode == 4
    assert f"pod rt/ko{tag} terminated (Error)" in failed.stderr
    assert kube.kubectl("get", "pods", "-n", "rt", "-o", "name", version=version).stdout == "pod/box\n"


def test_python_client_stream(kube: RunningCluster) -> None:
    api = client.CoreV1Api(kube.api_client())
    out = stream(api.connect_get_namespaced_pod_exec, "box", "rt", container="main",
                 command=["sh", "-c", "echo out; echo err >&2"], stdout=True, stderr=True, stdin=False, tty=False)
    assert out == "out\nerr\n"
    ws = stream(api.connect_get_namespaced_pod_exec, "box", "rt", container="main",
                command=["sh", "-c", "tr a-z A-Z; exit 5"], stdout=True, stderr=True, stdin=True, tty=False,
                _preload_content=False)
    ws.write_stdin("shout\n")
    ws.close_channel(0)  # v5: the end of stdin
    ws.run_forever(timeout=20)
    assert ws.returncode == 5
    assert ws.read_all() == "SHOUT\n"


def test_service_account_token_is_mounted_and_authenticates(kube: RunningCluster) -> None:
    sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    namespace = _exec(kube, "1.34", "cat", f"{sa_dir}/namespace").stdout
    token = _exec(kube, "1.34", "cat", f"{sa_dir}/token").stdout
    ca = _exec(kube, "1.34", "cat", f"{sa_dir}/ca.crt").stdout
    assert namespace == "rt"
    assert ca.startswith("-----BEGIN CERTIFICATE-----")
    ca_file = kube.home / "pod-ca.crt"
    ca_file.write_text(ca)
    seen = requests.get(f"{kube.server}/api", headers={"Authorization": f"Bearer {token}"}, verify=str(ca_file),
                        timeout=10)
    assert seen.status_code == 200, seen.text
    bad = requests.get(f"{kube.server}/api", headers={"Authorization": f"Bearer {token}x"}, verify=str(ca_file),
                       timeout=10)
    assert bad.status_code == 401


def test_discovery_lists_the_streaming_subresources(kube: RunningCluster) -> None:
    resources = json.loads(kube.kubectl("get", "--raw", "/api/v1").stdout)["resources"]
    kinds = {r["name"]: r["kind"] for r in resources}
    assert kinds["pods/exec"] == "PodExecOptions"
    assert kinds["pods/attach"] == "PodAttachOptions"
    assert kinds["pods/portforward"] == "PodPortForwardOptions"
