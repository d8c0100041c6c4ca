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
# # 07 · Backups and restore drills
#
# Backups are worth what their restores are. This notebook takes both kinds of backup the lab keeps,
# a PostgreSQL dump and a k3s etcd snapshot, and **restores each in a drill** whose result is
# measured: the data must come back identical, the recovery point (what was written after the backup
# and is lost) and the recovery time (from the loss to the data verified back) are compared with the
# lab file's `backup.rpo_minutes` and `backup.rto_minutes`.
#
# **Prerequisites.** Notebooks 02 and 05 have run (the cluster; PostgreSQL with its credentials, the
# backup volume and the CronJob `postgresql-backup`).
#
# **What it changes.** Only what the drills create: the table `labkit_drill` in the lab's database,
# the database `labkit_drill_restored` (dropped once compared), the namespace `labkit-drill-etcd`, a
# dump on the backup volume (a Job of the CronJob; the volume pruned to `backup.pg_dump.retention`)
# and an etcd snapshot named `labkit-drill`. The etcd drill stops k3s on
# the servers and resets the cluster to its snapshot: it runs only with `confirm_etcd_restore=True`
# (the embedded lab, being disposable, confirms itself). With `dry_run=True` it lists the backups only.

# %% tags=["parameters"]
lab_file = "../parameters/sim.yaml"  # the lab (labkit run passes the lab file it runs)
dry_run = False                      # True: inventory only, no drill
confirm_etcd_restore = False         # True: allow the etcd drill to stop k3s and reset the cluster
rows = 100                           # rows written before the dump
later_rows = 10                      # rows written after it: the recovery point the drill measures

# %%
from labkit import backup, kube, params, plots, ssh
from labkit.report import Report, record

report = Report("07-backup-restore", dry_run=dry_run)
lab = params.load_lab(lab_file)
api = kube.connect(lab.kubeconfig)
session = ssh.connect(lab)
targets = backup.settings(lab)
confirm = confirm_etcd_restore or lab.kind == "embedded"  # the twin is disposable; a real lab must say so
print(f"lab '{lab.name}': targets RPO {targets.rpo_minutes:g} min, RTO {targets.rto_minutes:g} min; dumps on "
      f"PVC {targets.pg_dump.pvc} (keep {targets.pg_dump.retention}); etcd snapshots kept {targets.etcd.retention}")

# %% [markdown]
# ## The drills
#
# **PostgreSQL.** Writes `rows` known rows (each a SHA-256 of its id) into the table `labkit_drill`,
# then takes a dump on demand: a Job made from the CronJob `postgresql-backup` as `kubectl create job
# --from=cronjob/postgresql-backup` makes it (the CronJob's job template, annotated
# `cronjob.kubernetes.io/instantiate: manual`, owned by the CronJob), so the drill tests the very
# command that runs every night; its pod's real `pg_dump -Fc` writes `<database>-<UTC time>.dump` onto
# the backup volume and prunes it to the retention. A failed Job stops the drill naming the Job and its
# log's last lines. The drill then writes `later_rows` more, drops the table (the loss) and restores
# the dump with the real `pg_restore --clean --if-exists` in one transaction (a pod mounting the backup
# volume, as the PostgreSQL superuser) into the fresh database `labkit_drill_restored`, where the row
# count and an MD5 over all rows must equal the state at dump time. The rows written after the dump are
# the measured recovery point. A missing or corrupt dump fails the restore naming the file; no other
# database is touched.
#
# **etcd.** Creates a namespace with a ConfigMap, a Secret and a Deployment, takes an on-demand
# snapshot (`k3s etcd-snapshot save --name labkit-drill`), deletes the namespace (the loss), then
# restores as k3s documents it: `systemctl stop k3s` on the servers, `k3s server --cluster-reset
# --cluster-reset-restore-path=<snapshot>` on the first, other servers' datastores removed, k3s
# started again. The objects must come back with the same uids and content, and every node must be
# Ready again: the agents (and any other server) rejoin the reset cluster.

# %%
done = backup.drills(session, lab, api, confirm=confirm, rows=rows, later_rows=later_rows, dry_run=dry_run)
report.verify(backup.drill_checks(done, lab))

# %%
measured = backup.measures(done, lab)
measured

# %%
plots.recovery_bars(measured, title="Measured RPO and RTO against the lab's targets (seconds, log scale)")

# %%
plots.timeline(backup.timeline_rows(done), title="Drill timelines: backup → loss → restored → verified")

# %% [markdown]
# ## Inventory
#
# Both kinds of backup with their time, size and location: etcd snapshots as k3s lists them on the
# first server (`k3s etcd-snapshot ls`), PostgreSQL dumps on the backup volume as a short pod mounting
# it lists them (`stat`; the same view the backup Jobs have, whatever the volume's storage class, and
# no login on the NAS needed).

# %%
backups = backup.inventory(session, lab, api)
report.inventory("backups", backups.assign(count=1).groupby("kind", as_index=False)["count"].sum(), key="kind")
backups

# %%
plots.backup_inventory(backups, title="Backups: size per backup over time")

# %%
record(report, drills=len(done), backups=len(backups), dry_run=dry_run)
