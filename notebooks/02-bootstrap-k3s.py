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
# # 02 · Bootstrap k3s
#
# Installs k3s, pinned to the lab file's version, on the VMs of notebook 01: the server first (with
# embedded etcd), then the agents, concurrently. Fetches the cluster's kubeconfig to the operator's
# machine and proves the cluster works: every node Ready at the pinned version, the system pods
# running, the API server's certificate valid for the master's address.
#
# **Prerequisites.** Notebook 01 has run: the VMs are up and reachable over SSH with host keys pinned.
#
# **What it changes.** Writes `/etc/rancher/k3s/config.yaml` and runs k3s' installer on nodes that do
# not run k3s yet; writes the kubeconfig (mode 0600) to the lab's `kubeconfig` path. A node already
# running the pinned version is left alone; a node at another version stops the notebook (upgrades
# belong to 08-upgrade-k3s); a node whose config.yaml differs from the lab file is reported as drift
# and fixed (config rewritten, k3s restarted) only with `reconcile=True`. With `dry_run=True` it runs
# the read-only preflight and shows the plan.

# %% tags=["parameters"]
lab_file = "../parameters/sim.yaml"  # the lab (labkit run passes the lab file it runs)
dry_run = False                      # True: preflight and plan only
reconcile = False                    # True: rewrite a drifted config.yaml and restart k3s on that node
install_timeout_s = 600              # per node, for the installer and the service to come up
ready_timeout_s = 300                # for all nodes to be Ready and kube-system pods to run

# %%
from datetime import UTC, datetime

from labkit import k3s, kube, params, plots, ssh
from labkit.report import Report, record
from labkit.secrets import redact

report = Report("02-bootstrap-k3s", dry_run=dry_run)
lab = params.load_lab(lab_file)
session = ssh.connect(lab)
print(f"lab '{lab.name}': k3s {lab.k3s.version}, server {lab.master.name} ({lab.master.ip}), "
      f"agents {', '.join(n.name for n in lab.agents) or 'none'}")

# %% [markdown]
# ## Preflight
#
# Read-only checks on every node, over SSH and concurrently: the OS, cloud-init finished, CPUs,
# memory and disk as the lab file plans them, and whether k3s is installed (at which version). Any
# problem stops the notebook here, before a single change.

# %%
pre = k3s.preflight(session, lab)
report.require("preflight passes on every node", pre.ok, "; ".join(pre.problems) or f"{len(pre.facts)} nodes")
pre.table()

# %% [markdown]
# ## Plan and configuration
#
# The server's settings go into `/etc/rancher/k3s/config.yaml`, not installer flags, so a later
# upgrade (which re-runs the installer) keeps them: the cluster token (from the secret store),
# `tls-san` with the master's address and names, `write-kubeconfig-mode: "0600"`,
# `disable: [servicelb]` (MetalLB will serve LoadBalancer services), `cluster-init: true` (embedded
# etcd, which makes etcd snapshots possible) and node labels. The token is masked below.

# %%
plan = k3s.plan(lab, pre.facts)
print(redact(k3s.render(k3s.server_config(lab, lab.master))))
report.plan(plan)

# %% [markdown]
# ## Install the server, join the agents
#
# The server runs k3s' documented installer with `INSTALL_K3S_VERSION` pinned; labkit waits for the
# `k3s` service to be active. Agents then join concurrently with `K3S_URL` and the node token read
# from the server; the token goes into each agent's config.yaml (mode 0600), never onto a command
# line or into this notebook. A join that fails (a wrong token, the server unreachable) stops with
# the agent's journal, which says why.

# %%
started = datetime.now(UTC)  # readiness is measured from here, per node
done = k3s.bootstrap(session, lab, plan, timeout=install_timeout_s, reconcile=reconcile, dry_run=dry_run,
                     step=report.step)
report.applied(done)

# %% [markdown]
# ## kubeconfig
#
# k3s writes `/etc/rancher/k3s/k3s.yaml` pointing at `https://127.0.0.1:6443`, which is only right on
# the server itself. labkit fetches it, points it at the master's address, names the cluster, user
# and context after the lab, and writes it with mode 0600 (it holds the admin client key). From here
# on every call goes through this kubeconfig.

# %%
k3s.fetch_kubeconfig(session, lab, dry_run=dry_run, step=report.step)

# %% [markdown]
# ## Wait for the cluster
#
# Nodes and pods are watched (the API server says when something changes); each wait has a timeout
# and prints a line when its state moves.

# %%
cluster = kube.wait_cluster(lab.kubeconfig, [n.name for n in lab.nodes], timeout=ready_timeout_s,
                            dry_run=dry_run, step=report.step)
report.until("until Ready", cluster.ready, since=started)  # per node, from its install or join
cluster.nodes

# %% [markdown]
# ## Verify
#
# Read back from the cluster: nodes, versions, system pods, the API server's certificate.

# %%
report.verify(k3s.verify(session, lab, cluster))

# %%
cluster.system_pods

# %%
plots.timeline(report.timings(), title="Bootstrap and readiness timeline")

# %%
plots.node_allocatable(cluster.nodes, title="Allocatable CPU and memory per node")

# %%
record(report, nodes=len(lab.nodes), k3s_version=lab.k3s.version, dry_run=dry_run)
