"""What a Helm chart creates when k3s' Helm controller installs it, modelled per chart: a
function from the release (name, namespace, chart version) and its merged values to the
objects the chart would render, one module per chart. ``CHART_MODELS`` is keyed by chart name;
a chart without a model installs as a release with no objects. What runs inside the pods
(controllers such as MetalLB's or cert-manager's) lives in ``labsim.apps``."""

from __future__ import annotations

from labsim.charts import (
    cert_manager,
    metallb,
    n8n,
    nfs_subdir_external_provisioner,
    ollama,
    postgresql,
    traefik,
)
from labsim.charts.release import ChartModel, Release

CHART_MODELS: dict[str, ChartModel] = {"traefik": traefik.traefik, "traefik-crd": traefik.traefik_crd,
                                       "cert-manager": cert_manager.cert_manager}
CHART_MODELS["nfs-subdir-external-provisioner"] = nfs_subdir_external_provisioner.nfs_subdir_external_provisioner
CHART_MODELS["metallb"] = metallb.metallb
CHART_MODELS["postgresql"] = postgresql.postgresql
CHART_MODELS["ollama"] = ollama.ollama
CHART_MODELS["n8n"] = n8n.n8n

__all__ = ["CHART_MODELS", "ChartModel", "Release"]
