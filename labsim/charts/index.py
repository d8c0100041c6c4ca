"""The chart repositories' indexes, as far as the twin knows them: versions the modelled charts
publish (around the series' pins). A HelmChart asking a listed chart for another version makes
the helm Job fail as klipper-helm does, with helm's own line: ``Error: chart "metallb" version
"9.9.9" not found in https://metallb.github.io/metallb repository``. A chart not listed here (k3s'
own, packaged with k3s) is not checked."""

from __future__ import annotations

PUBLISHED = {
    "nfs-subdir-external-provisioner": "4.0.14 4.0.15 4.0.16 4.0.17 4.0.18",
    "metallb": "0.14.8 0.14.9 0.15.0 0.15.2 0.15.3",
    "cert-manager": "v1.17.0 v1.17.1 v1.17.2 v1.18.0 v1.18.1 v1.18.2 v1.19.0 v1.19.1",
    "ollama": "1.30.0 1.31.0 1.32.0 1.33.0 1.34.0 1.35.0",
}


def not_found(chart: str, version: str, repo: str) -> str | None:
    """helm's error for a version the chart's repository does not have (None: it has it, or the
    chart is not listed)."""
    published = PUBLISHED.get(chart)
    if published is None or not version or version in published.split():
        return None
    return f'Error: chart "{chart}" version "{version}" not found in {repo.rstrip("/")} repository'
