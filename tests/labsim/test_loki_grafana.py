"""The Loki and Grafana app models as the pods' processes (their adapters' command lines, run in a
container-like root folder): Loki's push and LogQL queries, its store surviving a restart;
Grafana's login, provisioned datasources and dashboards."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from labsim.runtime.programs import grafana, loki
from tests.labfiles import free_port
from tests.polling import wait_until


@contextmanager
def _running(adapter, root: Path, env: dict[str, str]) -> Iterator[str]:
    port = free_port("127.0.0.1")
    argv = adapter.server(None, "image:1", env, "127.0.0.1", [])
    argv[argv.index("--port") + 1] = str(port)  # a free port instead of the image's default
    process = subprocess.Popen(argv, cwd=root, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _status(url + ("/ready" if adapter is loki else "/api/health")) == 200, timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def _get(url: str, headers: dict | None = None) -> dict | list:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as reply:
        return json.loads(reply.read())


def _post(url: str, body: dict, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.status


def _query(url: str, path: str, **params) -> dict:
    return _get(f"{url}/loki/api/v1/{path}?{urllib.parse.urlencode(params)}")


def test_loki_answers_logql_over_what_was_pushed_and_keeps_it_across_a_restart(tmp_path) -> None:
    now = time.time_ns()
    streams = [{"stream": {"namespace": "monitoring", "pod": "grafana-0", "container": "grafana"},
                "values": [[str(now - 3_000_000_000), "level=info msg=started"],
                           [str(now - 2_000_000_000), "level=error msg=\"db locked\""],
                           [str(now - 1_000_000_000), "level=info msg=ready"]]},
               {"stream": {"namespace": "databases", "pod": "postgresql-0", "container": "postgresql"},
                "values": [[str(now - 1_500_000_000), "LOG:  database system is ready to accept connections"]]}]
    with _running(loki, tmp_path, {}) as url:
        assert _post(url + "/loki/api/v1/push", {"streams": streams}) == 204
        found = _query(url, "query_range", query='{namespace="monitoring"} |= "level=info" != "ready"',
                       start=str(now - 10**10), end=str(now))
        assert found["data"]["resultType"] == "streams"
        assert [v[1] for s in found["data"]["result"] for v in s["values"]] == ["level=info msg=started"]
        regex = _query(url, "query_range", query='{pod=~"postgres.*"} |~ "ready to accept"', start=str(now - 10**10),
                       end=str(now))["data"]["result"]
        assert regex[0]["stream"]["container"] == "postgresql"
        counts = _query(url, "query", query='sum by (namespace) (count_over_time({namespace=~".+"}[1m]))',
                        time=str(now))["data"]
        assert counts["resultType"] == "vector"
        assert {r["metric"]["namespace"]: r["value"][1] for r in counts["result"]} == {"monitoring": "3", "databases": "1"}
        assert "namespace" in _query(url, "labels")["data"]
        assert _query(url, "label/namespace/values")["data"] == ["databases", "monitoring"]
        assert _get(f"{url}/loki/api/v1/series?match[]=" + urllib.parse.quote('{container="grafana"}'))["data"] == \
            [streams[0]["stream"]]
        with pytest.raises(urllib.error.HTTPError) as bad:
            _query(url, "query_range", query='{namespace=""}')
        assert bad.value.code == 400 and b"at least one" in bad.value.read()
    with _running(loki, tmp_path, {}) as url:  # a new process on the same volume
        again = _query(url, "query_range", query='{namespace="databases"}', start=str(now - 10**10), end=str(now))
        assert again["data"]["result"][0]["values"][0][1].startswith("LOG:  database system is ready")


def test_grafana_logs_in_with_the_admin_secret_and_lists_its_provisioned_datasources_and_dashboards(tmp_path) -> None:
    provisioning = tmp_path / "etc" / "grafana" / "provisioning"
    (provisioning / "datasources").mkdir(parents=True)
    (provisioning / "datasources" / "datasource.yaml").write_text(
        "apiVersion: 1\ndatasources:\n- {name: Prometheus, type: prometheus, uid: prometheus, isDefault: true,"
        " url: 'http://127.0.0.1:1/'}\n- {name: Loki, type: loki, url: 'http://loki:3100'}\n")
    (provisioning / "dashboards").mkdir()
    (provisioning / "dashboards" / "provider.yaml").write_text(
        "apiVersion: 1\nproviders:\n- {name: sidecarProvider, folder: '', type: file, options: {path: /tmp/dashboards}}\n")
    (tmp_path / "tmp" / "dashboards").mkdir(parents=True)
    (tmp_path / "tmp" / "dashboards" / "nodes.json").write_text(json.dumps({"uid": "nodes", "title": "Node Exporter / Nodes",
                                                                           "tags": ["node-exporter"]}))
    env = {"GF_SECURITY_ADMIN_USER": "admin", "GF_SECURITY_ADMIN_PASSWORD": "s3cret-pw",
           "GF_PATHS_PROVISIONING": "/etc/grafana/provisioning"}
    with _running(grafana, tmp_path, env) as url:
        assert _get(url + "/api/health")["database"] == "ok"
        assert _status(url + "/api/datasources") == 401
        with urllib.request.urlopen(url + "/", timeout=2) as page:  # a browser is sent to the login page
            assert page.url == url + "/login" and "<title>Grafana</title>" in page.read().decode()
        wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(url + "/api/search", wrong)
        assert refused.value.code == 401
        auth = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret-pw").decode()}
        sources = _get(url + "/api/datasources", auth)
        assert [(s["name"], s["type"], s["isDefault"]) for s in sources] == \
            [("Prometheus", "prometheus", True), ("Loki", "loki", False)]
        with pytest.raises(urllib.error.HTTPError) as down:  # nothing answers on port 1: the check says so
            _get(url + "/api/datasources/uid/prometheus/health", auth)
        assert down.value.code == 400 and json.loads(down.value.read())["status"] == "ERROR"
        hits = _get(url + "/api/search?query=node", auth)
        assert [(h["uid"], h["title"], h["type"]) for h in hits] == [("nodes", "Node Exporter / Nodes", "dash-db")]
        (tmp_path / "tmp" / "dashboards" / "k8s.json").write_text(json.dumps({"uid": "k8s", "title": "Kubernetes"}))
        assert len(_get(url + "/api/search", auth)) == 2  # what the sidecar writes shows at once
        assert _get(url + "/api/dashboards/uid/k8s", auth)["meta"]["provisioned"] is True
