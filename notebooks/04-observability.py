# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: homelab-notebooks
#     language: python
#     name: homelab-notebooks
# ---

# %% [markdown]
# # 04 · Observability
#
# The lab's monitoring: **kube-prometheus-stack** (Prometheus, Alertmanager, Grafana, node-exporter,
# kube-state-metrics), **Loki** with **promtail** shipping every pod's log, the P1 alert rules of
# `parameters/alerts/` and Alertmanager pushing pages to a phone through **ntfy**. The rules are
# tested before they are deployed (promtool unit tests), and the whole path is proved by use: every
# scrape target up, the rules loaded, Grafana answering over HTTPS with its datasources and
# dashboards, a LogQL query finding a known log line, a synthetic alert that must reach the ntfy
# topic within `group_wait` plus a margin, measured, and then resolve; and a real alert from a real
# condition: one node's disk filled until `NodeDiskAlmostFull` pages, then cleared until it resolves.
#
# **Prerequisites.** Notebook 03 has run: the NFS storage class for Prometheus' and Loki's volumes,
# Traefik and the ingress issuer for Grafana's certificate. The ntfy server of the lab file answers
# (the embedded lab serves its own).
#
# **What it changes.** Creates the namespace `observability.namespace` with two Secrets (Grafana's
# admin login; Alertmanager's ntfy token and the ntfy server's CA), installs or upgrades the
# HelmCharts of `observability.charts` (values files merged with what the lab file derives), and
# applies one PrometheusRule per rule file. With `dry_run=True` it checks the rules and shows the
# plans only. The drill posts one synthetic alert (`LabkitDrill`) and resolves it; meanwhile it fills
# the last node's disk to 95 % (a real lab: one file, `/var/tmp/labkit-drill-fill`, made with `fallocate`
# over SSH; the embedded lab: its `disk_full` fault) under a drill copy of the rule (PrometheusRule
# `labkit-drill`), and removes both afterwards.

# %% tags=["parameters"]
lab_file = "../parameters/sim.yaml"  # the lab (labkit run passes the lab file it runs)
dry_run = False                      # True: rule checks and plans only
drill = True                         # a synthetic alert, then a full disk, each followed to ntfy and back
chart_timeout_s = 900                # per chart: the helm Job, then its workloads rolled out
probe_timeout_s = 240                # per probe: targets up, rules evaluated, a log line shipped

# %%
from labkit import kube, monitoring, observe, params, plots
from labkit.report import Report, record

report = Report("04-observability", dry_run=dry_run)
lab = params.load_lab(lab_file)
obs = monitoring.settings(lab)
wanted = monitoring.charts_of(lab)  # values files checked here, before anything is applied
api = kube.connect(lab.kubeconfig)
print(f"lab '{lab.name}': monitoring in {obs.namespace}, Prometheus {obs.prometheus.retention}/"
      f"{obs.prometheus.retention_size} on {obs.prometheus.volume_size} {obs.prometheus.storage_class}, "
      f"Loki {obs.loki.retention}, Grafana https://{obs.grafana.host}, ntfy {obs.ntfy.server}/{obs.ntfy.topic}")

# %% [markdown]
# ## The alert rules, tested before anything is deployed
#
# The P1 set (disk almost full, pod crash-looping, certificate about to expire, node down) plus the
# Watchdog. `promtool check rules` parses each file; `promtool test rules` runs the unit tests of
# `tests/alerts/`: each rule has cases proving it fires when it should, not before its `for:`, and
# not on look-alikes. A rule that does not parse, or has no passing test, stops the notebook here,
# before anything is applied.

# %%
checked = observe.check_rules(obs.rules)
tested = observe.test_rules(obs.rules, obs.rule_tests)
report.require("promtool check rules: every rule file parses", checked.ok, f"{len(checked.files)} files")
report.require("promtool test rules: every rule has passing tests", tested.ok,
               f"{sum(r.cases for r in tested.results)} cases; strays: {tested.strays or 'none'}")
checked.table()

# %%
tested.table()

# %% [markdown]
# ## Plan
#
# Three parts: the namespace and Secrets (compared by digest, never shown), the HelmCharts (with the
# values diff of an upgrade) and the PrometheusRules. What labkit derives from the lab file: the
# retention and volume of Prometheus and Loki, Alertmanager's route (`group_wait`, `group_interval`,
# `repeat_interval` of `observability.routing`; the paging severities go to ntfy with priority 5
# through ntfy's `alertmanager` template; the token and CA files come from the Secret mounted through
# `alertmanagerSpec.secrets`), Grafana's admin Secret and its ingress with a certificate from the
# ingress issuer. The values files hold the k3s-aware part: no monitors for the controller-manager,
# scheduler and proxy that k3s binds to 127.0.0.1, none for etcd's metrics that 02 does not expose.

# %%
planned = monitoring.plan(api, lab)
report.plan(planned.changes())

# %%
print(planned.values_diffs() or "no values change")

# %% [markdown]
# ## Apply
#
# Secrets first (Grafana and Alertmanager mount them), then the charts in order, each followed to its
# helm Job's end (its CRDs are in before the next chart's objects), their workloads rolling out side
# by side and each followed to the end, then the rules (their kind exists once the stack's CRDs do).
# The prometheus-operator turns the `Prometheus` and `Alertmanager` resources into StatefulSets and
# reloads them when rules change.

# %%
report.applied(monitoring.apply(api, lab, planned, dry_run=dry_run, timeout=chart_timeout_s, step=report.step))

# %% [markdown]
# ## Verify by using it
#
# Through port-forwards to the pods (no Service exposed): Prometheus' targets and rules, Loki's
# LogQL, Alertmanager's API; Grafana over HTTPS at its ingress host, verified against the issuer's
# CA, logged in with the admin password of the lab file; ntfy at its server with the lab's token.
# The drill posts `LabkitDrill` (severity critical) to Alertmanager as `amtool alert add` does and
# times it until the ntfy topic holds the page; then resolves it. Drill alerts use a child route with
# `group_interval` = `group_wait`, so the resolution is not held back by the lab's `group_interval`.
# On the embedded lab below time scale 1, Prometheus and Alertmanager keep the lab's clock (their
# waits scaled, at least 1 s; what `kubectl get` shows stays the lab file's): a figure measured
# there is the lab clock's, and the checks and steps name the `group_wait` and `for` the programs ran.

# %%
with report.step("verification", "monitoring stack"):
    verified = monitoring.verify(api, lab, drill=drill, dry_run=dry_run, timeout=probe_timeout_s)
report.verify(verified.checks)

# %% [markdown]
# ### Scrape targets
# One row per job: how many targets are up and down, and the error Prometheus saw for a target down.

# %%
verified.targets

# %% [markdown]
# ### Rules loaded, and Grafana

# %%
verified.rules

# %%
verified.datasources

# %%
verified.dashboards

# %% [markdown]
# ### A known log line, found with LogQL
# Prometheus logs `Server is ready to receive web requests.` once it serves; promtail shipped it to Loki.

# %%
verified.log_lines.tail(3)

# %% [markdown]
# ### The drill: fired → routed → delivered
# Alertmanager's notification counters show what was sent and what failed, per integration.

# %%
verified.drill

# %%
verified.notifications

# %%
plots.timeline(verified.drill.assign(target="LabkitDrill"), title="The drill alert's path")

# %% [markdown]
# ### A real alert from a real condition: a full disk
# The lab's `NodeDiskAlmostFull` waits `for: 5m` (real minutes on a real lab). The drill applies a copy
# of it (same expression, labels and annotations) with `for: 10s`, evaluated every 5 s and labelled
# `drill="true"` (so the resolution is not held back by `group_interval`), before the probes above
# run. Prometheus reloads to load it, and after a reload it knows no Alertmanager for up to 5 s: the
# copy's `for` outlasts that (the embedded lab's clock shortens the `for`, and Prometheus' resend delay
# with it, so an alert sent to nobody is sent again seconds later). The drill waits until Prometheus
# has evaluated the copy, fills the disk, follows the alert from pending to firing to the page at
# ntfy, clears the disk and follows the resolution. Then the copy is removed; the lab's rule and its
# promtool tests are untouched.

# %%
verified.fault_drill

# %%
plots.timeline(verified.fault_drill.assign(target="NodeDiskAlmostFull"), title="A full disk: fault to page and back")

# %% [markdown]
# ## Plots from PromQL
# Node CPU, memory and root-disk use over the last 15 minutes, and the pods that restarted.

# %%
plots.node_resources(verified.resources["cpu"], verified.resources["memory"], verified.resources["disk"])

# %%
plots.metric_lines(verified.resources["restarts"], "Pod restarts", "restarts")

# %%
report.checks_table()

# %%
plots.timeline(report.timings(), title="Observability deployment timeline")

# %%
record(report, drill_latency_s=verified.drill_latency, dry_run=dry_run)
