"""prometheus-operator (v0.8x), acting while a Ready operator pod of kube-prometheus-stack runs.

From each ``Prometheus`` it makes what the real operator makes: Secret ``prometheus-<name>``
(``prometheus.yaml.gz``), ConfigMap ``prometheus-<name>-rulefiles-0`` (one file per selected
PrometheusRule, ``<namespace>-<name>-<uid>.yaml``), the governing Service ``prometheus-operated``
and StatefulSet ``prometheus-<name>`` (retention flags, ``storageSpec``'s claim template,
``secrets``/``configMaps`` mounted at ``/etc/prometheus/secrets|configmaps/<name>``). From each
``Alertmanager``: Secret ``alertmanager-<name>-generated`` (``alertmanager.yaml.gz``: the
``configSecret``'s ``alertmanager.yaml`` with the selected AlertmanagerConfigs' routes prepended
under the root route, each with the ``namespace`` matcher and ``continue: true``, their receivers
named ``<namespace>/<config>/<receiver>``), ``alertmanager-operated`` and the StatefulSet.

The generated scrape configuration is the real one's (job ``serviceMonitor/<ns>/<name>/<i>`` or
``podMonitor/<ns>/<name>/<i>``, the same relabelling into namespace/service/pod/container/
endpoint/job/instance) except for discovery: Debian's Prometheus has no Kubernetes SD, so each
job reads ``file_sd`` files the operator writes into the pod's ``config_out`` volume, carrying the
``__meta_kubernetes_*`` labels Kubernetes SD would (Prometheus watches those files: endpoints
that come and go need no reload). The config-reloader sidecar's work is done here as well: the
StatefulSet's ``init-config-reloader`` step (unpacking the Secret before the program starts) is
the program adapter's, and a changed configuration or rule set is written into the running
pod's volumes and loaded with ``POST /-/reload``. What the operator generates carries the user's
durations; the programs read them on the lab's clock (``labsim.runtime.programs.labclock``).
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from labsim.apps.pods import ready_pods
from labsim.kube.controllers.kubelet import _internal_ip
from labsim.kube.controllers.pods import is_ready
from labsim.kube.controllers.workqueue import Controller, Key
from labsim.kube.selectors import match_label_selector
from labsim.kube.store import StoreError
from labsim.runtime.programs import alertmanager as alertmanager_program
from labsim.runtime.programs import labclock
from labsim.runtime.programs import prometheus as prometheus_program

log = logging.getLogger(__name__)
OPERATOR = {"app.kubernetes.io/component": "prometheus-operator"}
GROUP = "monitoring.coreos.com"
MANAGED_BY = "prometheus-operator"
_ALL = "all"
PROM_CONFIG = "/etc/prometheus/config_out/prometheus.env.yaml"
AM_CONFIG = "/etc/alertmanager/config_out/alertmanager.env.yaml"
RELOADER = "quay.io/prometheus-operator/prometheus-config-reloader:v0.83.0"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class PrometheusOperator(Controller):
    name = "prometheus-operator"

    async def run(self) -> None:
        """The monitoring.coreos.com kinds exist once the chart has installed their CRDs."""
        subscription = self.store.subscribe(self.res("apiextensions.k8s.io/v1", "CustomResourceDefinition"))
        try:
            while not all(self.store.catalog.by_kind(f"{GROUP}/v1", k) for k in ("Prometheus", "Alertmanager",
                                                                                  "ServiceMonitor", "PrometheusRule")):
                await subscription.next_event()
        finally:
            subscription.close()
        await super().run()

    def watches(self):
        everything = lambda event_type, obj: [_ALL]  # noqa: E731
        kinds = [(f"{GROUP}/v1", k) for k in ("Prometheus", "Alertmanager", "ServiceMonitor", "PodMonitor",
                                              "PrometheusRule")]
        if self.store.catalog.by_kind(f"{GROUP}/v1alpha1", "AlertmanagerConfig"):
            kinds.append((f"{GROUP}/v1alpha1", "AlertmanagerConfig"))
        watched = [(self.res(v, k), everything) for v, k in kinds]
        watched += [(self.res("v1", "Endpoints"), everything), (self.res("v1", "Service"), everything),
                    (self.res("v1", "Secret"), _not_generated), (self.res("v1", "Pod"), everything),
                    (self.res("v1", "Node"), everything)]
        return watched

    async def reconcile(self, key: Key) -> None:
        operators = ready_pods(self.store, OPERATOR)
        if not operators:
            return
        kubelet = _arg(operators[0], "--kubelet-service")
        if kubelet and "/" in kubelet:
            self._kubelet_service(*kubelet.split("/", 1))
        for prom in self._list(f"{GROUP}/v1", "Prometheus"):
            await self._prometheus(prom)
        for am in self._list(f"{GROUP}/v1", "Alertmanager"):
            await self._alertmanager(am)

    def _list(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict]:
        if not self.store.catalog.by_kind(api_version, kind):
            return []
        found = self.store.list(self.res(api_version, kind), namespace)
        return sorted(found, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    def _kubelet_service(self, ns: str, name: str) -> None:
        """``--kubelet-service``: a headless Service whose Endpoints are the Ready nodes' addresses,
        which the operator keeps for the ``kubelet`` ServiceMonitor."""
        labels = {"k8s-app": "kubelet", "app.kubernetes.io/name": "kubelet", "app.kubernetes.io/managed-by": MANAGED_BY}
        ports = [("https-metrics", 10250), ("http-metrics", 10255), ("cadvisor", 4194)]
        self._put({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": labels},
                   "spec": {"clusterIP": "None", "type": "ClusterIP",
                            "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in ports]}})
        addresses = [{"ip": ip, "targetRef": {"kind": "Node", "name": node["metadata"]["name"]}}
                     for node in sorted(self.store.list(self.res("v1", "Node")), key=lambda n: n["metadata"]["name"])
                     if is_ready(node) and (ip := _internal_ip(node))]
        subsets = [{"addresses": addresses, "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports]}]
        self._put({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns, "labels": labels},
                   "subsets": subsets if addresses else []})

    # -- selection ------------------------------------------------------------------------------
    def _selected(self, owner: dict, api_version: str, kind: str, field: str) -> list[dict]:
        """The objects ``spec.<field>Selector`` picks in the namespaces ``<field>NamespaceSelector``
        picks (nil: none / the owner's namespace only; ``{}``: all)."""
        spec = owner.get("spec") or {}
        selector, ns_selector = spec.get(f"{field}Selector"), spec.get(f"{field}NamespaceSelector")
        if selector is None:
            return []
        namespaces = self._namespaces(owner, ns_selector)
        return [o for o in self._list(api_version, kind) if o["metadata"]["namespace"] in namespaces
                and match_label_selector(selector, o["metadata"].get("labels") or {})]

    def _namespaces(self, owner: dict, selector: dict | None) -> set[str]:
        if selector is None:
            return {owner["metadata"]["namespace"]}
        if selector.get("any"):
            return {n["metadata"]["name"] for n in self.store.list(self.res("v1", "Namespace"))}
        if selector.get("matchNames"):
            return set(selector["matchNames"])
        return {n["metadata"]["name"] for n in self.store.list(self.res("v1", "Namespace"))
                if match_label_selector(selector, n["metadata"].get("labels") or {})}

    # -- Prometheus -----------------------------------------------------------------------------
    async def _prometheus(self, prom: dict) -> None:
        name, ns = prom["metadata"]["name"], prom["metadata"]["namespace"]
        jobs, targets = self._scrape_jobs(prom)
        targets["alertmanagers"] = self._alertmanager_targets(prom)
        config = prometheus_config(prom, jobs)
        rules = {f"{r['metadata']['namespace']}-{r['metadata']['name']}-{r['metadata']['uid']}.yaml":
                 _yaml({"groups": (r.get("spec") or {}).get("groups") or []})
                 for r in self._selected(prom, f"{GROUP}/v1", "PrometheusRule", "rule")}
        owner = [_owner(prom)]
        self._put({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": f"prometheus-{name}", "namespace": ns, "ownerReferences": owner,
                                "labels": {"managed-by": MANAGED_BY}},
                   "data": {"prometheus.yaml.gz": _gz(config)}})
        self._put({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": f"prometheus-{name}-rulefiles-0", "namespace": ns, "ownerReferences": owner,
                                "labels": {"managed-by": MANAGED_BY, "prometheus-name": name}},
                   "data": rules})
        self._put(_operated_service("prometheus", ns, [{"name": "web", "port": 9090, "targetPort": "web"}]))
        self._put(prometheus_statefulset(prom))
        for pod in self._pods("prometheus", name, ns):
            await self._sync_prometheus(pod, config, rules, targets)

    def _pods(self, app: str, name: str, ns: str) -> list[dict]:
        pods = self.store.list(self.res("v1", "Pod"), ns, labels={"app.kubernetes.io/name": app,
                                                                  "app.kubernetes.io/instance": name})
        return [p for p in pods if (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")
                and self.cluster.runtime.runs_process(p)]

    async def _sync_prometheus(self, pod: dict, config: str, rules: dict[str, str], targets: dict[str, list]) -> None:
        """The reloader's part: the files in the pod's volumes, then ``/-/reload`` if they changed."""
        container = _container(pod, "prometheus")
        fs = self.cluster.runtime.filesystem(pod, container)
        out = fs.host_path("/etc/prometheus/config_out")
        out.mkdir(parents=True, exist_ok=True)
        for job, groups in targets.items():
            _write_if_changed(out / _sd_file(job), json.dumps(groups, indent=1, sort_keys=True))
        rules_dir = fs.host_path(f"/etc/prometheus/rules/{pod['metadata']['name'].rsplit('-', 1)[0]}-rulefiles-0")
        changed = _write_if_changed(out / "prometheus.env.yaml", config.replace("$(POD_NAME)", pod["metadata"]["name"]))
        changed |= _sync_dir(rules_dir, rules)
        if changed:
            prometheus_program.PROGRAM.rewrite_config(fs, PROM_CONFIG, self.cluster.clock.time_scale)
            await self._reload(pod, 9090)

    async def _reload(self, pod: dict, port: int) -> None:
        if not is_ready(pod):
            return  # a starting program reads the files anyway
        url = f"http://{pod['status']['podIP']}:{port}/-/reload"
        try:
            async with aiohttp.ClientSession() as session, session.post(url, timeout=aiohttp.ClientTimeout(10)) as reply:
                if reply.status != 200:
                    log.warning("reload of %s: %s %s", pod["metadata"]["name"], reply.status, await reply.text())
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("reload of %s failed: %s", pod["metadata"]["name"], error)

    def _scrape_jobs(self, prom: dict) -> tuple[list[dict], dict[str, list]]:
        """(scrape configs, job -> file SD target groups) for the selected monitors."""
        jobs, targets = [], {}
        interval = (prom.get("spec") or {}).get("scrapeInterval") or "30s"
        for monitor in self._selected(prom, f"{GROUP}/v1", "ServiceMonitor", "serviceMonitor"):
            if not _valid_timeouts(monitor, "endpoints", interval):
                continue
            groups = self._service_targets(monitor)
            for i, endpoint in enumerate((monitor.get("spec") or {}).get("endpoints") or []):
                job = f"serviceMonitor/{monitor['metadata']['namespace']}/{monitor['metadata']['name']}/{i}"
                jobs.append(service_monitor_job(job, monitor, endpoint))
                targets[job] = groups
        for monitor in self._selected(prom, f"{GROUP}/v1", "PodMonitor", "podMonitor"):
            if not _valid_timeouts(monitor, "podMetricsEndpoints", interval):
                continue
            groups = self._pod_targets(monitor)
            for i, endpoint in enumerate((monitor.get("spec") or {}).get("podMetricsEndpoints") or []):
                job = f"podMonitor/{monitor['metadata']['namespace']}/{monitor['metadata']['name']}/{i}"
                jobs.append(pod_monitor_job(job, monitor, endpoint))
                targets[job] = groups
        return jobs, targets

    def _monitor_namespaces(self, monitor: dict) -> set[str]:
        selector = (monitor.get("spec") or {}).get("namespaceSelector") or {}
        if selector.get("any"):
            return {n["metadata"]["name"] for n in self.store.list(self.res("v1", "Namespace"))}
        return set(selector.get("matchNames") or [monitor["metadata"]["namespace"]])

    def _service_targets(self, monitor: dict) -> list[dict]:
        """What Kubernetes SD's ``endpoints`` role finds for the Services the monitor selects."""
        selector = (monitor.get("spec") or {}).get("selector") or {}
        groups = []
        for ns in sorted(self._monitor_namespaces(monitor)):
            for svc in self.store.list(self.res("v1", "Service"), ns):
                if not match_label_selector(selector, svc["metadata"].get("labels") or {}):
                    continue
                endpoints = self.store.get(self.res("v1", "Endpoints"), ns, svc["metadata"]["name"]) or {}
                for subset in endpoints.get("subsets") or []:
                    for ready, addresses in (("true", subset.get("addresses") or []),
                                             ("false", subset.get("notReadyAddresses") or [])):
                        for address in addresses:
                            for port in subset.get("ports") or []:
                                groups.append(self._endpoint_group(svc, address, port, ready))
        return groups

    def _endpoint_group(self, svc: dict, address: dict, port: dict, ready: str) -> dict:
        labels = {"__meta_kubernetes_namespace": svc["metadata"]["namespace"],
                  "__meta_kubernetes_service_name": svc["metadata"]["name"],
                  "__meta_kubernetes_endpoints_name": svc["metadata"]["name"],
                  "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
                  "__meta_kubernetes_endpoint_port_protocol": port.get("protocol", "TCP"),
                  "__meta_kubernetes_endpoint_ready": ready,
                  **_label_metas("service", svc["metadata"].get("labels") or {})}
        ref = address.get("targetRef") or {}
        if address.get("nodeName"):
            labels["__meta_kubernetes_endpoint_node_name"] = address["nodeName"]
        if ref.get("kind"):
            labels["__meta_kubernetes_endpoint_address_target_kind"] = ref["kind"]
            labels["__meta_kubernetes_endpoint_address_target_name"] = ref.get("name", "")
        if ref.get("kind") == "Pod":
            pod = self.store.get(self.res("v1", "Pod"), ref.get("namespace") or svc["metadata"]["namespace"], ref["name"])
            if pod is not None:
                labels.update(_pod_metas(pod, port.get("port")))
        return {"targets": [f"{address['ip']}:{port['port']}"], "labels": labels}

    def _pod_targets(self, monitor: dict) -> list[dict]:
        selector = (monitor.get("spec") or {}).get("selector") or {}
        groups = []
        for ns in sorted(self._monitor_namespaces(monitor)):
            for pod in self.store.list(self.res("v1", "Pod"), ns):
                ip = (pod.get("status") or {}).get("podIP")
                if not ip or not match_label_selector(selector, pod["metadata"].get("labels") or {}):
                    continue
                for container in pod["spec"].get("containers") or []:
                    for port in container.get("ports") or []:
                        groups.append({"targets": [f"{ip}:{port['containerPort']}"],
                                       "labels": _pod_metas(pod, port["containerPort"])})
        return groups

    def _alertmanager_targets(self, prom: dict) -> list[dict]:
        """The Alertmanagers ``spec.alerting`` names: their Services' endpoints, as groups."""
        groups = []
        for entry in ((prom.get("spec") or {}).get("alerting") or {}).get("alertmanagers") or []:
            ns = entry.get("namespace") or prom["metadata"]["namespace"]
            svc = self.store.get(self.res("v1", "Service"), ns, entry["name"])
            endpoints = self.store.get(self.res("v1", "Endpoints"), ns, entry["name"]) or {}
            for subset in endpoints.get("subsets") or [] if svc else []:
                for address in subset.get("addresses") or []:
                    for port in subset.get("ports") or []:
                        if str(port.get("name")) == str(entry.get("port")) or port.get("port") == entry.get("port"):
                            groups.append(self._endpoint_group(svc, address, port, "true"))
        return groups

    # -- Alertmanager ---------------------------------------------------------------------------
    async def _alertmanager(self, am: dict) -> None:
        meta, spec = am["metadata"], am.get("spec") or {}
        name, ns = meta["name"], meta["namespace"]
        secret = self.store.get(self.res("v1", "Secret"), ns, spec.get("configSecret") or f"alertmanager-{name}") or {}
        base = yaml.safe_load(_secret_text(secret, "alertmanager.yaml") or "") or {}
        configs = self._selected(am, f"{GROUP}/v1alpha1", "AlertmanagerConfig", "alertmanagerConfig") \
            if self.store.catalog.by_kind(f"{GROUP}/v1alpha1", "AlertmanagerConfig") else []
        config = yaml.safe_dump(merge_alertmanager_configs(base, configs, self._secret_value), sort_keys=False)
        self._put({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": f"alertmanager-{name}-generated", "namespace": ns,
                                "ownerReferences": [_owner(am)], "labels": {"managed-by": MANAGED_BY}},
                   "data": {"alertmanager.yaml.gz": _gz(config)}})
        self._put(_operated_service("alertmanager", ns, [{"name": "web", "port": 9093, "targetPort": "web"},
                                                         {"name": "tcp-mesh", "port": 9094, "targetPort": 9094}]))
        self._put(alertmanager_statefulset(am))
        for pod in self._pods("alertmanager", name, ns):
            fs = self.cluster.runtime.filesystem(pod, _container(pod, "alertmanager"))
            out = fs.host_path("/etc/alertmanager/config_out")
            out.mkdir(parents=True, exist_ok=True)
            if _write_if_changed(out / "alertmanager.env.yaml", config):
                alertmanager_program.PROGRAM.rewrite_config(fs, AM_CONFIG, self.cluster.clock.time_scale)
                await self._reload(pod, 9093)

    def _secret_value(self, namespace: str, ref: dict) -> str:
        secret = self.store.get(self.res("v1", "Secret"), namespace, ref.get("name", "")) or {}
        return _secret_text(secret, ref.get("key", ""))

    # -- writing objects -----------------------------------------------------------------------
    def _put(self, obj: dict) -> None:
        res = self.res(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        current = self.store.get(res, meta["namespace"], meta["name"])
        if current is None:
            try:
                self.store.create(obj)
            except StoreError as error:
                if error.code != 409:
                    raise
            return
        fields = [k for k in obj if k not in ("apiVersion", "kind", "metadata", "status")]
        if all(current.get(k) == obj[k] for k in fields) and \
                all(current["metadata"].get(k) == meta.get(k) for k in ("labels", "ownerReferences") if k in meta):
            return
        if obj["kind"] == "Service":  # keep the allocated ClusterIP
            obj = {**obj, "spec": {**current.get("spec", {}), **obj["spec"]}}
            if current.get("spec") == obj["spec"]:
                return
        updated = {**current, **{k: obj[k] for k in fields}}
        updated["metadata"] = {**current["metadata"], **{k: meta[k] for k in ("labels", "ownerReferences") if k in meta}}
        self.store.update(updated)


# -- what the operator generates ------------------------------------------------------------------

def prometheus_config(prom: dict, jobs: list[dict]) -> str:
    spec, meta = prom.get("spec") or {}, prom["metadata"]
    name, ns = meta["name"], meta["namespace"]
    interval = spec.get("scrapeInterval") or "30s"
    external = {"prometheus": f"{ns}/{name}", "prometheus_replica": "$(POD_NAME)", **(spec.get("externalLabels") or {})}
    config: dict[str, Any] = {
        "global": {"evaluation_interval": spec.get("evaluationInterval") or "30s", "scrape_interval": interval,
                   "external_labels": external},
        "rule_files": [f"/etc/prometheus/rules/prometheus-{name}-rulefiles-0/*.yaml"],
        "scrape_configs": jobs,
    }
    entries = (spec.get("alerting") or {}).get("alertmanagers") or []
    if entries:
        config["alerting"] = {
            "alert_relabel_configs": [{"action": "labeldrop", "regex": "prometheus_replica"}],
            "alertmanagers": [{"path_prefix": e.get("pathPrefix", "/"), "scheme": e.get("scheme", "http"),
                               "api_version": e.get("apiVersion", "v2"),
                               "file_sd_configs": [{"files": [f"/etc/prometheus/config_out/{_sd_file('alertmanagers')}"]}],
                               "relabel_configs": [
                                   {"action": "keep", "source_labels": ["__meta_kubernetes_service_name"],
                                    "regex": e["name"]},
                                   {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                                    "regex": str(e.get("port"))}]}
                              for e in entries]}
    return _yaml(config)


_DUMPED: dict[str, str] = {}  # JSON of data -> its YAML (the last few)


def _yaml(data: dict) -> str:  # JSON data only (what the store holds)
    """``yaml.safe_dump(data, sort_keys=False)``, remembered: the operator renders its configs again at
    each Pod, Endpoints or Service event (a rollout on 12 nodes makes hundreds) and they rarely change;
    PyYAML's dumper was ~10 % of the twin's CPU in a cold 12-node series (json.dumps is far cheaper)."""
    key = json.dumps(data)
    if key not in _DUMPED:
        if len(_DUMPED) >= 64:
            _DUMPED.clear()
        _DUMPED[key] = yaml.safe_dump(data, sort_keys=False)
    return _DUMPED[key]


def _keep_selected(spec: dict, kind: str) -> list[dict]:
    """The operator's keep rules for a monitor's ``selector.matchLabels`` on the service's or pod's labels."""
    return [{"action": "keep", "source_labels": [f"__meta_kubernetes_{kind}_label_{_sanitize(key)}",
                                                 f"__meta_kubernetes_{kind}_labelpresent_{_sanitize(key)}"],
             "regex": f"({val});true"}
            for key, val in sorted(((spec.get("selector") or {}).get("matchLabels") or {}).items())]


def service_monitor_job(job: str, monitor: dict, endpoint: dict) -> dict:
    """The operator's scrape config for one ServiceMonitor endpoint (its relabelling, file SD)."""
    spec = monitor.get("spec") or {}
    relabel = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    relabel += _keep_selected(spec, "service")
    if endpoint.get("port"):
        relabel.append({"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                        "regex": endpoint["port"]})
    elif endpoint.get("targetPort"):  # a name keeps the container port of that name, a number that number
        by = "name" if isinstance(endpoint["targetPort"], str) else "number"
        relabel.append({"action": "keep", "source_labels": [f"__meta_kubernetes_pod_container_port_{by}"],
                        "regex": str(endpoint["targetPort"])})
    relabel += [
        {"source_labels": ["__meta_kubernetes_endpoint_address_target_kind",
                           "__meta_kubernetes_endpoint_address_target_name"],
         "separator": ";", "regex": "Node;(.*)", "replacement": "${1}", "target_label": "node"},
        {"source_labels": ["__meta_kubernetes_endpoint_address_target_kind",
                           "__meta_kubernetes_endpoint_address_target_name"],
         "separator": ";", "regex": "Pod;(.*)", "replacement": "${1}", "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
    ]
    if spec.get("jobLabel"):
        relabel.append({"source_labels": [f"__meta_kubernetes_service_label_{_sanitize(spec['jobLabel'])}"],
                        "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
    relabel.append({"target_label": "endpoint", "replacement": str(endpoint.get("port") or endpoint.get("targetPort"))})
    relabel += [_relabel(r) for r in endpoint.get("relabelings") or []]
    return _job(job, endpoint, relabel)


def pod_monitor_job(job: str, monitor: dict, endpoint: dict) -> dict:
    spec = monitor.get("spec") or {}
    relabel = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    relabel += _keep_selected(spec, "pod")
    if endpoint.get("port"):
        relabel.append({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": endpoint["port"]})
    relabel += [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}"},
    ]
    if spec.get("jobLabel"):
        relabel.append({"source_labels": [f"__meta_kubernetes_pod_label_{_sanitize(spec['jobLabel'])}"],
                        "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
    relabel.append({"target_label": "endpoint", "replacement": str(endpoint.get("port") or endpoint.get("targetPort"))})
    relabel += [_relabel(r) for r in endpoint.get("relabelings") or []]
    return _job(job, endpoint, relabel)


def _job(job: str, endpoint: dict, relabel: list[dict]) -> dict:
    config: dict[str, Any] = {"job_name": job, "honor_labels": bool(endpoint.get("honorLabels")),
                              "file_sd_configs": [{"files": [f"/etc/prometheus/config_out/{_sd_file(job)}"]}]}
    for key, field in (("interval", "scrape_interval"), ("scrapeTimeout", "scrape_timeout"),
                       ("path", "metrics_path"), ("scheme", "scheme")):
        if endpoint.get(key):
            config[field] = endpoint[key]
    tls = endpoint.get("tlsConfig") or {}
    if tls:
        config["tls_config"] = {k2: tls[k1] for k1, k2 in (("caFile", "ca_file"), ("serverName", "server_name"),
                                                            ("insecureSkipVerify", "insecure_skip_verify"),
                                                            ("certFile", "cert_file"), ("keyFile", "key_file"))
                                if k1 in tls}
    if endpoint.get("bearerTokenFile"):
        config["authorization"] = {"type": "Bearer", "credentials_file": endpoint["bearerTokenFile"]}
    if endpoint.get("params"):
        config["params"] = endpoint["params"]
    config["relabel_configs"] = relabel
    if endpoint.get("metricRelabelings"):
        config["metric_relabel_configs"] = [_relabel(r) for r in endpoint["metricRelabelings"]]
    return config


def _relabel(rule: dict) -> dict:
    """A RelabelConfig of the CRDs (camelCase) as Prometheus' YAML (snake_case)."""
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return {names.get(k, k.lower() if k == "action" else k): (v.lower() if k == "action" else v)
            for k, v in rule.items()}


def merge_alertmanager_configs(base: dict, configs: list[dict], secret_value) -> dict:
    """The base config with each AlertmanagerConfig's route (namespace matcher, ``continue``)
    prepended under the root route and its receivers and inhibit rules added, named as the
    operator names them."""
    merged = dict(base)
    route = dict(merged.get("route") or {})
    routes, receivers, inhibits = [], list(merged.get("receivers") or []), list(merged.get("inhibit_rules") or [])
    for amc in configs:
        ns, cfg_name, spec = amc["metadata"]["namespace"], amc["metadata"]["name"], amc.get("spec") or {}
        prefix = f"{ns}/{cfg_name}/"
        if spec.get("route"):
            top = _route(spec["route"], prefix)
            top["matchers"] = [f'namespace="{ns}"', *top.get("matchers", [])]
            top["continue"] = True
            routes.append(top)
        for receiver in spec.get("receivers") or []:
            receivers.append(_receiver(receiver, prefix, ns, secret_value))
        for rule in spec.get("inhibitRules") or []:
            inhibits.append({"source_matchers": [f'namespace="{ns}"', *map(_matcher, rule.get("sourceMatch") or [])],
                             "target_matchers": [f'namespace="{ns}"', *map(_matcher, rule.get("targetMatch") or [])],
                             **({"equal": rule["equal"]} if rule.get("equal") else {})})
    if routes:
        route["routes"] = routes + list(route.get("routes") or [])
    merged["route"] = route
    merged["receivers"] = receivers
    if inhibits:
        merged["inhibit_rules"] = inhibits
    return merged


def _matcher(m: dict) -> str:
    op = m.get("matchType") or ("=~" if m.get("regex") else "=")
    return f'{m["name"]}{op}{json.dumps(str(m.get("value", "")))}'


def _route(route: dict, prefix: str) -> dict:
    out: dict[str, Any] = {}
    if route.get("receiver"):
        out["receiver"] = prefix + route["receiver"]
    for key, field in (("groupBy", "group_by"), ("groupWait", "group_wait"), ("groupInterval", "group_interval"),
                       ("repeatInterval", "repeat_interval")):
        if route.get(key):
            out[field] = route[key]
    if route.get("matchers"):
        out["matchers"] = [_matcher(m) for m in route["matchers"]]
    if route.get("continue"):
        out["continue"] = True
    if route.get("routes"):
        out["routes"] = [_route(r, prefix) for r in route["routes"]]
    return out


def _receiver(receiver: dict, prefix: str, ns: str, secret_value) -> dict:
    out: dict[str, Any] = {"name": prefix + receiver["name"]}
    hooks = []
    for hook in receiver.get("webhookConfigs") or []:
        url = hook.get("url") or secret_value(ns, hook.get("urlSecret") or {})
        entry: dict[str, Any] = {"url": url, "send_resolved": hook.get("sendResolved", True)}
        if hook.get("maxAlerts"):
            entry["max_alerts"] = hook["maxAlerts"]
        tls = ((hook.get("httpConfig") or {}).get("tlsConfig") or {})
        if tls.get("insecureSkipVerify"):
            entry["http_config"] = {"tls_config": {"insecure_skip_verify": True}}
        hooks.append(entry)
    if hooks:
        out["webhook_configs"] = hooks
    return out


def prometheus_statefulset(prom: dict) -> dict:
    name, spec = prom["metadata"]["name"], prom.get("spec") or {}
    version = str(spec.get("version") or "v3.5.0")
    labels = {"app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": MANAGED_BY,
              "app.kubernetes.io/name": "prometheus", "app.kubernetes.io/version": version.lstrip("v"),
              "operator.prometheus.io/name": name, "operator.prometheus.io/shard": "0", "prometheus": name}
    args = [f"--config.file={PROM_CONFIG}", "--web.enable-lifecycle", f"--web.external-url={spec.get('externalUrl', '')}",
            f"--web.route-prefix={spec.get('routePrefix', '/')}", "--storage.tsdb.path=/prometheus",
            f"--storage.tsdb.retention.time={spec.get('retention') or '24h'}"]
    if spec.get("retentionSize"):
        args.append(f"--storage.tsdb.retention.size={spec['retentionSize']}")
    if spec.get("enableAdminAPI"):
        args.append("--web.enable-admin-api")
    args += [f"--{a['name']}" + (f"={a['value']}" if a.get("value") else "") for a in spec.get("additionalArgs") or []]
    db = f"prometheus-{name}-db"
    mounts = [{"name": "config-out", "mountPath": "/etc/prometheus/config_out", "readOnly": True},
              {"name": db, "mountPath": "/prometheus", "subPath": "prometheus-db"},
              {"name": f"prometheus-{name}-rulefiles-0", "mountPath": f"/etc/prometheus/rules/prometheus-{name}-rulefiles-0"}]
    volumes = [{"name": "config", "secret": {"secretName": f"prometheus-{name}"}},
               {"name": "config-out", "emptyDir": {"medium": "Memory"}},
               {"name": f"prometheus-{name}-rulefiles-0", "configMap": {"name": f"prometheus-{name}-rulefiles-0"}}]
    templates = _spec_volumes(spec, "/etc/prometheus", db, mounts, volumes)
    containers = [
        {"name": "prometheus", "image": spec.get("image") or f"quay.io/prometheus/prometheus:{version}", "args": args,
         "ports": [{"name": "web", "containerPort": 9090, "protocol": "TCP"}],
         "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "web"}, "periodSeconds": 5, "failureThreshold": 3},
         "volumeMounts": mounts + [{"name": "config", "mountPath": "/etc/prometheus/config", "readOnly": True}],
         **({"resources": spec["resources"]} if spec.get("resources") else {})},
        _reloader("prometheus", name, ["--reload-url=http://127.0.0.1:9090/-/reload",
                                       "--config-file=/etc/prometheus/config/prometheus.yaml.gz",
                                       f"--config-envsubst-file={PROM_CONFIG}",
                                       f"--watched-dir=/etc/prometheus/rules/prometheus-{name}-rulefiles-0"]),
    ]
    return _statefulset(prom, f"prometheus-{name}", "prometheus-operated", labels, spec, containers, volumes, templates)


def _spec_volumes(spec: dict, root: str, db: str, mounts: list[dict], volumes: list[dict]) -> list[dict]:
    """What the operator adds for ``spec.secrets`` and ``spec.configMaps`` (mounted under
    ``<root>/secrets/<name>`` and ``<root>/configmaps/<name>``) and for ``spec.storage``: the
    data volume's claim template, or an emptyDir without one. Returns the claim templates."""
    for kind, folder in (("secrets", "secret"), ("configMaps", "configmap")):
        for item in spec.get(kind) or []:
            mounts.append({"name": f"{folder}-{item}", "mountPath": f"{root}/{kind.lower()}/{item}", "readOnly": True})
            volumes.append({"name": f"{folder}-{item}", **({"secret": {"secretName": item}} if folder == "secret"
                                                           else {"configMap": {"name": item}})})
    claim = (spec.get("storage") or {}).get("volumeClaimTemplate")
    if claim:
        return [{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": db},
                 "spec": claim.get("spec") or {}}]
    volumes.append({"name": db, "emptyDir": {}})
    return []


def alertmanager_statefulset(am: dict) -> dict:
    meta, spec = am["metadata"], am.get("spec") or {}
    name = meta["name"]
    version = str(spec.get("version") or "v0.28.1")
    labels = {"alertmanager": name, "app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": MANAGED_BY,
              "app.kubernetes.io/name": "alertmanager", "app.kubernetes.io/version": version.lstrip("v")}
    args = [f"--config.file={AM_CONFIG}", "--storage.path=/alertmanager",
            f"--data.retention={spec.get('retention') or '120h'}", "--cluster.listen-address=",
            "--web.listen-address=:9093", f"--web.external-url={spec.get('externalUrl', '')}",
            f"--web.route-prefix={spec.get('routePrefix', '/')}", "--cluster.reconnect-timeout=5m"]
    db = f"alertmanager-{name}-db"
    mounts = [{"name": "config-volume", "mountPath": "/etc/alertmanager/config"},
              {"name": "config-out", "mountPath": "/etc/alertmanager/config_out", "readOnly": True},
              {"name": db, "mountPath": "/alertmanager"}]
    volumes = [{"name": "config-volume", "secret": {"secretName": f"alertmanager-{name}-generated"}},
               {"name": "config-out", "emptyDir": {"medium": "Memory"}}]
    templates = _spec_volumes(spec, "/etc/alertmanager", db, mounts, volumes)
    containers = [
        {"name": "alertmanager", "image": spec.get("image") or f"quay.io/prometheus/alertmanager:{version}", "args": args,
         "ports": [{"name": "web", "containerPort": 9093, "protocol": "TCP"},
                   {"name": "mesh-tcp", "containerPort": 9094, "protocol": "TCP"}],
         "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "web"}, "periodSeconds": 5},
         "volumeMounts": mounts, **({"resources": spec["resources"]} if spec.get("resources") else {})},
        _reloader("alertmanager", name, ["--reload-url=http://127.0.0.1:9093/-/reload",
                                         "--config-file=/etc/alertmanager/config/alertmanager.yaml.gz",
                                         f"--config-envsubst-file={AM_CONFIG}",
                                         "--watched-dir=/etc/alertmanager/config"]),
    ]
    return _statefulset(am, f"alertmanager-{name}", "alertmanager-operated", labels, spec, containers, volumes, templates)


def _reloader(app: str, name: str, args: list[str]) -> dict:
    """The config-reloader sidecar: its image does not run here (this model does its work)."""
    return {"name": "config-reloader", "image": RELOADER, "command": ["/bin/prometheus-config-reloader"],
            "args": ["--listen-address=:8080", *args],
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "SHARD", "value": "0"}],
            "ports": [{"name": "reloader-web", "containerPort": 8080, "protocol": "TCP"}]}


def _statefulset(owner: dict, name: str, service: str, labels: dict, spec: dict, containers: list, volumes: list,
                 templates: list) -> dict:
    pod_spec = {"serviceAccountName": spec.get("serviceAccountName") or "default", "automountServiceAccountToken": True,
                "containers": containers, "volumes": volumes, "terminationGracePeriodSeconds": 600,
                **({"securityContext": spec["securityContext"]} if spec.get("securityContext") else {}),
                **({"nodeSelector": spec["nodeSelector"]} if spec.get("nodeSelector") else {})}
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": name, "namespace": owner["metadata"]["namespace"], "labels": dict(labels),
                        "ownerReferences": [_owner(owner)]},
           "spec": {"replicas": int(spec.get("replicas", 1)), "serviceName": service,
                    "podManagementPolicy": "Parallel", "updateStrategy": {"type": "RollingUpdate"},
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels,
                                              "annotations": {"kubectl.kubernetes.io/default-container":
                                                              containers[0]["name"]}},
                                 "spec": pod_spec}}}
    if templates:
        sts["spec"]["volumeClaimTemplates"] = templates
    return sts


def _operated_service(app: str, ns: str, ports: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"{app}-operated", "namespace": ns, "labels": {"managed-by": MANAGED_BY,
                                                                                "operated-" + app: "true"}},
            "spec": {"clusterIP": "None", "selector": {"app.kubernetes.io/name": app}, "ports": ports}}


def _owner(obj: dict) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def _arg(pod: dict, flag: str) -> str | None:
    args = (pod["spec"].get("containers") or [{}])[0].get("args") or []
    return next((a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")), None)


def _container(pod: dict, name: str) -> dict:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


def _sanitize(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


def _label_metas(kind: str, labels: dict) -> dict:
    found = {}
    for key, val in labels.items():
        found[f"__meta_kubernetes_{kind}_label_{_sanitize(key)}"] = val
        found[f"__meta_kubernetes_{kind}_labelpresent_{_sanitize(key)}"] = "true"
    return found


def _pod_metas(pod: dict, port: int | str | None) -> dict:
    meta, status = pod["metadata"], pod.get("status") or {}
    found = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_pod_name": meta["name"],
             "__meta_kubernetes_pod_ip": status.get("podIP", ""), "__meta_kubernetes_pod_uid": meta.get("uid", ""),
             "__meta_kubernetes_pod_node_name": pod["spec"].get("nodeName", ""),
             "__meta_kubernetes_pod_host_ip": status.get("hostIP", ""),
             "__meta_kubernetes_pod_phase": status.get("phase", ""),
             "__meta_kubernetes_pod_ready": "true" if is_ready(pod) else "false",
             **_label_metas("pod", meta.get("labels") or {})}
    for container in pod["spec"].get("containers") or []:
        for cport in container.get("ports") or []:
            if cport.get("containerPort") == port or cport.get("name") == port:
                found.update({"__meta_kubernetes_pod_container_name": container["name"],
                              "__meta_kubernetes_pod_container_port_name": cport.get("name", ""),
                              "__meta_kubernetes_pod_container_port_number": str(cport["containerPort"]),
                              "__meta_kubernetes_pod_container_port_protocol": cport.get("protocol", "TCP")})
                return found
    return found


def _valid_timeouts(monitor: dict, field: str, default_interval: str) -> bool:
    """The operator rejects a monitor with an endpoint whose scrapeTimeout exceeds its interval
    (Prometheus would refuse the whole configuration); it is left out and logged."""
    for endpoint in (monitor.get("spec") or {}).get(field) or []:
        timeout, interval = endpoint.get("scrapeTimeout"), endpoint.get("interval") or default_interval
        if timeout and labclock.seconds(timeout) > labclock.seconds(interval):
            log.warning("skipping %s/%s: scrapeTimeout %s greater than the scrape interval %s",
                        monitor["metadata"]["namespace"], monitor["metadata"]["name"], timeout, interval)
            return False
    return True


def _sd_file(job: str) -> str:
    return "sd-" + _sanitize(job) + ".json"


def _gz(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()


def _secret_text(secret: dict, key: str) -> str:
    data = (secret.get("data") or {}).get(key)
    if data is not None:
        return base64.b64decode(data).decode()
    return (secret.get("stringData") or {}).get(key, "")


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomically: Prometheus' file SD may read it any moment
    return True


def _sync_dir(folder: Path, files: dict[str, str]) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    changed = False
    for path in folder.iterdir():
        if path.name not in files and path.is_file():
            path.unlink()
            changed = True
    for name, text in files.items():
        changed |= _write_if_changed(folder / name, text)
    return changed


def _not_generated(event_type: str, obj: dict) -> list:
    """Secrets that feed the operator (its own outputs would loop)."""
    labels = obj["metadata"].get("labels") or {}
    return [] if labels.get("managed-by") == MANAGED_BY or obj.get("type") == "helm.sh/release.v1" else [_ALL]
