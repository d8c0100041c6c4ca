"""labkit: the operator's toolkit behind the homelab-notebooks series.

Notebooks call ``labkit.record(report)`` at their end; the rest lives in one module per concern
(params, secrets, proxmox, ssh, k3s, kube, charts, manifests, infra, storage, net, certs, report,
plots, runner).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `labkit check` does not pay for pandas and plotly.
    if name in ("record", "Report", "Change"):
        from labkit import report

        return getattr(report, name)
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")
