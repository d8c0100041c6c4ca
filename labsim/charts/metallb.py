"""MetalLB (chart 0.15.x, L2 mode): the CRDs of metallb.io/v1beta1 (IPAddressPool and
L2Advertisement with their real schemas, the others open), the controller Deployment and the
speaker DaemonSet in the release's namespace, their RBAC, the webhook Service and the
ValidatingWebhookConfiguration, with the real chart's names and labels. What the pods do is
``labsim.apps.metallb``."""

from __future__ import annotations

from labsim.charts.release import Release, helm_fullname, helm_labels, helm_selector, value

CHART = "metallb"
GROUP = "metallb.io"
_OPEN = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_KINDS = {"bfdprofiles": "BFDProfile", "bgpadvertisements": "BGPAdvertisement", "bgppeers": "BGPPeer",
          "communities": "Community", "ipaddresspools": "IPAddressPool", "l2advertisements": "L2Advertisement",
          "servicel2statuses": "ServiceL2Status", "servicebgpstatuses": "ServiceBGPStatus"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_SELECTORS = {"type": "array", "items": _OPEN}
SCHEMAS = {
    "IPAddressPool": {"type": "object", "required": ["spec"], "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "required": ["addresses"], "properties": {
            "addresses": _STRINGS, "autoAssign": {"type": "boolean", "default": True},
            "avoidBuggyIPs": {"type": "boolean", "default": False},
            "serviceAllocation": {"type": "object", "properties": {
                "namespaceSelectors": _SELECTORS, "namespaces": _STRINGS, "priority": {"type": "integer"},
                "serviceSelectors": _SELECTORS}}}},
        "status": {"type": "object", "properties": {
            "assignedIPv4": {"type": "integer", "format": "int64"}, "assignedIPv6": {"type": "integer", "format": "int64"},
            "availableIPv4": {"type": "integer", "format": "int64"},
            "availableIPv6": {"type": "integer", "format": "int64"}}}}},
    "L2Advertisement": {"type": "object", "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": {
            "interfaces": _STRINGS, "ipAddressPoolSelectors": _SELECTORS, "ipAddressPools": _STRINGS,
            "nodeSelectors": _SELECTORS}},
        "status": {"type": "object"}}},
}
# The webhooks the chart configures (metallb-webhook-configuration), by the kind they judge.
WEBHOOKS = {"BGPPeer": "bgppeervalidationwebhook", "IPAddressPool": "ipaddresspoolvalidationwebhook",
            "BGPAdvertisement": "bgpadvertisementvalidationwebhook", "Community": "communityvalidationwebhook",
            "BFDProfile": "bfdprofilevalidationwebhook", "L2Advertisement": "l2advertisementvalidationwebhook"}


def fullname(release: Release) -> str:
    return helm_fullname(release, CHART)


def labels(release: Release, component: str | None = None) -> dict:
    found = helm_labels(release, CHART, CHART, f"v{release.version.lstrip('v')}")
    if component:
        found["app.kubernetes.io/component"] = component
    return found


def selector(release: Release, component: str | None = None) -> dict:
    found = helm_selector(release, CHART)
    if component:
        found["app.kubernetes.io/component"] = component
    return found


def metallb(release: Release) -> list[dict]:
    values, name, ns = release.values, fullname(release), release.namespace
    tag = f"v{release.version.lstrip('v')}"
    helm = {"meta.helm.sh/release-name": release.name, "meta.helm.sh/release-namespace": ns}

    def meta(object_name: str, component: str | None = None, namespaced: bool = True) -> dict:
        found = {"name": object_name, "labels": labels(release, component), "annotations": dict(helm)}
        if namespaced:
            found["namespace"] = ns
        return found

    def workload(component: str, image: str, args: list[str], extra: dict) -> dict:
        container = {"name": component, "image": f"{value(values, f'{component}.image.repository', image)}:"
                                                  f"{value(values, f'{component}.image.tag') or tag}",
                     "args": args, "env": [{"name": "METALLB_ML_SECRET_NAME", "value": f"{name}-memberlist"},
                                           {"name": "METALLB_DEPLOYMENT", "value": f"{name}-controller"}]
                     if component == "controller" else
                     [{"name": "METALLB_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                      {"name": "METALLB_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}],
                     "ports": [{"name": "monitoring", "containerPort": 7472 if component == "controller" else 7473}]}
        if value(values, f"{component}.resources"):
            container["resources"] = value(values, f"{component}.resources")
        lb_class = value(values, "loadBalancerClass")
        if lb_class:
            container["args"] = [*args, f"--lb-class={lb_class}"]
        return {"selector": {"matchLabels": selector(release, component)},
                "template": {"metadata": {"labels": selector(release, component)},
                             "spec": {"serviceAccountName": f"{name}-{component}", "terminationGracePeriodSeconds":
                                      0 if component == "controller" else 2, "containers": [container], **extra}}}

    crds = [{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
             "metadata": {"name": f"{plural}.{GROUP}", "annotations": dict(helm)},
             "spec": {"group": GROUP, "scope": "Namespaced",
                      "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()},
                      "versions": [{"name": "v1beta1" if kind not in ("BGPPeer",) else "v1beta2", "served": True,
                                    "storage": True, "subresources": {"status": {}},
                                    "schema": {"openAPIV3Schema": SCHEMAS.get(kind, _OPEN)}}]}}
            for plural, kind in _KINDS.items()]
    controller_args = ["--port=7472", f"--log-level={value(values, 'controller.logLevel', 'info')}",
                       "--tls-min-version=VersionTLS12", f"--webhook-mode={value(values, 'controller.webhookMode', 'enabled')}"]
    speaker_args = ["--port=7472", f"--log-level={value(values, 'speaker.logLevel', 'info')}"]
    speaker_extra = {"hostNetwork": True, "nodeSelector": {"kubernetes.io/os": "linux"},
                     "tolerations": [{"key": "node-role.kubernetes.io/master", "effect": "NoSchedule", "operator": "Exists"},
                                     {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule",
                                      "operator": "Exists"}]}
    webhook_service = f"{name}-webhook-service"
    webhooks = [{"name": f"{hook}.{GROUP}", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail",
                 "sideEffects": "None",
                 "clientConfig": {"service": {"name": webhook_service, "namespace": ns,
                                              "path": f"/validate-metallb-io-v1beta1-{kind.lower()}"}},
                 "rules": [{"apiGroups": [GROUP], "apiVersions": ["v1beta1"], "operations": ["CREATE", "UPDATE"],
                            "resources": [next(p for p, k in _KINDS.items() if k == kind)]}]}
                for kind, hook in WEBHOOKS.items()]
    rbac = []
    for component, rules in (("controller", [
            {"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["services/status"], "verbs": ["update"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]),
            ("speaker", [
            {"apiGroups": [""], "resources": ["services", "endpoints", "nodes", "namespaces"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}])):
        rbac += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": meta(f"{name}:{component}", namespaced=False), "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": meta(f"{name}:{component}", namespaced=False),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{name}:{component}"},
             "subjects": [{"kind": "ServiceAccount", "name": f"{name}-{component}", "namespace": ns}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(f"{name}-{component}"),
             "rules": [{"apiGroups": [""], "resources": ["pods", "secrets", "configmaps"], "verbs": ["get", "list", "watch"]},
                       {"apiGroups": [GROUP], "resources": ["*"], "verbs": ["get", "list", "watch", "update"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(f"{name}-{component}"),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{name}-{component}"},
             "subjects": [{"kind": "ServiceAccount", "name": f"{name}-{component}", "namespace": ns}]},
        ]
    return [
        *crds,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(f"{name}-controller", "controller")},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(f"{name}-speaker", "speaker")},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta("metallb-webhook-cert")},
        *rbac,
        {"apiVersion": "v1", "kind": "Service", "metadata": meta(webhook_service),
         "spec": {"ports": [{"port": 443, "targetPort": 9443}], "selector": selector(release, "controller")}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(f"{name}-controller", "controller"),
         "spec": workload("controller", "quay.io/metallb/controller", controller_args, {})},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta(f"{name}-speaker", "speaker"),
         "spec": workload("speaker", "quay.io/metallb/speaker", speaker_args, speaker_extra)},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": meta(f"{name}-webhook-configuration", namespaced=False), "webhooks": webhooks},
    ]
