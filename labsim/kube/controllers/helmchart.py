"""k3s' Helm controller: for each ``HelmChart`` (helm.cattle.io/v1), a ``helm-install-<name>``
Job (klipper-helm) with its ServiceAccount, ClusterRoleBinding and values ConfigMaps; when the
Job completes, the chart's modelled objects are applied and a Helm release Secret is written
(so ``helm list`` sees the release); a change of the chart or its ``HelmChartConfig`` re-runs
the Job; deleting the HelmChart runs ``helm-delete-<name>`` and removes what it installed.
The controller waits until k3s has registered the HelmChart CRDs."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re

import yaml

from labsim.charts import CHART_MODELS, Release, index
from labsim.kube.controllers.events import WARNING, EventRecorder
from labsim.kube.controllers.kubelet import EXIT_CODE, LOG_LINE, RUN_SECONDS
from labsim.kube.controllers.pods import condition, controller_ref
from labsim.kube.controllers.times import rfc3339
from labsim.kube.controllers.workqueue import Controller, Key, by_name
from labsim.kube.store import StoreError

FINALIZER = "wrangler.cattle.io/on-helm-chart-remove"
CHART_LABEL = "helmcharts.helm.cattle.io/chart"
CONFIG_HASH = "helmcharts.helm.cattle.io/configHash"
JOB_IMAGE = "rancher/klipper-helm:v0.9.8-build20250709"
HELM_SECONDS = "10"  # modelled run time of a helm install or delete
_CHART_FILE = re.compile(r"^(?P<name>.+?)-(?P<version>v?\d[\w.+-]*)\.tgz$")


class HelmChartController(Controller):
    name = "helm-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.events = EventRecorder(self.store, self.clock, self.name)

    async def run(self) -> None:
        await self._crds_registered()
        self.charts = self.res("helm.cattle.io/v1", "HelmChart")
        self.configs = self.res("helm.cattle.io/v1", "HelmChartConfig")
        self.jobs = self.res("batch/v1", "Job")
        self.secrets = self.res("v1", "Secret")
        await super().run()

    async def _crds_registered(self) -> None:
        subscription = self.store.subscribe(self.res("apiextensions.k8s.io/v1", "CustomResourceDefinition"))
        try:
            while not all(self.store.catalog.by_kind("helm.cattle.io/v1", k) for k in ("HelmChart", "HelmChartConfig")):
                await subscription.next_event()
        finally:
            subscription.close()

    def watches(self):
        return [(self.charts, by_name), (self.configs, by_name), (self.jobs, _chart_of_job)]

    async def reconcile(self, key: Key) -> None:
        chart = self.store.get(self.charts, *key)
        if chart is None:
            return
        release = _release(chart, self.store.get(self.configs, *key))
        if chart["metadata"].get("deletionTimestamp"):
            if FINALIZER in chart["metadata"].get("finalizers", []):
                self._uninstall(chart, release)
            return
        if FINALIZER not in chart["metadata"].get("finalizers", []):
            chart["metadata"]["finalizers"] = [*chart["metadata"].get("finalizers", []), FINALIZER]
            chart = self.store.update(chart)
        self._prepare(chart, release)
        job = self._job(chart, release, "install")
        if _complete(job) and self._target_namespace(chart, release) and not self._installed(release):
            self._install(release)

    # -- the helm job --------------------------------------------------------------------------
    def _prepare(self, chart: dict, release: Release) -> None:
        """The ServiceAccount, ClusterRoleBinding and ConfigMaps the helm job mounts and runs as."""
        name, ns = chart["metadata"]["name"], chart["metadata"]["namespace"]
        owner = [controller_ref(chart)]
        values = yaml.safe_dump(release.values, sort_keys=False) if release.values else ""
        for obj in (
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": f"helm-{name}", "namespace": ns, "ownerReferences": owner}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",  # cluster-scoped: no owner
             "metadata": {"name": f"helm-{ns}-{name}"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
             "subjects": [{"kind": "ServiceAccount", "name": f"helm-{name}", "namespace": ns}]},
            {"apiVersion": "v1", "kind": "ConfigMap", "data": {"values-01_HelmChart.yaml": values},
             "metadata": {"name": f"chart-values-{name}", "namespace": ns, "ownerReferences": owner}},
            {"apiVersion": "v1", "kind": "ConfigMap", "data": {},
             "metadata": {"name": f"chart-content-{name}", "namespace": ns, "ownerReferences": owner}},
        ):
            self._apply(obj)

    def _job(self, chart: dict, release: Release, action: str) -> dict:
        """The helm-<action>-<name> Job for the chart's current configuration (re-created when it changes)."""
        name, ns = chart["metadata"]["name"], chart["metadata"]["namespace"]
        job_name = f"helm-{action}-{name}"
        config_hash = "SHA256=" + hashlib.sha256(json.dumps(
            [chart["spec"], release.values], sort_keys=True).encode()).hexdigest().upper()
        job = self.store.get(self.jobs, ns, job_name)
        if job is not None and (job["metadata"].get("annotations") or {}).get(CONFIG_HASH) != config_hash:
            self.store.delete(self.jobs, ns, job_name)
            job = None
        if job is None:
            job = self.store.create(_job_object(chart, release, job_name, action, config_hash))
            chart["status"] = {**(chart.get("status") or {}), "jobName": job_name}
            self.store.update(chart, subresource="status")
        return job

    # -- installing and removing the release -------------------------------------------------------
    def _target_namespace(self, chart: dict, release: Release) -> bool:
        """The release's namespace exists, or is created with ``createNamespace``; else helm fails."""
        namespaces = self.res("v1", "Namespace")
        if self.store.get(namespaces, None, release.namespace) is not None:
            return True
        if chart["spec"].get("createNamespace"):
            self.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": release.namespace}})
            return True
        self.events.record(chart, "InstallFailed", f'Error: INSTALLATION FAILED: create: failed to create: '
                           f'namespaces "{release.namespace}" not found', WARNING)
        return False

    def _installed(self, release: Release) -> bool:
        current = self._releases(release)
        if not current:
            return False
        doc = _decode(current[-1])
        return doc["config"] == release.values and doc["chart"]["metadata"]["version"] == release.version

    def _install(self, release: Release) -> None:
        objects = CHART_MODELS.get(release.chart, lambda r: [])(release)
        for obj in objects:
            self._apply(obj)
        previous = self._releases(release)
        for secret in previous:
            if secret["metadata"]["labels"].get("status") == "deployed":
                secret["metadata"]["labels"]["status"] = "superseded"
                doc = _decode(secret)
                doc["info"]["status"] = "superseded"
                secret["data"]["release"] = _encode(doc)
                self.store.update(secret)
        version = len(previous) + 1
        self.store.create(self._release_secret(release, version, objects))

    def _uninstall(self, chart: dict, release: Release) -> None:
        job = self._job(chart, release, "delete")
        if not _complete(job):
            return
        for obj in CHART_MODELS.get(release.chart, lambda r: [])(release):
            res = self.store.resource(obj["apiVersion"], obj["kind"])
            self.store.delete(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        for secret in self._releases(release):
            self.store.delete(self.secrets, secret["metadata"]["namespace"], secret["metadata"]["name"])
        name, ns = chart["metadata"]["name"], chart["metadata"]["namespace"]
        self.store.delete(self.res("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), None, f"helm-{ns}-{name}")
        self.store.delete(self.jobs, job["metadata"]["namespace"], job["metadata"]["name"])
        chart["metadata"]["finalizers"] = [f for f in chart["metadata"]["finalizers"] if f != FINALIZER]
        self.store.update(chart)

    def _releases(self, release: Release) -> list[dict]:
        found = self.store.list(self.secrets, release.namespace, labels={"owner": "helm", "name": release.name})
        return sorted(found, key=lambda s: int(s["metadata"]["labels"].get("version", "0")))

    def _release_secret(self, release: Release, version: int, objects: list[dict]) -> dict:
        now = rfc3339(self.clock.now())
        doc = {"name": release.name, "namespace": release.namespace, "version": version,
               "info": {"first_deployed": now, "last_deployed": now, "deleted": "", "status": "deployed",
                        "description": "Install complete" if version == 1 else "Upgrade complete"},
               "chart": {"metadata": {"name": release.chart, "version": release.version, "apiVersion": "v2",
                                      "appVersion": release.version.split("+")[0]},
                         "templates": [], "values": {}},
               "config": release.values,
               "manifest": "".join(f"---\n{yaml.safe_dump(obj, sort_keys=False)}" for obj in objects)}
        return {"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
                "metadata": {"name": f"sh.helm.release.v1.{release.name}.v{version}", "namespace": release.namespace,
                             "labels": {"name": release.name, "owner": "helm", "status": "deployed",
                                        "version": str(version), "modifiedAt": str(int(self.clock.now()))}},
                "data": {"release": _encode(doc)}}

    def _apply(self, obj: dict) -> None:
        """Create, or bring an existing object's content in line (what helm's three-way merge amounts to)."""
        res = self.store.resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        current = self.store.get(res, meta.get("namespace"), meta["name"])
        if current is None:
            try:
                self.store.create(obj)
            except StoreError as err:
                if err.code != 409:
                    raise
            return
        merged = _merge(current, {k: v for k, v in obj.items() if k != "status"}, by_name=True)
        if meta.get("ownerReferences"):
            merged["metadata"]["ownerReferences"] = meta["ownerReferences"]
        self.store.update(merged)


def _release(chart: dict, config: dict | None) -> Release:
    """The release a HelmChart describes: chart name and version, namespace, merged values."""
    spec = chart["spec"]
    source = spec.get("chart", "")
    match = _CHART_FILE.match(source.rsplit("/", 1)[-1])
    if match:
        name, version = match["name"], match["version"]
    else:
        name, version = source.rsplit("/", 1)[-1], spec.get("version") or "0.1.0"
    values = yaml.safe_load(spec.get("valuesContent") or "") or {}
    if config:
        values = _merge(values, yaml.safe_load((config.get("spec") or {}).get("valuesContent") or "") or {})
    for path, value in (spec.get("set") or {}).items():
        node = values
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return Release(chart["metadata"]["name"], spec.get("targetNamespace") or chart["metadata"]["namespace"],
                   name, version, values)


def _merge(base: dict, extra: dict, *, by_name: bool = False) -> dict:
    """``extra`` over ``base``: maps merge, other values are replaced (Helm's values), except that
    with ``by_name`` lists of named items merge item by item (applied objects: a Service's ports
    keep the nodePorts allocated to them)."""
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            out[key] = _merge(old, value, by_name=by_name)
        elif by_name and isinstance(value, list) and isinstance(old, list) and _named(value) and _named(old):
            before = {item["name"]: item for item in old}
            out[key] = [_merge(before.get(item["name"], {}), item, by_name=True) for item in value]
        else:
            out[key] = value
    return out


def _named(items: list) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def _job_object(chart: dict, release: Release, job_name: str, action: str, config_hash: str) -> dict:
    name, ns, spec = chart["metadata"]["name"], chart["metadata"]["namespace"], chart["spec"]
    env = {"NAME": release.name, "VERSION": spec.get("version", ""), "REPO": spec.get("repo", ""),
           "HELM_DRIVER": "secret", "CHART_NAMESPACE": ns, "CHART": spec.get("chart", ""),
           "HELM_VERSION": spec.get("helmVersion", ""), "TARGET_NAMESPACE": release.namespace,
           "FAILURE_POLICY": spec.get("failurePolicy", "reinstall")}
    labels = {CHART_LABEL: name}
    annotations = {CONFIG_HASH: config_hash}
    failure = index.not_found(release.chart, spec.get("version", ""), spec.get("repo", "")) if action == "install" else None
    # helm exits 1 with its error line (restartPolicy OnFailure: the pod crash-loops, as on k3s)
    failing = {EXIT_CODE: "1", LOG_LINE: failure} if failure else {}
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name, "namespace": ns, "labels": labels, "annotations": annotations,
                     "ownerReferences": [controller_ref(chart)]},
        "spec": {"backoffLimit": int(spec.get("backOffLimit", 1000)), "template": {
            "metadata": {"labels": labels, "annotations": {**annotations, RUN_SECONDS: HELM_SECONDS, **failing}},
            "spec": {"restartPolicy": "OnFailure", "serviceAccountName": f"helm-{name}",
                     "containers": [{"name": "helm", "image": spec.get("jobImage") or JOB_IMAGE,
                                     "args": [action] + [f"--set-string={k}={v}" for k, v in
                                                         (spec.get("set") or {}).items()],
                                     "env": [{"name": k, "value": v} for k, v in env.items()],
                                     "volumeMounts": [{"name": "values", "mountPath": "/config"},
                                                      {"name": "content", "mountPath": "/chart"}]}],
                     "volumes": [{"name": "values", "configMap": {"name": f"chart-values-{name}"}},
                                 {"name": "content", "configMap": {"name": f"chart-content-{name}"}}]}}},
    }
    if action == "delete":
        # Deleting the HelmChart takes what it owns (values ConfigMaps included) at once: the delete
        # job stands alone, as it must outlive the chart's other objects.
        del job["metadata"]["ownerReferences"]
        pod_spec = job["spec"]["template"]["spec"]
        del pod_spec["volumes"], pod_spec["containers"][0]["volumeMounts"]
    return job


def _chart_of_job(event_type: str, job: dict) -> list[Key]:
    chart = (job["metadata"].get("labels") or {}).get(CHART_LABEL)
    return [(job["metadata"]["namespace"], chart)] if chart else []


def _complete(job: dict) -> bool:
    return (condition(job, "Complete") or {}).get("status") == "True"


def _encode(doc: dict) -> str:
    """A Helm release as its Secret holds it: base64 of gzipped JSON, base64-encoded again as Secret data."""
    inner = base64.b64encode(gzip.compress(json.dumps(doc).encode()))
    return base64.b64encode(inner).decode()


def _decode(secret: dict) -> dict:
    return json.loads(gzip.decompress(base64.b64decode(base64.b64decode(secret["data"]["release"]))))
