"""What runs inside the pods of charts whose software does not run here: one module per app. A
controller app acts only while a Ready pod of its Deployment runs (as the real one, whose pod
it is), reading its settings from that pod's spec (environment, arguments). ``APPS`` is what a
cluster runs beside its own controllers (labsim.kube.cluster); other apps (the Cloudflare API)
are the lab's. App models that run as pods' own processes (``python -m labsim.apps.<app>``)
import only their module: ``APPS`` and its controllers load on first use."""

from __future__ import annotations


def __getattr__(name: str) -> list:
    if name == "APPS":
        from labsim.apps import (
            cert_manager_metrics,
            metallb,
            nfs_provisioner,
            prometheus_operator,
            public_dns,
        )

        return [nfs_provisioner.NfsProvisioner, metallb.MetalLBController, prometheus_operator.PrometheusOperator,
                cert_manager_metrics.CertManagerMetrics, public_dns.PublicDNS]
    raise AttributeError(name)
