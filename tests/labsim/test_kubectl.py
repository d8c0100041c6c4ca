"""Real kubectl (1.34 and 1.32) against the embedded lab's API: the commands an operator runs."""

from __future__ import annotations

import json

import pytest
import requests

from tests.labsim.kube_fixtures import RunningCluster, nginx_web

VERSIONS = ["1.34", "1.32"]

APP = nginx_web(replicas=2, team="blue") + """---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
"""

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}  # the API server adds none of its own
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, default: 3}
              color: {type: string}
"""


def _json(kube: RunningCluster, version: str, *args: str) -> dict:
    return json.loads(kube.kubectl(*args, "-o", "json", version=version).stdout)


@pytest.mark.parametrize("version", VERSIONS)
def test_get_nodes_wide(kube: RunningCluster, version: str) -> None:
    out = kube.kubectl("get", "nodes", "-o", "wide", version=version).stdout.splitlines()
    assert out[0].split()[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    master = out[1].split()
    assert master[:2] == ["k3s-master", "Ready"] and "control-plane" in master[2] and master[4] == "v1.34.3+k3s1"
    assert len(out) == 4


@pytest.mark.parametrize("version", VERSIONS)
def test_operator_workflow(kube: RunningCluster, version: str) -> None:
    k = kube.kubectl
    assert "deployment.apps/web created" in k("apply", "-f", "-", input=APP, version=version).stdout
    assert "deployment.apps/web unchanged" in k("apply", "-f", "-", input=APP, version=version).stdout
    # a label dropped from the manifest is removed by the next apply (last-applied three-way merge)
    k("apply", "-f", "-", input=APP.replace(", team: blue", ""), version=version)
    assert "team" not in _json(kube, version, "get", "deploy", "web")["metadata"]["labels"]
    k("rollout", "status", "deploy/web", "--timeout=30s", version=version)
    k("wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=30s", version=version)
    pods = k("get", "pods", "-A", "-o", "wide", version=version).stdout
    assert pods.count("Running") == 2 and "k3s-" in pods
    k("scale", "deploy/web", "--replicas=3", version=version)
    k("set", "image", "deploy/web", "nginx=nginx:1.28", version=version)
    k("rollout", "status", "deploy/web", "--timeout=30s", version=version)
    dep = _json(kube, version, "get", "deploy", "web")
    assert dep["status"]["updatedReplicas"] == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    k("label", "deploy", "web", "tier=front", version=version)
    assert "tier=front" in k("get", "deploy", "web", "--show-labels", version=version).stdout
    applied = k("apply", "--server-side", "--force-conflicts", "-f", "-", input=APP, version=version).stdout
    assert "deployment.apps/web serverside-applied" in applied
    pod = k("get", "pods", "-l", "app=web", "-o", "name", version=version).stdout.split()[0]
    assert "start worker process" in k("logs", pod, version=version).stdout  # the real nginx's own log
    assert k("delete", "-f", "-", input=APP, version=version).returncode == 0
    assert "No resources found" in k("get", "deploy", version=version).stderr


@pytest.mark.parametrize("version", VERSIONS)
def test_cordon_and_drain_wait_for_the_disruption_budget(kube: RunningCluster, version: str) -> None:
    k = kube.kubectl
    k("apply", "-f", "-", input=APP, version=version)
    k("rollout", "status", "deploy/web", "--timeout=30s", version=version)
    node = _json(kube, version, "get", "pods", "-l", "app=web")["items"][0]["spec"]["nodeName"]
    k("cordon", node, version=version)
    assert "SchedulingDisabled" in k("get", "node", node, version=version).stdout
    blocked = k("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=3s", check=False,
                version=version)
    assert blocked.returncode != 0 and "disruption budget" in blocked.stderr
    k("scale", "deploy/web", "--replicas=3", version=version)
    k("rollout", "status", "deploy/web", "--timeout=30s", version=version)
    k("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=30s", version=version)
    pods = _json(kube, version, "get", "pods", "-l", "app=web")["items"]
    assert node not in [p["spec"].get("nodeName") for p in pods]
    k("uncordon", node, version=version)
    assert "SchedulingDisabled" not in k("get", "node", node, version=version).stdout


@pytest.mark.parametrize("version", VERSIONS)
def test_custom_resources(kube: RunningCluster, version: str) -> None:
    k = kube.kubectl
    k("apply", "-f", "-", input=CRD, version=version)
    k("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s", version=version)
    widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {color: red}\n"
    k("apply", "-f", "-", input=widget, version=version)
    k("apply", "-f", "-", input=widget.replace("red", "blue"), version=version)
    table = k("get", "wd", version=version).stdout.split()
    assert table[:3] == ["NAME", "SIZE", "AGE"] and table[3:5] == ["w1", "3"]
    assert _json(kube, version, "get", "widget", "w1")["spec"] == {"color": "blue", "size": 3}
    k("apply", "--server-side", "-f", "-", input=widget.replace("red", "blue"), version=version)
    strict = k("apply", "-f", "-", input=widget.replace("{color: red}", "{size: 4, shape: round}"), check=False,
               version=version)
    assert strict.returncode != 0 and 'unknown field "spec.shape"' in strict.stderr
    k("delete", "crd", "widgets.example.com", version=version)


CREATES = [
    ("deployment", "d1", ["deployment", "d1", "--image=nginx:1.27", "--replicas=2", "--port=80"]),
    ("namespace", "n1", ["namespace", "n1"]),
    ("serviceaccount", "sa1", ["serviceaccount", "sa1"]),
    ("job", "j1", ["job", "j1", "--image=busybox:1.36", "--", "sh", "-c", "echo hi"]),
    ("cronjob", "cj1", ["cronjob", "cj1", "--image=busybox:1.36", "--schedule=*/5 * * * *", "--", "true"]),
    ("pdb", "pdb1", ["pdb", "pdb1", "--selector=app=web", "--min-available=50%"]),
    ("ingress", "i1", ["ingress", "i1", "--class=traefik", "--rule=a.example.com/api*=web:http,tls=web-tls"]),
    ("role", "r1", ["role", "r1", "--verb=get,list", "--resource=pods,deployments.apps"]),
    ("rolebinding", "rb1", ["rolebinding", "rb1", "--role=r1", "--user=bob", "--serviceaccount=default:sa1"]),
    ("clusterrole", "cr1", ["clusterrole", "cr1", "--verb=list", "--resource=nodes"]),
    ("quota", "q1", ["quota", "q1", "--hard=pods=10,requests.cpu=2,requests.memory=1Gi"]),
    ("priorityclass", "pc1", ["priorityclass", "pc1", "--value=1000", "--description=important"]),
    ("service", "s2", ["service", "nodeport", "s2", "--tcp=80:8080"]),
    ("secret", "s1", ["secret", "generic", "s1", "--from-literal=user=admin", "--type=Opaque"]),
    ("configmap", "c1", ["configmap", "c1", "--from-literal=a=b"]),
]


def _contains(expected, actual) -> bool:
    """Everything the client meant to send is in what the server stored (which adds defaults)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            _contains(v, actual.get(k)) for k, v in expected.items() if k not in ("creationTimestamp", "status"))
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            _contains(e, a) for e, a in zip(expected, actual, strict=True))
    return expected == actual


@pytest.mark.parametrize("version", VERSIONS)
def test_create_commands_send_protobuf_the_server_decodes(kube: RunningCluster, version: str) -> None:
    """kubectl's typed clients send these as protobuf: what is stored is what kubectl meant."""
    for kind, name, args in CREATES:
        expected = json.loads(kube.kubectl("create", "--dry-run=client", "-o", "json", *args, version=version).stdout)
        kube.kubectl("create", *args, version=version)
        assert _contains(expected, _json(kube, version, "get", kind, name)), kind
    kube.kubectl("create", "job", "from-cron", "--from=cronjob/cj1", version=version)
    job = _json(kube, version, "get", "job", "from-cron")
    assert job["metadata"]["annotations"] == {"cronjob.kubernetes.io/instantiate": "manual"}
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["true"]
    assert kube.kubectl("auth", "can-i", "delete", "nodes", version=version).stdout.strip() == "yes"
    assert "system:masters" in kube.kubectl("auth", "whoami", version=version).stdout


def test_service_account_tokens_authenticate(kube: RunningCluster) -> None:
    token = kube.kubectl("create", "token", "default", "--duration=10m").stdout.strip()
    ca = kube.cluster.state_dir / "tls" / "ca.crt"
    who = requests.post(f"{kube.server}/apis/authentication.k8s.io/v1/selfsubjectreviews",
                        json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                        headers={"Authorization": f"Bearer {token}"}, verify=ca, timeout=10)
    assert who.status_code == 201
    assert who.json()["status"]["userInfo"]["username"] == "system:serviceaccount:default:default"
    # authenticated, but the default ServiceAccount is granted nothing beyond discovery (RBAC)
    denied = requests.get(f"{kube.server}/api/v1/namespaces", headers={"Authorization": f"Bearer {token}"},
                          verify=ca, timeout=10)
    assert denied.status_code == 403 and denied.json()["message"] == (
        'namespaces is forbidden: User "system:serviceaccount:default:default" cannot list resource "namespaces" '
        'in API group "" at the cluster scope')
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    refused = requests.get(f"{kube.server}/api/v1/namespaces", headers={"Authorization": f"Bearer {forged}"},
                           verify=ca, timeout=10)
    assert refused.status_code == 401


DEPLOY_ENV = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: env}
spec:
  selector: {matchLabels: {app: env}}
  template:
    metadata: {labels: {app: env}}
    spec:
      containers:
      - name: app
        image: busybox:1.36
        env: [{name: A, value: "1"}, {name: B, value: "2"}]
        ports: [{containerPort: 80}, {containerPort: 443}]
      - name: sidecar
        image: busybox:1.36
"""


@pytest.mark.parametrize("version", VERSIONS)
def test_client_side_apply_removes_what_the_manifest_dropped(kube: RunningCluster, version: str) -> None:
    """kubectl's three-way strategic patches: $patch delete, $setElementOrder, $retainKeys."""
    kube.kubectl("apply", "-f", "-", input=DEPLOY_ENV, version=version)
    changed = (DEPLOY_ENV.replace(', {name: B, value: "2"}', "").replace(", {containerPort: 443}", "")
               .replace("      - name: sidecar\n        image: busybox:1.36\n", "")
               .replace("spec:\n  selector", "spec:\n  strategy: {type: Recreate}\n  selector"))
    kube.kubectl("apply", "-f", "-", input=changed, version=version)
    dep = _json(kube, version, "get", "deploy", "env")
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app"]
    assert containers[0]["env"] == [{"name": "A", "value": "1"}]
    assert [p["containerPort"] for p in containers[0]["ports"]] == [80]
    assert dep["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_fields_are_refused_or_dropped_as_on_k3s(kube: RunningCluster, version: str) -> None:
    typo = APP.replace("  replicas: 2", "  replica: 2")
    refused = kube.kubectl("apply", "-f", "-", input=typo, check=False, version=version)
    assert refused.returncode != 0 and 'unknown field "spec.replica"' in refused.stderr
    kube.kubectl("apply", "--validate=false", "-f", "-", input=typo, version=version)
    spec = _json(kube, version, "get", "deploy", "web")["spec"]
    assert "replica" not in spec and spec["replicas"] == 1  # dropped; the default applies


BACKUP_CRON = """
apiVersion: batch/v1
kind: CronJob
metadata: {name: backup}
spec:
  schedule: "0 3 * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      backoffLimit: 2
      ttlSecondsAfterFinished: 3600
      template:
        spec:
          restartPolicy: OnFailure
          serviceAccountName: default
          nodeSelector: {kubernetes.io/os: linux}
          affinity:
            nodeAffinity:
              requiredDuringSchedulingIgnoredDuringExecution:
                nodeSelectorTerms:
                - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [k3s-master]}]
              preferredDuringSchedulingIgnoredDuringExecution:
              - weight: 10
                preference: {matchExpressions: [{key: tier, operator: Exists}]}
            podAntiAffinity:
              preferredDuringSchedulingIgnoredDuringExecution:
              - weight: 50
                podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: pg}}}
          tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
          securityContext: {runAsUser: 999, runAsNonRoot: true, fsGroup: 999}
          initContainers:
          - {name: wait, image: busybox:1.36, command: [sh, -c, "true"]}
          containers:
          - name: dump
            image: postgres:18
            command: [pg_dump, -Fc, -f, /backup/db.dump]
            env:
            - {name: PGHOST, value: postgres}
            - name: PGPASSWORD
              valueFrom: {secretKeyRef: {name: pg, key: password}}
            - name: NODE
              valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
            envFrom: [{configMapRef: {name: pg-env}}]
            resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 512Mi}}
            volumeMounts:
            - {name: backup, mountPath: /backup}
            - {name: scratch, mountPath: /tmp}
            - {name: conf, mountPath: /etc/conf, readOnly: true}
            readinessProbe: {exec: {command: ["true"]}, periodSeconds: 5}
            livenessProbe: {tcpSocket: {port: 5432}, initialDelaySeconds: 3}
            securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
          volumes:
          - {name: backup, persistentVolumeClaim: {claimName: backups}}
          - {name: scratch, emptyDir: {sizeLimit: 1Gi}}
          - {name: conf, configMap: {name: pg-conf, items: [{key: a, path: a.conf}]}}
"""


@pytest.mark.parametrize("version", VERSIONS)
def test_job_from_cronjob_keeps_the_whole_template(kube: RunningCluster, version: str) -> None:
    """`create job --from=cronjob` sends the stored template back as protobuf: nothing may be lost."""
    kube.kubectl("apply", "-f", "-", input=BACKUP_CRON, version=version)
    kube.kubectl("create", "job", "backup-now", "--from=cronjob/backup", version=version)
    cron = _json(kube, version, "get", "cronjob", "backup")["spec"]["jobTemplate"]["spec"]["template"]
    job = _json(kube, version, "get", "job", "backup-now")["spec"]["template"]
    labels = job["metadata"].pop("labels")
    assert labels["job-name"] == "backup-now"
    assert job == cron


def test_top_needs_metrics_server_then_reports_usage(kube: RunningCluster) -> None:
    k = kube.kubectl
    assert k("top", "nodes", check=False).returncode != 0  # no metrics-server yet: the API is unavailable
    k("-n", "kube-system", "create", "deployment", "metrics-server", "--image=rancher/mirrored-metrics-server:v0.8.0")
    k("-n", "kube-system", "rollout", "status", "deploy/metrics-server", "--timeout=30s")
    nodes = k("top", "nodes").stdout.splitlines()
    assert nodes[0].split()[:3] == ["NAME", "CPU(cores)", "CPU(%)"] and len(nodes) == 4
    pods = k("top", "pods", "-n", "kube-system").stdout
    assert "metrics-server-" in pods


def test_validate_warn_reports_and_drops_unknown_fields(kube: RunningCluster) -> None:
    typo = APP.replace("  replicas: 2", "  replica: 2")
    done = kube.kubectl("apply", "--validate=warn", "-f", "-", input=typo)
    assert 'unknown field "spec.replica"' in done.stderr
    assert "replica" not in _json(kube, "1.34", "get", "deploy", "web")["spec"]


@pytest.mark.parametrize("version", VERSIONS)
def test_explain_shows_the_fields_of_built_in_kinds(kube: RunningCluster, version: str) -> None:
    out = kube.kubectl("explain", "deployment.spec.replicas", version=version).stdout
    assert "FIELD: replicas <integer>" in out and "Number of desired pods" in out
    out = kube.kubectl("explain", "pod.spec.containers", version=version).stdout
    assert "<[]Container>" in out and "imagePullPolicy" in out
