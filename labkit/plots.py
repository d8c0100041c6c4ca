"""Figures for the notebooks (plotly), kept as data in executed notebooks.

Importing this module makes the kernel display a figure once, as plotly's JSON MIME type
(JupyterLab draws it), so an executed notebook holds no copy of plotly.js. The runner's HTML
rendering turns each into a snippet drawn by one shared plotly.js (``labkit.render``).
"""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from labkit.display import when_shell

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def figure_bundle(fig: go.Figure) -> dict:
    """Figure JSON only: JupyterLab draws it; the runner's HTML rendering adds the drawing code."""
    spec = json.loads(pio.to_json(fig, validate=False, remove_uids=True))
    title = (spec.get("layout", {}).get("title") or {}).get("text", "figure")
    return {PLOTLY_MIME: spec, "text/plain": f"<plotly figure: {title}>"}


def figure_html(spec: dict, div_id: str) -> str:
    """HTML drawing a figure with a ``Plotly`` loaded once per page (see ``labkit.render``)."""
    return (f'<div id="{div_id}" class="labkit-figure"></div><script>Plotly.newPlot({json.dumps(div_id)}, '
            f"{json.dumps(spec.get('data', []))}, {json.dumps(spec.get('layout', {}))}, {{responsive: true, displaylogo: false}});</script>")


def _install(shell) -> None:
    """Display figures as data, through IPython's formatter: plotly's own display
    (``Figure._ipython_display_``) goes through its renderers, which import nbformat, hence
    jsonschema: 2.5-5 s of a kernel's first figure, for nothing."""
    shell.display_formatter.ipython_display_formatter.for_type(go.Figure, _show)


def _show(fig: go.Figure) -> None:
    from IPython.display import display

    display(figure_bundle(fig), raw=True)


when_shell(_install)
pio.templates.default = "plotly_white"


def timeline(timings: pd.DataFrame, title: str = "Timeline") -> go.Figure:
    """Gantt-style figure of step timings (columns step, target, start, end), one row per target."""
    import plotly.express as px  # ~0.3-1.5 s: only for the notebooks that draw a timeline

    if timings.empty:
        return go.Figure(layout={"title": f"{title} (nothing ran)"})
    frame = timings.assign(target=timings["target"].replace("", "lab"))
    fig = px.timeline(frame, x_start="start", x_end="end", y="target", color="step", title=title,
                      hover_data={"seconds": ":.1f"})
    fig.update_yaxes(autorange="reversed", title=None)
    rows = max(frame["target"].nunique(), 0.7 * frame["step"].nunique())  # room for every legend entry too
    fig.update_layout(legend_title_text="step", height=int(160 + 40 * rows))
    return fig


def capacity(usage: pd.DataFrame, title: str = "Capacity") -> go.Figure:
    """Grouped bars of ``requested`` vs ``available`` per ``resource`` (same unit within a resource)."""
    fig = go.Figure()
    for column in ("requested", "available"):
        fig.add_bar(name=column, x=usage["resource"], y=usage[column],
                    text=usage[column].map(lambda v: f"{v:,.0f}"), textposition="auto")
    fig.update_layout(title=title, barmode="group", yaxis_title=usage.attrs.get("unit", ""))
    return fig


def node_allocatable(nodes: pd.DataFrame, title: str = "Allocatable per node") -> go.Figure:
    """CPU (cores) and memory (GiB) allocatable per Kubernetes node, side by side (``labkit.kube.node_table``)."""
    fig = go.Figure()
    fig.add_bar(name="CPU (cores)", x=nodes["name"], y=nodes["cpu"], offsetgroup=0)
    fig.add_bar(name="memory (GiB)", x=nodes["name"], y=nodes["memory_gib"], offsetgroup=1, yaxis="y2")
    fig.update_layout(title=title, barmode="group", yaxis={"title": "cores"},
                      yaxis2={"title": "GiB", "overlaying": "y", "side": "right"})
    return fig


def upgrade_timeline(phases: pd.DataFrame, probe: pd.DataFrame, title: str = "Upgrade timeline") -> go.Figure:
    """Each node's phases (rows of node, phase, start, end) as bars, above the probe's answers
    (time, ok, latency_ms): successes as latency points, failures marked at the bottom."""
    from plotly.subplots import make_subplots

    if phases.empty:
        return go.Figure(layout={"title": f"{title} (nothing ran)"})
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.55, 0.45], vertical_spacing=0.08,
                        subplot_titles=("node phases", "availability probe"))
    for phase, rows in phases.groupby("phase", sort=False):
        millis = (rows["end"] - rows["start"]).dt.total_seconds() * 1000
        fig.add_bar(name=phase, y=rows["node"], x=millis, base=rows["start"], orientation="h", row=1, col=1,
                    hovertext=[f"{phase} {n}: {m / 1000:.1f} s" for n, m in zip(rows["node"], millis, strict=True)])
    ok, failed = probe[probe["ok"]], probe[~probe["ok"]] if not probe.empty else probe
    fig.add_scatter(name="answered (latency)", x=ok["time"], y=ok["latency_ms"], mode="markers",
                    marker={"size": 4, "color": "seagreen"}, row=2, col=1)
    fig.add_scatter(name="failed", x=failed["time"], y=[0] * len(failed), mode="markers",
                    marker={"size": 7, "color": "crimson", "symbol": "x"}, hovertext=failed["error"], row=2, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(title_text="ms", row=2, col=1)
    fig.update_xaxes(type="date")
    fig.update_layout(title=title, barmode="overlay", height=int(320 + 40 * phases["node"].nunique()))
    return fig


def database_stats(stats: pd.DataFrame, title: str = "Database over the run") -> go.Figure:
    """Size (MiB), connections and commits sampled from pg_stat_database (``labkit.postgres.verify``)."""
    fig = go.Figure()
    fig.add_scatter(name="size (MiB)", x=stats["time"], y=stats["size_bytes"] / 2**20, mode="lines+markers")
    fig.add_scatter(name="connections", x=stats["time"], y=stats["connections"], mode="lines+markers", yaxis="y2")
    fig.add_scatter(name="commits", x=stats["time"], y=stats["commits"], mode="lines+markers", yaxis="y2")
    fig.update_layout(title=title, yaxis={"title": "MiB"}, yaxis2={"title": "count", "overlaying": "y", "side": "right"})
    return fig


def backup_inventory(backups: pd.DataFrame, title: str = "Backups") -> go.Figure:
    """Size (KiB) per backup over time, one series per kind (``labkit.backup.inventory``)."""
    fig = go.Figure()
    for kind, rows in backups.groupby("kind"):
        fig.add_scatter(name=kind, x=rows["time"], y=rows["size_bytes"] / 1024, mode="markers+lines",
                        text=rows["name"])
    fig.update_layout(title=title, yaxis_title="KiB")
    return fig


def recovery_bars(measures: pd.DataFrame, title: str = "RPO and RTO against targets") -> go.Figure:
    """Measured RPO and RTO (seconds) per drill next to the targets (``labkit.backup.measures``)."""
    fig = go.Figure()
    for column, name in (("rpo_s", "RPO measured"), ("rpo_target_s", "RPO target"), ("rto_s", "RTO measured"),
                         ("rto_target_s", "RTO target")):
        fig.add_bar(name=name, x=measures["drill"], y=measures[column])
    fig.update_layout(title=title, barmode="group", yaxis={"title": "seconds", "type": "log"})
    return fig


def pool_usage(usage: pd.DataFrame, title: str = "MetalLB pool usage") -> go.Figure:
    """Addresses used and free per pool (``labkit.net.pool_usage``), stacked."""
    fig = go.Figure()
    fig.add_bar(name="used", x=usage["pool"], y=usage["used"], text=usage["services"], hovertemplate="%{text}")
    fig.add_bar(name="free", x=usage["pool"], y=usage["free"])
    fig.update_layout(title=title, barmode="stack", yaxis_title="addresses")
    return fig


def storage(volumes: pd.DataFrame, nas: pd.DataFrame, title: str = "Storage") -> go.Figure:
    """Left: PersistentVolumes' size by class (``labkit.storage.volumes``); right: the NAS export's
    used and free space (``NasView.usage``)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("volumes by class (MiB)", "NAS export (GiB)"))
    by_class = volumes.groupby("storage_class", as_index=False).agg(size_mib=("size_mib", "sum"), count=("name", "count"))
    fig.add_bar(x=by_class["storage_class"], y=by_class["size_mib"], text=by_class["count"].map(lambda n: f"{n} PV"),
                name="PVs", row=1, col=1)
    for column, label in (("used_gib", "used"), ("free_gib", "free")):
        fig.add_bar(x=nas["export"], y=nas[column], name=label, row=1, col=2)
    fig.update_layout(title=title, barmode="stack")
    return fig


def certificate_expiry(certs: pd.DataFrame, title: str = "Certificate lifetimes") -> go.Figure:
    """Per certificate, from not-before to not-after, with the renewal time marked
    (``labkit.certs.certificates``)."""
    fig = go.Figure()
    issued = certs.dropna(subset=["not_before", "not_after"])
    for row in issued.to_dict("records"):
        fig.add_trace(go.Scatter(x=[row["not_before"], row["not_after"]], y=[row["certificate"]] * 2,
                                 mode="lines", line={"width": 12}, name=row["certificate"], showlegend=False,
                                 hovertext=f"{row['dns_names']} ({row['issuer']})"))
        if row.get("renewal") is not None and not pd.isna(row["renewal"]):
            fig.add_trace(go.Scatter(x=[row["renewal"]], y=[row["certificate"]], mode="markers",
                                     marker={"symbol": "line-ns-open", "size": 18}, name="renewal", showlegend=False))
    fig.update_layout(title=title if not issued.empty else f"{title} (none issued)", xaxis_title="time",
                      height=160 + 40 * max(len(issued), 1))
    return fig


def metric_lines(series: pd.DataFrame, title: str, unit: str = "") -> go.Figure:
    """One line per series of a PromQL range query (``labkit.observe.query_range``: time, series, value)."""
    fig = go.Figure()
    for name, group in series.groupby("series", sort=True):
        fig.add_scatter(x=group["time"], y=group["value"], mode="lines", name=str(name))
    fig.update_layout(title=title if not series.empty else f"{title} (no data)", yaxis_title=unit,
                      legend={"orientation": "h", "y": -0.25})
    return fig


def node_resources(cpu: pd.DataFrame, memory: pd.DataFrame, disk: pd.DataFrame,
                   title: str = "Nodes: CPU, memory and disk") -> go.Figure:
    """Three stacked panels of per-node PromQL series (CPU busy %, memory used %, root disk used %)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, subplot_titles=("CPU busy %", "memory used %", "disk used %"))
    for row, frame in enumerate((cpu, memory, disk), start=1):
        for name, group in frame.groupby("series", sort=True):
            fig.add_scatter(x=group["time"], y=group["value"], mode="lines", name=str(name), legendgroup=str(name),
                            showlegend=row == 1, row=row, col=1)
    fig.update_layout(title=title, height=700)
    return fig


def ollama_benchmark(summary: pd.DataFrame, title: str = "Ollama benchmark") -> go.Figure:
    """Tokens per second (bars) and latency p50/p95 (seconds, right axis) per model
    (``labkit.apps.benchmark_summary``)."""
    fig = go.Figure()
    ran = summary[summary["runs"] > 0] if not summary.empty else summary
    fig.add_bar(name="tokens/s", x=ran["model"], y=ran["tokens_per_s"], offsetgroup=0,
                text=ran["tokens_per_s"].map(lambda v: f"{v:.1f}"), textposition="auto")
    for column, name, group in (("latency_p50_s", "latency p50 (s)", 1), ("latency_p95_s", "latency p95 (s)", 2)):
        fig.add_bar(name=name, x=ran["model"], y=ran[column], yaxis="y2", offsetgroup=group)
    fig.update_layout(title=title if not ran.empty else f"{title} (no model ran)", barmode="group",
                      yaxis={"title": "tokens/s"}, yaxis2={"title": "seconds", "overlaying": "y", "side": "right"})
    return fig


def app_resources(usage: pd.DataFrame, title: str = "Requests, limits and usage") -> go.Figure:
    """Per app: CPU (millicores) and memory (MiB) requested, limited and used, side by side
    (``labkit.apps.usage``)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("CPU (millicores)", "memory (MiB)"))
    for i, (kind, colour) in enumerate((("requests", "steelblue"), ("limits", "lightgray"), ("used", "seagreen"))):
        for col, (resource, unit) in enumerate((("cpu", "m"), ("memory", "mib")), start=1):
            fig.add_bar(name=kind, x=usage["app"], y=usage[f"{resource}_{kind}_{unit}"], marker_color=colour,
                        legendgroup=kind, showlegend=col == 1, offsetgroup=i, row=1, col=col)
    fig.update_layout(title=title if not usage.empty else f"{title} (nothing deployed)", barmode="group")
    return fig
