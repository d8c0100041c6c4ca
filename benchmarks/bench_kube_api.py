"""Benchmark of the embedded lab's Kubernetes API (not a test): run
``.venv/bin/python benchmarks/bench_kube_api.py``.

Prints GETs per second through the kubernetes Python client (typed and raw JSON), the cost of
authorization (GETs/s with RBAC on and off, side by side, for the admin certificate and for a
ServiceAccount token bound to ``view``), the time to list 1,000 objects, and the memory of a cluster with 3 nodes and 300 pods created through the API.
The API server runs in this process (its own thread and event loop), so memory figures are the
process's RSS growth while the cluster fills up.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import client  # noqa: E402

from tests.labsim.kube_fixtures import running_cluster  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp), nodes=3) as kube:
        api = kube.api_client()
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": "bench"}})
        core.create_namespaced_config_map("bench", {"metadata": {"name": "probe"}, "data": {"k": "v"}})

        typed = timed(lambda: core.read_namespaced_config_map("probe", "bench"), args.gets)
        raw = timed(lambda: core.read_namespaced_config_map("probe", "bench", _preload_content=False).data,
                    args.gets)
        print(f"GET configmap, typed client : {args.gets / typed:8.0f} GETs/s")
        print(f"GET configmap, raw JSON     : {args.gets / raw:8.0f} GETs/s  (typed/raw time ratio "
              f"{typed / raw:.2f})")

        rbac_on_off(kube, api, args.gets)

        for i in range(args.objects):
            core.create_namespaced_config_map("bench", {"metadata": {"name": f"cm-{i:04d}", "labels": {"n": str(i)}},
                                                        "data": {"value": "x" * 64}})
        list_typed = timed(lambda: core.list_namespaced_config_map("bench"), 5) / 5
        list_raw = timed(lambda: core.list_namespaced_config_map("bench", _preload_content=False).data, 5) / 5
        print(f"list {args.objects + 1} configmaps, typed : {list_typed * 1000:8.1f} ms")
        print(f"list {args.objects + 1} configmaps, raw   : {list_raw * 1000:8.1f} ms  (typed/raw ratio "
              f"{list_typed / list_raw:.2f})")

        before = rss_mib()
        start = time.perf_counter()
        for i in range(args.pods):
            core.create_namespaced_pod("bench", {"metadata": {"name": f"pod-{i:03d}", "labels": {"app": "bench"}},
                                                 "spec": {"containers": [{"name": "c", "image": "nginx:1.27",
                                                                          "resources": {"requests": {"cpu": "1m"}}}]}})
        created = time.perf_counter() - start
        deadline = time.monotonic() + 120
        running = 0
        while time.monotonic() < deadline:
            pods = core.list_namespaced_pod("bench", _preload_content=False)
            running = pods.data.count(b'"phase":"Running"')
            if running >= args.pods:
                break
            time.sleep(0.2)
        settled = time.perf_counter() - start
        after = rss_mib()
        print(f"{args.pods} pods created through the API in {created:.2f} s; {running} Running after "
              f"{settled:.2f} s")
        print(f"memory: process RSS {after:.0f} MiB, +{after - before:.1f} MiB for {args.pods} pods "
              f"({(after - before) * 1024 / max(args.pods, 1):.0f} KiB/pod)")


def token_client(kube, token: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = kube.server
    configuration.ssl_ca_cert = str(kube.cluster.state_dir / "tls" / "ca.crt")
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def rbac_on_off(kube, api: client.ApiClient, gets: int) -> None:
    """Raw GETs/s with the authorizer in RBAC mode and in AlwaysAllow mode, alternated in rounds so
    that both see the same machine load."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account("bench", {"metadata": {"name": "reader"}})
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding("bench", {
        "metadata": {"name": "reader-view"}, "subjects": [{"kind": "ServiceAccount", "name": "reader",
                                                           "namespace": "bench"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}})
    token = core.create_namespaced_service_account_token("reader", "bench", {"spec": {}}).status.token
    callers = {"admin certificate (system:masters)": core, "ServiceAccount token (view)":
               client.CoreV1Api(token_client(kube, token))}
    authorizer = kube.cluster.authorizer
    for label, caller in callers.items():
        spent = {"RBAC": 0.0, "AlwaysAllow": 0.0}
        for _ in range(4):
            for mode in spent:
                authorizer.mode = mode
                spent[mode] += timed(lambda c=caller: c.read_namespaced_config_map(
                    "probe", "bench", _preload_content=False).data, gets // 4)
        authorizer.mode = "RBAC"
        on, off = gets / spent["RBAC"], gets / spent["AlwaysAllow"]
        print(f"GET configmap, raw, {label:36}: RBAC {on:6.0f} GETs/s, AlwaysAllow {off:6.0f} GETs/s "
              f"(authorization costs {100 * (1 - on / off):4.1f}%)")


if __name__ == "__main__":
    main()
