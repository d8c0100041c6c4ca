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
# # 08 · Upgrade k3s
#
# Brings every node to the lab file's `k3s.version`, the original lab's runbook done by labkit: an etcd
# snapshot first, then the server, then each agent, one at a time: cordon, drain, upgrade through k3s'
# own installer, wait until the node is Ready at the new version, uncordon. While it runs, a probe asks a
# service of the lab every 200 ms (lab time) and the notebook reports what its users saw.
#
# **To upgrade**, raise the pin in the lab file (`k3s.version`) and run this notebook
# (`labkit run --only 08`). With the pin unchanged it finds every node at the pin and changes nothing.
#
# **Prerequisites.** 02-bootstrap-k3s has run: k3s on every node, the kubeconfig fetched.
#
# **What it changes.** Takes an etcd snapshot (`pre-upgrade-<version>`) on the master; cordons, drains
# and re-runs the installer on each node below the pin; creates a small probe workload (namespace
# `availability-probe`) for the duration when `availability_probe` is empty, and removes it after.
# config.yaml is not touched: every setting 02 wrote stays. With `dry_run=True` it runs the read-only
# preflight and shows the plan.
#
# **The traps it refuses** (before anything changes): a downgrade, a skipped minor version (unless
# `allow_minor_skip`), an agent left ahead of a server, a node not Ready, installer flags a re-run would
# drop. A PodDisruptionBudget that allows no disruption is named here and stops the drain after
# `drain_timeout_s`; a node that does not come back within `ready_timeout_s` stops the run, cordoned,
# rolled back to its previous version with `rollback_on_failure`; re-running 08 resumes.

# %% tags=["parameters"]
lab_file = "../parameters/sim.yaml"  # the lab (labkit run passes the lab file it runs)
dry_run = False                      # True: preflight and plan only
nodes = []                           # names of the nodes to upgrade; empty: every node (servers first)
max_unavailable = 1                  # agents upgraded at a time
drain_timeout_s = 300                # per node: evictions refused by a budget for this long stop the run
ready_timeout_s = 300                # per node: to be Ready at the new version after the installer
availability_probe = ""              # URL to probe during the upgrade; "": a probe workload of 08's own
snapshot_first = True                # etcd snapshot before the first change
allow_minor_skip = False             # True: allow e.g. 1.33 -> 1.35 in one step (k3s advises against it)
rollback_on_failure = True           # a node that does not come back gets its previous version again
os_patch = False                     # True: apply pending OS updates, node by node (drain, upgrade, reboot if asked)
remove = []                          # agents to take out: drain, delete the Node, uninstall k3s
confirm = False                      # True: removing also destroys the agents' VMs (01's destroy path)
rejoin = []                          # agents to bring back: 01 + 02 for them (VM if missing, k3s join)

# %%
from labkit import maintenance, params, plots, ssh, upgrade
from labkit.report import Report, record

report = Report("08-upgrade-k3s", dry_run=dry_run)
lab = params.load_lab(lab_file)
session = ssh.connect(lab)
print(f"lab '{lab.name}': pin k3s {lab.k3s.version}, nodes {', '.join(n.name for n in lab.nodes)}")

# %% [markdown]
# ## Preflight
#
# Every node over SSH and through the API: the k3s binary's version, the kubelet's, Ready, cordoned,
# the settings config.yaml holds (they survive the installer's re-run), the flags on the k3s unit (they
# would not). The target must be newer than each node, one minor version at a time, and no agent may
# end up ahead of a server. Only when all of that passes is the etcd snapshot taken and listed: a failed
# preflight changes nothing.

# %%
pre = upgrade.preflight(session, lab, nodes=nodes or None, allow_minor_skip=allow_minor_skip,
                        snapshot_first=snapshot_first, dry_run=dry_run)
report.require("preflight passes", pre.ok, "; ".join(pre.problems) or pre.summary())
print(pre.summary())
pre.table()

# %% [markdown]
# The etcd snapshot taken before the first change (the way back, with 07-backup-restore's restore
# drill), and the snapshots the server keeps:

# %%
print(f"pre-upgrade snapshot: {pre.snapshot or 'none taken (nothing to upgrade, a dry run, or snapshot_first off)'}")
pre.snapshots

# %% [markdown]
# ## What a drain will meet
#
# PodDisruptionBudgets with the disruptions they allow now: one that `blocks` (none allowed while it
# covers a pod on a node to drain) holds the drain until `drain_timeout_s`. Workloads of one replica with
# no budget are down while their node drains (their pod is recreated on another node).

# %%
pre.budgets

# %%
pre.single_replicas

# %% [markdown]
# ## Plan

# %%
report.plan(pre.plan())

# %% [markdown]
# ## Upgrade
#
# The availability probe starts first (its target made now if `availability_probe` is empty: nginx, two
# replicas, a budget of minAvailable 1, a NodePort Service on the master's address). Then each node in
# turn; evicted pods are listed as they go. A stop leaves the failing node named in the checks below,
# with the command to resume.

# %%
probe = upgrade.probe_for(lab, pre, availability_probe, dry_run=dry_run)
outcome = upgrade.upgrade(session, lab, pre, max_unavailable=max_unavailable, drain_timeout_s=drain_timeout_s,
                          ready_timeout_s=ready_timeout_s, rollback_on_failure=rollback_on_failure, probe=probe,
                          dry_run=dry_run, step=report.step, applied=report.applied)
upgrade.remove_probe(lab, availability_probe, outcome)
outcome.versions()

# %% [markdown]
# ## What users saw
#
# From the probe's records: availability (answers 2xx/3xx over requests), the longest outage (first
# failure to the next success) and latency percentiles of the answers, for the whole run and for each
# node's phases. Then seconds per phase per node, and the pods each drain evicted.
#
# A restart of k3s leaves the node's pods and kube-proxy's rules running (its unit's `KillMode=process`),
# on a real lab as on the embedded one: the server's upgrade should cost the probe no request. While the
# agents drain, the probe workload's budget keeps one replica answering; a request in flight when its pod
# is evicted can fail.

# %%
outcome.availability()

# %%
outcome.per_node()

# %%
outcome.evicted()

# %%
plots.upgrade_timeline(outcome.phases(), outcome.probe, title="Node phases above the availability probe")

# %% [markdown]
# ## Maintenance: OS security updates
#
# Ubuntu's unattended-upgrades applies security fixes daily, but some need a restart
# (`/var/run/reboot-required`), and a node rebooting on its own takes its pods down without a drain.
# Below: per node, whether unattended-upgrades is on, the updates pending and whether a restart is
# asked for. With `os_patch=True`, the nodes that need it go one at a time, servers first: cordon,
# drain, `apt-get upgrade`, reboot only if asked, wait until the Node is back Ready (a new boot id) with
# its pods, uncordon.

# %%
patches = maintenance.patch_status(session, lab)
report.verify([maintenance.unattended_check(patches)])
patches

# %%
patched = maintenance.os_patch(session, lab, enabled=os_patch, drain_timeout_s=drain_timeout_s,
                               ready_timeout_s=ready_timeout_s, dry_run=dry_run, step=report.step,
                               applied=report.applied)
patched

# %% [markdown]
# ## Maintenance: remove and rejoin an agent
#
# `remove` takes agents out: drained (their pods go to the other nodes), their Node deleted, k3s
# uninstalled; the VM stays unless `confirm=True`, which destroys it through 01's destroy path and
# forgets its pinned SSH host key (a VM made again presents a new one). `rejoin` brings agents back as
# 01 and 02 would: the VM cloned if it is missing, k3s joined at the pin, the Node Ready. Both skip what
# is already done. A removed agent stays in the lab file, so the next full run (02) joins it again.

# %%
removed = maintenance.remove_nodes(session, lab, remove, confirm=confirm, drain_timeout_s=drain_timeout_s,
                                   dry_run=dry_run, step=report.step, applied=report.applied)
rejoined = maintenance.rejoin_nodes(session, lab, rejoin, timeout=ready_timeout_s, dry_run=dry_run,
                                    step=report.step, applied=report.applied)
removed.merge(rejoined, on="node", how="outer", suffixes=("_remove", "_rejoin"))

# %% [markdown]
# ## Verify
#
# Read back from the nodes and the API: the binary and the kubelet at the pin everywhere, every node
# Ready and schedulable (but the agents removed above), servers before agents, the snapshot listed.

# %%
report.verify(upgrade.verify(session, lab, pre, outcome, absent=sorted(set(remove) - set(rejoin))))

# %%
cluster_nodes = upgrade.cluster_nodes(lab)
report.inventory("nodes", cluster_nodes, columns=["roles", "ready", "version", "internal_ip"])
cluster_nodes

# %%
record(report, k3s_version=lab.k3s.version, upgraded=outcome.upgraded, snapshot=pre.snapshot, patched=len(patched),
       installed=upgrade.installed_versions(session, lab), dry_run=dry_run, **outcome.headline())
