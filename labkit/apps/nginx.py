"""The nginx dev proxy: plain objects whose server block labkit renders from the lab file's
upstreams into a ConfigMap named after its content. A new config is a new ConfigMap and a rolling
update, so a config nginx refuses stops at the new pod while the old one keeps serving."""

from __future__ import annotations

import hashlib

import httpx
from kubernetes import client

from labkit import certs, kube, manifests, net
from labkit.apps.base import SET, AppError, https_client, settings
from labkit.changes import Check
from labkit.params import Lab
from labkit.progress import progress

NGINX_PORT = 8080  # the proxy listens unprivileged; its Service maps 80 to it


def nginx_conf(lab: Lab) -> str:
    """The proxy's server block: ``/<name>/`` goes to each upstream. nginx resolves the upstreams'
    names when it starts (the pod's resolver: the cluster DNS), so a name that does not resolve
    fails the config (``host not found in upstream``) and stops the rollout."""
    app = settings(lab).nginx
    lines = ["# Rendered by labkit from the lab file's apps.nginx.upstreams; edit the lab file, not this.",
             "server {", f"    listen {NGINX_PORT};", f"    server_name {app.host};",
             "    location = /healthz { return 200 \"ok\\n\"; }",
             f"    location = / {{ return 200 \"upstreams: {' '.join(sorted(app.upstreams))}\\n\"; }}"]
    for name, url in sorted(app.upstreams.items()):
        target = url if url.count("/") > 2 else url + "/"  # with a path, nginx swaps /<name>/ for it
        lines += [f"    location /{name}/ {{", f"        proxy_pass {target.rstrip('/')}/;",
                  "        proxy_set_header X-Forwarded-Proto https;", "        proxy_http_version 1.1;", "    }"]
    return "\n".join([*lines, "}", ""])


def nginx_objects(lab: Lab, config_map: str | None = None) -> list[dict]:
    """ConfigMap ``nginx-conf-<hash of its content>``, Deployment and Service ``nginx``. The
    rolling update keeps the old pod until the new one is ready (maxUnavailable 0)."""
    app, ns = settings(lab).nginx, settings(lab).namespace
    conf = nginx_conf(lab)
    name = config_map or f"nginx-conf-{hashlib.sha256(conf.encode()).hexdigest()[:10]}"
    labels = {"app.kubernetes.io/name": "nginx", "app.kubernetes.io/part-of": "labkit-apps"}
    container = {"name": "nginx", "image": app.image, "ports": [{"name": "http", "containerPort": NGINX_PORT}],
                 "resources": {"requests": dict(app.requests), "limits": dict(app.limits)},
                 "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
                 "volumeMounts": [{"name": "conf", "mountPath": "/etc/nginx/conf.d", "readOnly": True}]}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nginx", "namespace": ns, "labels": labels},
                  "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                           "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                           "template": {"metadata": {"labels": labels}, "spec": {
                               "containers": [container], "volumes": [{"name": "conf", "configMap": {"name": name}}]}}}}
    objects = [deployment,
               {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nginx", "namespace": ns, "labels": labels},
                "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}]
    if config_map is None:
        objects.insert(0, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
                           "data": {"default.conf": conf}})
    return objects


def wait_nginx(api: client.ApiClient, lab: Lab, *, timeout: float = 300) -> None:
    """The proxy's new pod is ready; one whose nginx refuses its config stops the rollout: the
    Deployment goes back to the config that serves now and AppError quotes nginx's error line."""
    ns, core, apps_api = settings(lab).namespace, client.CoreV1Api(api), client.AppsV1Api(api)
    with progress("nginx rollout") as bar:
        def state(pods) -> str | None:
            deployment = apps_api.read_namespaced_deployment("nginx", ns)
            if _rolled_out(deployment):
                return "done"
            for pod in pods.items:
                for status in pod.status.container_statuses or []:
                    if status.restart_count > 0 or (status.state.terminated and status.state.terminated.exit_code):
                        return pod.metadata.name
            bar.update(note=f"{deployment.status.updated_replicas or 0} updated, "
                            f"{deployment.status.available_replicas or 0} available")
            return None

        found = kube.until(core.list_namespaced_pod, state, what="Deployment nginx to roll out", timeout=timeout,
                           namespace=ns, label_selector="app.kubernetes.io/name=nginx")
    if found != "done":
        line = _nginx_error(core, ns, found)
        old = serving_config(api, ns)
        if old:
            net.apply_objects(api, [manifests.labelled(o, SET) for o in nginx_objects(lab, old)])
        raise AppError(f"nginx refused the new config (pod {found}): {line}\nthe rollout is stopped: "
                       f"{'the proxy keeps serving ConfigMap ' + old if old else 'no earlier config to keep'}; "
                       "fix apps.nginx in the lab file and run again")


def _rolled_out(deployment: client.V1Deployment) -> bool:
    """As ``kubectl rollout status`` says: the new ReplicaSet's pods all there and available, no old
    pod left (the old one counts as available while the new one crash-loops)."""
    status, want = deployment.status, deployment.spec.replicas or 0
    return ((status.observed_generation or 0) >= (deployment.metadata.generation or 0)
            and (status.updated_replicas or 0) >= want and (status.replicas or 0) == (status.updated_replicas or 0)
            and (status.available_replicas or 0) >= want)


def _nginx_error(core: client.CoreV1Api, namespace: str, pod: str) -> str:
    for previous in (True, False):
        try:
            log = core.read_namespaced_pod_log(pod, namespace, previous=previous, tail_lines=50)
        except client.ApiException:
            continue
        lines = [line for line in log.splitlines() if "[emerg]" in line or "nginx: configuration file" in line]
        if lines:
            return lines[0].strip()
    return "(no [emerg] line in its log)"


def serving_config(api: client.ApiClient, namespace: str) -> str | None:
    """The ConfigMap of the proxy's ReplicaSet whose pods are ready (the one that serves now)."""
    sets = client.AppsV1Api(api).list_namespaced_replica_set(namespace, label_selector="app.kubernetes.io/name=nginx")
    for rs in sorted(sets.items, key=lambda r: -int((r.metadata.annotations or {}).get(
            "deployment.kubernetes.io/revision", "0"))):
        if (rs.status.ready_replicas or 0) > 0:
            return next((v.config_map.name for v in rs.spec.template.spec.volumes or [] if v.config_map), None)
    return None


def verify_nginx(api: client.ApiClient, lab: Lab, *, dry_run: bool = False) -> list[Check]:
    """Each upstream answers through the proxy at https://nginx.<domain>/<name>/ (not 502/503/504)."""
    app = settings(lab).enabled().get("nginx")
    if dry_run or app is None:
        return []
    checks = []
    with httpx.Client(**https_client(net.traefik_address(api), app.host, certs.issuer_ca(lab), timeout=30)) as http:
        for name, url in sorted(app.upstreams.items()):
            try:
                answer = http.get(f"/{name}/")
                detail, ok = f"HTTP {answer.status_code} from {url}", answer.status_code < 500
            except httpx.HTTPError as exc:
                detail, ok = f"{type(exc).__name__}: {exc}", False
            checks.append(Check(f"upstream {name} answers through the proxy", ok, detail))
    return checks
