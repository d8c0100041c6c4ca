"""otwld's ``ollama`` chart (https://otwld.github.io/ollama-helm/, 1.x): the Deployment, its
Service (port ``service.port``, 11434, named ``http``), the models' PersistentVolumeClaim when
``persistentVolume.enabled``, the ServiceAccount and, with ``ingress.enabled``, the Ingress, with
the real chart's names and labels: release ``ollama`` gives Deployment, Service, PVC and
ServiceAccount ``ollama``, selector ``app.kubernetes.io/name: ollama`` +
``app.kubernetes.io/instance: <release>``. The pod's image is ``ollama/ollama``: the twin runs its
app model (``labsim.apps.ollama``) with the models folder /root/.ollama on the claim.

Not modelled: ``ollama.models.pull/run/create`` (the chart pulls them in a postStart hook, which
the twin's kubelet does not run: pull through the API), GPUs, knative, autoscaling."""

from __future__ import annotations

from labsim.charts.release import Release, helm_fullname, helm_ingress, helm_labels, helm_selector, value

CHART = "ollama"
APP_VERSION = "0.12.10"  # chart 1.34.0's; the API the twin's model speaks


def fullname(release: Release) -> str:
    return helm_fullname(release, CHART)


def _selector(release: Release) -> dict:
    return helm_selector(release, value(release.values, "nameOverride") or CHART)


def _labels(release: Release) -> dict:
    return helm_labels(release, CHART, value(release.values, "nameOverride") or CHART, APP_VERSION)


def _meta(release: Release, name: str, **extra) -> dict:
    return {**release.meta(name), "labels": _labels(release), **extra}


def _probe(values: dict, kind: str) -> dict | None:
    probe = value(values, kind, {}) or {}
    if not probe.get("enabled", True):
        return None
    defaults = {"livenessProbe": (60, 10, 5), "readinessProbe": (30, 5, 3)}[kind]
    return {"httpGet": {"path": probe.get("path", "/"), "port": "http"},
            "initialDelaySeconds": probe.get("initialDelaySeconds", defaults[0]),
            "periodSeconds": probe.get("periodSeconds", defaults[1]),
            "timeoutSeconds": probe.get("timeoutSeconds", defaults[2]),
            "successThreshold": probe.get("successThreshold", 1), "failureThreshold": probe.get("failureThreshold", 6)}


def _container(release: Release) -> dict:
    values = release.values
    port = int(value(values, "ollama.port", 11434))
    tag = value(values, "image.tag") or APP_VERSION
    container = {
        "name": CHART, "image": f"{value(values, 'image.repository', 'ollama/ollama')}:{tag}",
        "imagePullPolicy": value(values, "image.pullPolicy", "IfNotPresent"),
        "securityContext": value(values, "securityContext", {}) or {},
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [{"name": "OLLAMA_HOST", "value": f"0.0.0.0:{port}"}, *(value(values, "extraEnv") or [])],
        "args": list(value(values, "extraArgs") or []),
        "volumeMounts": [{"name": "ollama-data", "mountPath": value(values, "ollama.mountPath") or "/root/.ollama",
                          **({"subPath": sub} if (sub := value(values, "persistentVolume.subPath")) else {})},
                         *(value(values, "volumeMounts") or [])],
    }
    if value(values, "extraEnvFrom"):
        container["envFrom"] = list(value(values, "extraEnvFrom"))
    if value(values, "resources"):
        container["resources"] = value(values, "resources")
    for kind in ("livenessProbe", "readinessProbe"):
        if (probe := _probe(values, kind)) is not None:
            container[kind] = probe
    return container


def ollama(release: Release) -> list[dict]:
    values, name = release.values, fullname(release)
    persistence = value(values, "persistentVolume", {}) or {}
    claim = persistence.get("existingClaim") or name
    data = {"persistentVolumeClaim": {"claimName": claim}} if persistence.get("enabled") else {"emptyDir": {}}
    pod_meta: dict = {"labels": {**_labels(release), **(value(values, "podLabels") or {})}}
    if value(values, "podAnnotations"):
        pod_meta["annotations"] = dict(value(values, "podAnnotations"))
    account = value(values, "serviceAccount.name") or (name if value(values, "serviceAccount.create", True) else "default")
    objects: list[dict] = []
    if value(values, "serviceAccount.create", True):
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(release, account),
                        "automountServiceAccountToken": bool(value(values, "serviceAccount.automount", True))})
    if persistence.get("enabled") and not persistence.get("existingClaim"):
        spec = {"accessModes": list(persistence.get("accessModes") or ["ReadWriteOnce"]),
                "resources": {"requests": {"storage": str(persistence.get("size", "30Gi"))}}}
        if persistence.get("storageClass"):
            spec["storageClassName"] = "" if persistence["storageClass"] == "-" else persistence["storageClass"]
        objects.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(release, name),
                        "spec": spec})
    service_type = value(values, "service.type", "ClusterIP")
    port = {"port": int(value(values, "service.port", 11434)), "targetPort": "http", "protocol": "TCP", "name": "http"}
    if "NodePort" in service_type:
        port["nodePort"] = int(value(values, "service.nodePort", 31434))
    service = {"type": service_type, "ports": [port], "selector": _selector(release)}
    if value(values, "service.loadBalancerIP"):
        service["loadBalancerIP"] = value(values, "service.loadBalancerIP")
    objects.append({"apiVersion": "v1", "kind": "Service", "metadata": _meta(release, name), "spec": service})
    objects.append({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(release, name),
        "spec": {"replicas": int(value(values, "replicaCount", 1)),
                 "strategy": value(values, "updateStrategy", {"type": "Recreate"}) or {"type": "Recreate"},
                 "selector": {"matchLabels": _selector(release)},
                 "template": {"metadata": pod_meta,
                              "spec": {"serviceAccountName": account,
                                       "securityContext": value(values, "podSecurityContext", {}) or {},
                                       "terminationGracePeriodSeconds": int(
                                           value(values, "terminationGracePeriodSeconds", 120)),
                                       "containers": [_container(release)],
                                       "volumes": [{"name": "ollama-data", **data}, *(value(values, "volumes") or [])],
                                       **{k: value(values, k) for k in ("nodeSelector", "affinity", "tolerations")
                                          if value(values, k)}}}}})
    if value(values, "ingress.enabled"):
        objects.append(helm_ingress(values, _meta(release, name), name, int(value(values, "service.port", 11434))))
    return objects
