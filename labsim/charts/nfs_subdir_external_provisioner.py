"""nfs-subdir-external-provisioner (kubernetes-sigs, chart 4.0.x): the provisioner's Deployment,
its RBAC, the StorageClass (``storageClass.*`` values) and, with ``nfs.mountOptions``, the static
PV/PVC through which its pod mounts the export with those options, with the real chart's names
and labels (``app``/``release``/``chart``/``heritage``). What the pod does is
``labsim.apps.nfs_provisioner``."""

from __future__ import annotations

from labsim.charts.release import Release, helm_fullname, value

CHART = "nfs-subdir-external-provisioner"
IMAGE = "registry.k8s.io/sig-storage/nfs-subdir-external-provisioner"
MOUNT_PATH = "/persistentvolumes"


def fullname(release: Release) -> str:
    return helm_fullname(release, CHART)


def provisioner_name(release: Release) -> str:
    return value(release.values, "storageClass.provisionerName") or f"cluster.local/{fullname(release)}"


def _quoted(flag) -> str:
    """A value the chart renders into quotes (``"{{ .Values.x }}"``): Go's spelling of booleans."""
    return str(flag).lower() if isinstance(flag, bool) else str(flag)


def nfs_subdir_external_provisioner(release: Release) -> list[dict]:
    values, name, ns = release.values, fullname(release), release.namespace
    selector = {"app": CHART, "release": release.name}
    labels = {"chart": f"{CHART}-{release.version.replace('+', '_')}", "heritage": "Helm", **selector,
              **value(values, "labels", {})}
    helm = {"meta.helm.sh/release-name": release.name, "meta.helm.sh/release-namespace": ns}

    def meta(object_name: str, namespaced: bool = True, **extra) -> dict:
        found = {"name": object_name, "labels": dict(labels), "annotations": dict(helm), **extra}
        if namespaced:
            found["namespace"] = ns
        return found

    server, path = value(values, "nfs.server"), value(values, "nfs.path", "/nfs-storage")
    mount_options = value(values, "nfs.mountOptions") or []
    access = value(values, "storageClass.accessModes", "ReadWriteOnce")
    volume_name = value(values, "nfs.volumeName", "nfs-subdir-external-provisioner-root")
    root = ({"persistentVolumeClaim": {"claimName": f"pvc-{name}"}} if mount_options
            else {"nfs": {"server": server, "path": path}})
    env = [{"name": "PROVISIONER_NAME", "value": provisioner_name(release)},
           {"name": "NFS_SERVER", "value": str(server or "")}, {"name": "NFS_PATH", "value": str(path or "")}]
    if value(values, "leaderElection.enabled", True) is False:
        env.append({"name": "ENABLE_LEADER_ELECTION", "value": "false"})
    container = {"name": CHART, "image": f"{value(values, 'image.repository', IMAGE)}:{value(values, 'image.tag', 'v4.0.2')}",
                 "imagePullPolicy": value(values, "image.pullPolicy", "IfNotPresent"),
                 "volumeMounts": [{"name": volume_name, "mountPath": MOUNT_PATH}], "env": env}
    if value(values, "resources"):
        container["resources"] = value(values, "resources")
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": meta(f"{name}-runner", namespaced=False),
         "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": [""], "resources": ["persistentvolumes"],
                    "verbs": ["get", "list", "watch", "create", "delete"]},
                   {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list", "watch", "update"]},
                   {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "update", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": meta(f"run-{name}", namespaced=False),
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
         "roleRef": {"kind": "ClusterRole", "name": f"{name}-runner", "apiGroup": "rbac.authorization.k8s.io"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(f"leader-locking-{name}"),
         "rules": [{"apiGroups": [""], "resources": ["endpoints"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(f"leader-locking-{name}"),
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
         "roleRef": {"kind": "Role", "name": f"leader-locking-{name}", "apiGroup": "rbac.authorization.k8s.io"}},
    ]
    if mount_options:
        objects += [
            {"apiVersion": "v1", "kind": "PersistentVolume",
             "metadata": meta(f"pv-{name}", namespaced=False, labels={**labels, CHART: name}),
             "spec": {"capacity": {"storage": "10Mi"}, "volumeMode": "Filesystem", "accessModes": [access],
                      "persistentVolumeReclaimPolicy": value(values, "nfs.reclaimPolicy", "Retain"),
                      "storageClassName": "", "mountOptions": list(mount_options),
                      "nfs": {"server": server, "path": path}}},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(f"pvc-{name}"),
             "spec": {"accessModes": [access], "volumeMode": "Filesystem", "storageClassName": "",
                      "selector": {"matchLabels": {CHART: name}}, "resources": {"requests": {"storage": "10Mi"}}}},
        ]
    objects.append(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name),
         "spec": {"replicas": int(value(values, "replicaCount", 1)),
                  "strategy": {"type": value(values, "strategyType", "Recreate")},
                  "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": {**selector, **value(values, "labels", {})},
                                            "annotations": dict(value(values, "podAnnotations", {}))},
                               "spec": {"serviceAccountName": name, "containers": [container],
                                        "volumes": [{"name": volume_name, **root}]}}}})
    if value(values, "storageClass.create", True):
        annotations = dict(helm)
        if value(values, "storageClass.defaultClass", False):
            annotations["storageclass.kubernetes.io/is-default-class"] = "true"
        annotations.update(value(values, "storageClass.annotations", {}) or {})
        parameters = {"archiveOnDelete": _quoted(value(values, "storageClass.archiveOnDelete", True))}
        for key in ("pathPattern", "onDelete"):
            if value(values, f"storageClass.{key}"):
                parameters[key] = str(value(values, f"storageClass.{key}"))
        storage_class = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                         "metadata": {"name": value(values, "storageClass.name", "nfs-client"), "labels": dict(labels),
                                      "annotations": annotations},
                         "provisioner": provisioner_name(release),
                         "allowVolumeExpansion": bool(value(values, "storageClass.allowVolumeExpansion", True)),
                         "reclaimPolicy": value(values, "storageClass.reclaimPolicy", "Delete"),
                         "volumeBindingMode": value(values, "storageClass.volumeBindingMode", "Immediate"),
                         "parameters": parameters}
        if mount_options:
            storage_class["mountOptions"] = list(mount_options)
        objects.append(storage_class)
    return objects
