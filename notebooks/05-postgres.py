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
# # 05 · PostgreSQL
#
# Installs PostgreSQL with Bitnami's `postgresql` chart (through k3s' Helm controller, as every chart
# of the series), its data on a persistent volume of the lab file's storage class, with the lab's
# CPU and memory requests and limits and, when asked, the postgres-exporter for Prometheus. Then
# proves it works by **using** it: a real PostgreSQL driver (psycopg 3) connects through a
# port-forward tunnelled by the Kubernetes API server, creates a canary table, writes and reads rows,
# and reads the database's own statistics (`pg_stat_database`). Last, it schedules the nightly backup:
# a CronJob whose pod runs the real `pg_dump` onto a backup volume (notebook 07 restores from it).
#
# **Prerequisites.** Notebook 02 has run (the cluster and its kubeconfig); the storage class named in
# the lab file exists (`nfs-client` after 03; k3s' own `local-path` otherwise).
#
# **What it changes.** Creates the namespace and the credentials Secret `postgresql-auth` (once: a
# re-run keeps the passwords), installs or upgrades the `postgresql` HelmChart, adds rows to the
# canary table `labkit_canary`, and (with a `backup` section in the lab file) applies the backup
# volume `backup.pg_dump.pvc` and the CronJob `postgresql-backup`. With `dry_run=True` it shows the
# plan only.

# %% tags=["parameters"]
lab_file = "../parameters/sim.yaml"  # the lab (labkit run passes the lab file it runs)
dry_run = False                      # True: plan only
timeout_s = 600                      # for the chart's helm Job and the StatefulSet to roll out
samples = 5                          # canary rows written (one pg_stat_database sample each)

# %%
from labkit import backup, kube, params, plots, postgres
from labkit.report import Report, record

report = Report("05-postgres", dry_run=dry_run)
lab = params.load_lab(lab_file)
api = kube.connect(lab.kubeconfig)
pg = postgres.settings(lab)
print(f"lab '{lab.name}': postgresql chart {pg.chart_version} into {pg.namespace}, database {pg.database}, "
      f"user {pg.user}, {pg.size} on {pg.storage_class}, metrics {'on' if pg.metrics else 'off'}")

# %% [markdown]
# ## Plan
#
# The credentials come first: with `password: generate` labkit generates the user's and the
# superuser's passwords the first time and stores them in the Secret `postgresql-auth`; the chart
# reads them from there (`auth.existingSecret`), so they never appear in the chart's values, in this
# notebook or in its outputs, and a re-run keeps them (a changed password would lock out every app
# of notebook 06). The chart's values carry the lab's image, storage, limits and metrics; a values
# change shows as an upgrade with its diff. The backup volume and CronJob are planned as the API
# server would apply them (a server-side dry run).

# %%
planned = postgres.plan(api, lab)
scheduled = backup.plan_schedule(api, lab) if lab.backup else None
report.plan(planned.changes() + (scheduled.changes() if scheduled else []))

# %% [markdown]
# ## Apply
#
# The Secret is created, then the HelmChart is applied; labkit follows k3s' `helm-install-postgresql`
# Job to its end and waits for the StatefulSet `postgresql` to roll out. A chart that fails to
# install stops here with the helm Job's last log line.

# %%
report.applied(postgres.apply(api, lab, planned, dry_run=dry_run, timeout=timeout_s, step=report.step))

# %% [markdown]
# ## Verify by using it
#
# psycopg connects to `postgresql-0` through the API server's port-forward (what `kubectl
# port-forward` does; no Service needs to be exposed), as the lab's user, with the password read from
# the Secret. It creates the canary table, writes rows and reads them back, sampling
# `pg_stat_database` after each write. With notebook 04's stack in the lab (its ServiceMonitor CRD
# served), the chart also got its ServiceMonitor: the postgres-exporter target must be up in
# Prometheus and its `pg_up` must be 1 (the exporter reaches the database).

# %%
verified = postgres.verify(api, lab, samples=samples, dry_run=dry_run)
report.verify(verified.checks)

# %% [markdown]
# ## The nightly backup
#
# The CronJob `postgresql-backup` runs at `backup.pg_dump.schedule` in the chart's own image (the same
# `pg_dump` version as the server): `pg_dump -Fc` of the lab's database through the Service
# `postgresql`, as the lab's user (password from the Secret, as an environment variable: never in
# the command), into `/backups/<database>-<UTC time>.dump` on the volume `backup.pg_dump.pvc`
# (storage class and size from the lab file: the NAS with `nfs-client`), written aside and renamed
# once complete, then the dumps beyond `backup.pg_dump.retention` removed, oldest first. Both objects
# are applied server-side with field manager `labkit`; a re-run plans them unchanged.

# %%
if scheduled is not None:
    report.applied(backup.apply_schedule(api, lab, scheduled, dry_run=dry_run, step=report.step))
    report.verify(backup.schedule_checks(api, lab, dry_run=dry_run))

# %%
report.inventory("postgres", {pg.namespace + "/" + postgres.RELEASE: {
    "chart_version": pg.chart_version, "server_version": verified.server_version, "storage_class": pg.storage_class}})
verified.stats

# %%
plots.database_stats(verified.stats, title="Database size, connections and commits during the verification")

# %%
plots.timeline(report.timings(), title="PostgreSQL deployment timeline")

# %%
record(report, chart_version=pg.chart_version, server_version=verified.server_version, dry_run=dry_run)
