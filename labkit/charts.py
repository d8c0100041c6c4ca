"""Helm charts the k3s way: a ``HelmChart`` (helm.cattle.io/v1) per chart, or a ``HelmChartConfig``
for a chart k3s deploys itself (Traefik), applied with server-side apply; k3s' Helm controller runs
the ``helm-install-<name>`` Job. No helm binary on the operator's machine, and the same objects
could be dropped into k3s' auto-deploy folder.

``plan`` says per chart: absent (install), same (unchanged), or what differs (version, values,
with a diff of the values). ``apply`` applies exactly that; ``wait`` follows the helm Job to its
end and then the release's workloads until they are rolled out, with a progress line per change.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from kubernetes import client

from labkit import manifests
from labkit.changes import Change, Check, Plan, StepTimer, untimed
from labkit.errors import KubeError, LabError
from labkit.kube import pod_problems, until
from labkit.params import Lab
from labkit.progress import progress

GROUP_VERSION = "helm.cattle.io/v1"
SYSTEM = "kube-system"  # where k3s keeps HelmCharts (its own, and ours, so one place lists them all)
RELEASE = "meta.helm.sh/release-name"  # helm's annotation on every object of a release
RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"


class ChartError(LabError):
    """A chart did not install: the helm Job failed, or its workloads did not roll out."""


@dataclass(frozen=True)
class Chart:
    """A release: ``chart`` from ``repo`` at a pinned ``version``, into ``target_namespace``."""

    name: str
    chart: str
    version: str
    repo: str = ""
    target_namespace: str = "default"
    values: dict = field(default_factory=dict)
    create_namespace: bool = True
    kind = "HelmChart"

    def manifest(self) -> dict:
        spec = {"chart": self.chart, "version": self.version, "targetNamespace": self.target_namespace,
                "createNamespace": self.create_namespace, "valuesContent": render_values(self.values)}
        if self.repo:
            spec["repo"] = self.repo
        return {"apiVersion": GROUP_VERSION, "kind": self.kind, "metadata": {"name": self.name, "namespace": SYSTEM},
                "spec": spec}

    @property
    def release_namespace(self) -> str:
        return self.target_namespace


@dataclass(frozen=True)
class ChartConfig:
    """Values for a chart k3s installs itself (``traefik``): merged by k3s over its own."""

    name: str
    values: dict = field(default_factory=dict)
    kind = "HelmChartConfig"

    def manifest(self) -> dict:
        return {"apiVersion": GROUP_VERSION, "kind": self.kind, "metadata": {"name": self.name, "namespace": SYSTEM},
                "spec": {"valuesContent": render_values(self.values)}}

    @property
    def release_namespace(self) -> str:
        return SYSTEM


Deployable = Chart | ChartConfig


def from_lab(lab: Lab) -> list[Chart]:
    """The lab file's ``charts``, each with the values of its values file merged with what the
    lab file derives (the NFS server and export...). The release is named after the chart, as the
    original system's ``helm upgrade --install <chart>`` did. Checked before anything is applied:
    a key the chart does not know, or one the lab file derives, is an error naming the file."""
    found = []
    for name, source in lab.charts.items():
        where = f"charts.{name}.values"
        values = _values_file(source.values, where)
        _check_keys(name, values, where, source.values)
        derived = derived_values(lab, name)
        clash = sorted(_paths(values) & _paths(derived))
        if clash:
            raise ChartError(f"{where}: {', '.join(clash)} in {source.values} is derived from the lab file "
                             f"({DERIVED_FROM.get(name, 'its sections')}); remove it from the values file")
        found.append(Chart(name, chart=name, version=source.version, repo=source.repo,
                           target_namespace=source.namespace, values=merge(values, derived)))
    return found


DERIVED_FROM = {"nfs-subdir-external-provisioner": "the nfs section"}


def derived_values(lab: Lab, chart: str) -> dict:
    """The values the lab file decides for a chart (the rest lives in its values file)."""
    if chart == "nfs-subdir-external-provisioner":
        nfs = lab.nfs
        return {"nfs": {"server": nfs.server, "path": nfs.path, "mountOptions": list(nfs.mount_options)},
                "storageClass": {"name": nfs.storage_class, "defaultClass": nfs.default_class,
                                 "reclaimPolicy": nfs.reclaim_policy, "archiveOnDelete": nfs.archive_on_delete}}
    return {}


# Top-level keys of the pinned charts' values.yaml (helm takes an unknown key silently, or, for a
# chart with a values.schema.json, fails in the helm Job: both are caught here, before applying).
KNOWN_VALUES = {
    "nfs-subdir-external-provisioner": (
        "replicaCount strategyType image imagePullSecrets nfs buildMode storageClass leaderElection rbac "
        "podSecurityPolicy priorityClassName podSecurityContext securityContext serviceAccount resources "
        "nodeSelector tolerations affinity labels podAnnotations podDisruptionBudget"),
    "metallb": ("imagePullSecrets nameOverride fullnameOverride loadBalancerClass rbac prometheus controller "
                "speaker crds frrk8s frr-k8s"),
    "cert-manager": (
        "global installCRDs crds replicaCount strategy podDisruptionBudget featureGates maxConcurrentChallenges "
        "image clusterResourceNamespace namespace fullnameOverride nameOverride serviceAccount "
        "automountServiceAccountToken enableCertificateOwnerRef enableServiceLinks config "
        "dns01RecursiveNameservers dns01RecursiveNameserversOnly disableAutoApproval approveSignerNames "
        "extraArgs extraEnv resources securityContext containerSecurityContext volumes volumeMounts "
        "deploymentAnnotations podAnnotations podLabels serviceAnnotations serviceLabels serviceIPFamilyPolicy "
        "serviceIPFamilies podDnsPolicy podDnsConfig hostAliases nodeSelector ingressShim http_proxy "
        "https_proxy no_proxy affinity tolerations topologySpreadConstraints livenessProbe prometheus webhook "
        "cainjector acmesolver startupapicheck extraObjects creator enabled"),
}


def _check_keys(chart: str, values: dict, where: str, path: Path | None) -> None:
    known = KNOWN_VALUES.get(chart, "").split()
    unknown = [k for k in values if known and k not in known]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"the chart's keys are {', '.join(known)}"
        raise ChartError(f"{where}: unknown key '{key}' in {path}: {chart} has no such value ({hint})")


def _paths(values: dict, prefix: str = "") -> set[str]:
    """Dotted paths of the leaves of a values mapping."""
    out: set[str] = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        out |= _paths(value, path + ".") if isinstance(value, dict) and value else {path}
    return out


def merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``, mappings merged key by key (as helm merges values)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _values_file(path: Path | None, where: str) -> dict:
    if path is None:
        return {}
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ChartError(f"{where}: cannot read values file {path}: {exc}") from None
    if not isinstance(values, dict):
        raise ChartError(f"{where}: {path} must hold a YAML mapping of chart values, not a {type(values).__name__}")
    return values


def render_values(values: dict) -> str:
    return yaml.safe_dump(values, sort_keys=True) if values else ""


@dataclass(frozen=True)
class ChartPlan:
    chart: Deployable
    action: str  # install | upgrade | unchanged
    detail: str
    values_diff: str = ""
    job_uid: str | None = None  # the helm-install Job before the apply: the one after must be another
    new_job: bool = True  # the spec changes, so k3s runs the helm Job again
    revision: int = 0  # the release's last revision before the apply (0: never installed)

    def change(self) -> Change:
        return Change(f"{self.chart.kind}/{self.chart.name}", self.action, self.detail)


def plan(api: client.ApiClient, charts: list[Deployable]) -> Plan[ChartPlan]:
    dyn = manifests.dynamic(api)
    return Plan([_plan_chart(api, dyn, chart) for chart in charts])


def _plan_chart(api: client.ApiClient, dyn, chart: Deployable) -> ChartPlan:
    want = chart.manifest()
    planned = manifests.plan_object(dyn, want)
    job = _job(api, chart.name)  # k3s' own chart (Traefik) has one before our HelmChartConfig exists
    job_uid = job.metadata.uid if job else None
    if planned.action == "create":
        what = f"{chart.chart} {chart.version} into {chart.target_namespace}" if isinstance(chart, Chart) \
            else f"values for k3s' {chart.name}"
        return ChartPlan(chart, "install", f"absent: {what}", job_uid=job_uid, revision=_revision(api, chart))
    live = _live_spec(dyn, chart)
    if planned.action == "unchanged":
        return ChartPlan(chart, "unchanged", "as applied", job_uid=job_uid)
    differs, values_diff = [], ""
    if live.get("version", "") != want["spec"].get("version", ""):
        differs.append(f"version {live.get('version') or '-'} -> {want['spec']['version']}")
    have_values = yaml.safe_load(live.get("valuesContent") or "") or {}
    if have_values != chart.values:
        values_diff = manifests.diff(have_values, chart.values, f"{chart.name} values")
        differs.append("values differ")
    spec_differs = any(live.get(k) != v for k, v in want["spec"].items())
    if spec_differs and not differs:
        differs.append("spec differs: " + ", ".join(k for k, v in want["spec"].items() if live.get(k) != v))
    return ChartPlan(chart, "upgrade", "; ".join(differs) or planned.change().detail, values_diff, job_uid,
                     new_job=spec_differs, revision=_revision(api, chart))


def _live_spec(dyn, chart: Deployable) -> dict:
    res = dyn.resources.get(api_version=GROUP_VERSION, kind=chart.kind)
    return res.get(name=chart.name, namespace=SYSTEM).to_dict().get("spec") or {}


def _releases(chart: Deployable) -> dict:
    """Where helm keeps the release's revisions: Secrets labelled owner=helm, name=<release>."""
    return {"namespace": chart.release_namespace, "label_selector": f"owner=helm,name={chart.name}"}


def _revision(api: client.ApiClient, chart: Deployable) -> int:
    found = client.CoreV1Api(api).list_namespaced_secret(**_releases(chart)).items
    return max((int(s.metadata.labels.get("version", "0")) for s in found), default=0)


def _job(api: client.ApiClient, name: str) -> client.V1Job | None:
    jobs = client.BatchV1Api(api).list_namespaced_job(SYSTEM, field_selector=f"metadata.name=helm-install-{name}")
    return jobs.items[0] if jobs.items else None


def apply(api: client.ApiClient, plan_: Plan[ChartPlan], *, timeout: float = 600, dry_run: bool = False,
          step: StepTimer = untimed, overlap: bool = False) -> list[Change]:
    """Apply each chart that is absent or differs, then wait for it (in plan order: a chart's CRDs
    are there before the next chart's objects need them). Returns what was done (a dry run: nothing).

    With ``overlap`` a chart's workloads roll out while the next charts install: each helm Job
    (the release's objects, CRDs included) still completes before the next chart's starts, and
    every rollout is waited for before returning. Only for charts none of whose pods serve the
    next charts' installs (an admission webhook that must answer for them)."""
    if dry_run:
        return []
    dyn = manifests.dynamic(api)
    done, rolling = [], []
    for item in plan_.items:
        if not item.change().is_change:
            continue
        with step(f"{item.action} chart", item.chart.name):
            res = manifests.resource(dyn, GROUP_VERSION, item.chart.kind)
            manifests.server_side_apply(res, item.chart.manifest())
            wait(api, item, timeout=timeout, rollout=not overlap)
        rolling.append(item)
        done.append(item.change())
    for item in rolling if overlap else []:
        with step("roll out chart", item.chart.name):
            _wait_rollout(api, item.chart, timeout)
    return done


def wait(api: client.ApiClient, item: ChartPlan, *, timeout: float = 600, rollout: bool = True) -> None:
    """The helm Job of this apply completes, then (``rollout``) the release's workloads are rolled out."""
    if item.new_job:
        _wait_job(api, item, timeout)
        _wait_release(api, item, timeout)
    if rollout:
        _wait_rollout(api, item.chart, timeout)


def _wait_job(api: client.ApiClient, item: ChartPlan, timeout: float) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    name = f"helm-install-{item.chart.name}"
    with progress(f"{name} Job") as bar:
        def new_job(jobs) -> client.V1Job | None:
            job = next((j for j in jobs.items if j.metadata.uid != item.job_uid), None)
            bar.update(note="created" if job else "waiting for k3s' helm controller")
            return job

        job = until(batch.list_namespaced_job, new_job, what=f"the {name} Job to start", timeout=timeout,
                    namespace=SYSTEM, field_selector=f"metadata.name={name}")

        selector = f"batch.kubernetes.io/controller-uid={job.metadata.uid}"

        def finished(pods) -> bool | None:
            current = batch.read_namespaced_job(name, SYSTEM)
            if current.metadata.uid != job.metadata.uid:
                return None
            if _condition(current, "Complete"):
                bar.update(note="complete")
                return True
            failing = next((p for p in pods.items if _failing(p)), None)
            if failing is None and _condition(current, "Failed"):  # the listing predates the pod's failure
                pods = core.list_namespaced_pod(SYSTEM, label_selector=selector)
                failing = next((p for p in pods.items if _failing(p)), None)
            if failing is not None or _condition(current, "Failed"):
                raise ChartError(_failure(core, name, failing, item.chart))
            bar.update(note=", ".join(sorted({p.status.phase for p in pods.items})) or "pending")
            return None

        until(core.list_namespaced_pod, finished, what=f"the {name} Job to complete", timeout=timeout,
              namespace=SYSTEM, label_selector=selector)


def _wait_release(api: client.ApiClient, item: ChartPlan, timeout: float) -> None:
    """helm recorded a new revision of the release as deployed: the chart's objects are in place."""
    with progress(f"{item.chart.name} release") as bar:
        def deployed(secrets) -> int | None:
            done = [int(s.metadata.labels.get("version", "0")) for s in secrets.items
                    if s.metadata.labels.get("status") == "deployed"]
            revision = max(done, default=0)
            if revision > item.revision:
                bar.update(note=f"revision {revision} deployed")
                return revision
            return None

        until(client.CoreV1Api(api).list_namespaced_secret, deployed, what=f"helm to record {item.chart.name}'s "
              "release", timeout=timeout, **_releases(item.chart))


def _condition(job: client.V1Job, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in (job.status.conditions or []))


def _failing(pod: client.V1Pod) -> bool:
    """helm exited non-zero: the pod failed, or (restartPolicy OnFailure) its container restarts."""
    if pod.status.phase == "Failed":
        return True
    return any(c.restart_count > 0 for c in pod.status.container_statuses or [])


def _failure(core: client.CoreV1Api, job: str, pod: client.V1Pod | None, chart: Deployable) -> str:
    last = "(no pod left to read)"
    if pod is not None:
        restarted = any(c.restart_count > 0 and not c.state.terminated for c in pod.status.container_statuses or [])
        try:
            log = core.read_namespaced_pod_log(pod.metadata.name, SYSTEM, previous=restarted, tail_lines=20)
            last = next((line for line in reversed(log.splitlines()) if line.strip()), "(empty log)")
        except client.ApiException as exc:
            last = f"(log unreadable: {exc.status} {exc.reason})"
    version = f" {chart.chart} {chart.version}" if isinstance(chart, Chart) else ""
    return (f"the {job} Job failed installing{version}: {last}\nfix the chart, version, repo or values in the lab "
            f"file and run again; `kubectl -n {SYSTEM} logs job/{job}` shows the whole log")


_WORKLOADS = (("list_namespaced_deployment", "Deployment"), ("list_namespaced_stateful_set", "StatefulSet"),
              ("list_namespaced_daemon_set", "DaemonSet"))


def _wait_rollout(api: client.ApiClient, chart: Deployable, timeout: float) -> None:
    """Every Deployment, StatefulSet and DaemonSet of the release has all replicas updated and available."""
    for method, kind in _WORKLOADS:
        _wait_kind(api, chart, method, kind, timeout)


def _wait_kind(api: client.ApiClient, chart: Deployable, method: str, kind: str, timeout: float) -> None:
    waiting: list = []
    with progress(f"{chart.name} {kind}s") as bar:
        def rolled_out(listing) -> bool | None:
            mine = [w for w in listing.items if (w.metadata.annotations or {}).get(RELEASE) == chart.name
                    and (w.metadata.annotations or {}).get(RELEASE_NAMESPACE) == chart.release_namespace]
            waiting[:] = [w for w in mine if not _rolled_out(w)]
            if mine:
                bar.update(note=f"{len(mine) - len(waiting)}/{len(mine)} rolled out"
                           + (f"; waiting for {', '.join(w.metadata.name for w in waiting)}" if waiting else ""))
            return True if not waiting else None

        try:
            until(getattr(client.AppsV1Api(api), method), rolled_out, what=f"{chart.name}'s {kind}s to roll out",
                  timeout=timeout, namespace=chart.release_namespace)
        except KubeError as exc:
            raise ChartError(_not_rolled_out(api, exc, chart, kind, waiting)) from None


def _not_rolled_out(api: client.ApiClient, exc: KubeError, chart: Deployable, kind: str, waiting: list) -> str:
    """The timeout, with what the waiting workloads' pods say is wrong."""
    lines = [str(exc)]
    for workload in waiting:
        labels = workload.spec.selector.match_labels or {}
        lines += [f"{kind} {workload.metadata.name}: {problem}"
                  for problem in pod_problems(api, chart.release_namespace, labels)]
    lines.append(f"`kubectl -n {chart.release_namespace} describe pods` and `kubectl logs` show more")
    return "\n".join(lines)


def _rolled_out(workload) -> bool:
    status, meta = workload.status, workload.metadata
    if (status.observed_generation or 0) < (meta.generation or 0):
        return False
    if isinstance(workload, client.V1DaemonSet):
        want = status.desired_number_scheduled or 0
        return (status.updated_number_scheduled or 0) >= want and (status.number_available or 0) >= want
    want = workload.spec.replicas if workload.spec.replicas is not None else 1
    if (status.replicas or 0) > (status.updated_replicas or 0):
        return False  # old replicas pending termination: they still answer (kubectl rollout status waits too)
    return (status.updated_replicas or 0) >= want and (status.available_replicas or 0) >= want


def verify(api: client.ApiClient, charts: list[Deployable]) -> list[str]:
    """Charts that still differ from the lab file (empty when all are as applied)."""
    return [f"{item.change().target}: {item.detail}" for item in plan(api, charts).items if item.change().is_change]


def deploy(api: client.ApiClient, charts: list[Deployable], *, dry_run: bool = False, timeout: float = 600,
           step: StepTimer = untimed) -> Plan[ChartPlan]:
    """plan -> apply and wait (unless ``dry_run``) -> verify; returns the plan."""
    plan_ = plan(api, charts)
    if dry_run or plan_.is_empty:
        return plan_
    apply(api, plan_, timeout=timeout, step=step)
    left = verify(api, charts)
    if left:
        raise ChartError("after the apply these charts still differ from the lab file:\n" + "\n".join(left))
    return plan_


def table(charts: Iterable[Deployable]) -> pd.DataFrame:
    """The charts as the lab file wants them: name, chart, version, namespace."""
    rows = [{"name": c.name, "chart": getattr(c, "chart", c.name), "version": getattr(c, "version", "(k3s' own)"),
             "namespace": c.release_namespace} for c in charts]
    return pd.DataFrame(rows, columns=["name", "chart", "version", "namespace"])


def verified(api: client.ApiClient, charts: list[Deployable]) -> Check:
    """One check: every chart is as the lab file says (a fresh plan finds nothing to do)."""
    left = verify(api, charts)
    return Check("charts as the lab file says", not left, "; ".join(left) or ", ".join(c.name for c in charts))
