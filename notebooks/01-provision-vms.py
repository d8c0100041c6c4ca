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
# # 01 · Provision the VMs
#
# Clones the Ubuntu 22.04 cloud-init template into the lab's VMs (one k3s server, the agents), gives
# each its cores, memory, disk, static address, SSH key, tags and guest agent, starts them, and waits
# until each one answers: first its guest agent with the expected address, then SSH with the
# operator's key once cloud-init has finished.
#
# **Prerequisites.** A Proxmox VE host with an API token for labkit, the cloud-init template
# (`proxmox.template_vmid`, with `qemu-guest-agent` installed), and the lab file. On the embedded lab
# all of this exists already.
#
# **What it changes.** Creates and starts the VMs the lab file names that do not exist yet. It never
# touches a VM it does not own: a vmid held by another VM stops the plan. Drift (a VM whose settings
# differ from the lab file) is only reported unless `reconcile=True`. VMs are deleted only when named
# in `destroy` *and* `confirm_destroy=True`, and never a template or a node the lab file still lists. With `dry_run=True` it shows the plan and changes nothing.

# %% tags=["parameters"]
lab_file = "../parameters/sim.yaml"  # the lab: Proxmox, network, nodes (labkit run passes the lab file it runs)
dry_run = False                      # True: show the plan, change nothing
reconcile = False                    # True: fix drifted VMs (may reboot them, see the plan's needs_reboot)
destroy = []                         # VMs outside the lab file to delete (stop, delete with disks)...
confirm_destroy = False              # ...only when this is True as well
memory_overcommit = 1.0              # VM memory may reach this multiple of the host's memory
storage_overcommit = 1.0             # new disks may use this multiple of the storage's free space
task_timeout_s = 600                 # per PVE task (clone, resize, start)
lock_timeout_s = 60                  # how long to retry a VM that another task holds locked
agent_timeout_s = 300                # per VM, for the guest agent to report its address

# %%
from labkit import params, plots, proxmox, ssh
from labkit.report import Report, record

report = Report("01-provision-vms", dry_run=dry_run)
lab = params.load_lab(lab_file)  # validated before anything is touched
print(f"lab '{lab.name}' ({lab.kind}): {len(lab.nodes)} VMs on PVE node '{lab.proxmox.node}' "
      f"at {lab.proxmox.host}:{lab.proxmox.port}, template {lab.proxmox.template_vmid}")

# %% [markdown]
# ## Connect to Proxmox VE
#
# labkit authenticates with the API token named in the lab file (its secret is read from the secret
# store, never written here) and verifies the host's TLS certificate, against the lab's CA file or a
# pinned SHA-256 fingerprint. The host's capacity is what the plan must fit into.

# %%
api = proxmox.connect(lab)
host = proxmox.capacity(api, lab)
host.table()

# %% [markdown]
# ## Plan
#
# Each node of the lab file is matched with the VMs that exist, by vmid and by name:
#
# - **create**: no such VM yet: full clone, configure, resize, start;
# - **unchanged**: the VM exists, runs and matches the lab file;
# - **start**: the VM exists and matches, but is stopped;
# - **drift**: the VM's settings differ (the *detail* column says which, and *needs_reboot* whether
#   fixing them takes a restart: CPU, memory and cloud-init settings do, tags and disk growth do not).
#
# A vmid that belongs to a VM of another name, or a name that exists under another vmid, is an
# error: provisioning never overwrites somebody else's VM.

# %%
plan = proxmox.plan(api, lab, destroy=destroy)
report.plan(plan)

# %% [markdown]
# ## Capacity check
#
# Before any change, the memory the VMs would commit (existing VMs plus the new ones) is compared
# with the host's memory, and the new disks with the storage's free space, each times its
# over-commit factor. A plan that does not fit stops here, saying by how much.

# %%
fit = proxmox.check_capacity(plan, lab, host, memory_overcommit=memory_overcommit,
                             storage_overcommit=storage_overcommit)
report.require("plan fits the host's memory and storage", fit.ok, "; ".join(fit.problems) or "within limits")
plots.capacity(fit.usage, title=f"Requested vs available on {lab.proxmox.node}")

# %% [markdown]
# ## Apply
#
# Clones run one at a time: PVE locks the template while it is copied, so parallel clones would
# fail or queue anyway. Each task's UPID is followed until it stops; a task that fails raises with
# PVE's own message, and a VM locked by another task is retried with backoff before giving up.
# Each new VM is configured (cores, memory, `ciuser`, URL-encoded `sshkeys`, static `ipconfig0`
# with the gateway, `nameserver`, `searchdomain`, `agent=1`, `onboot=1`, tags), its disk grown to the
# asked size, and started right away, so that boots overlap with the next clone; its guest agent
# is awaited in the background meanwhile.

# %%
applied = proxmox.apply(api, lab, plan, dry_run=dry_run, reconcile=reconcile, confirm_destroy=confirm_destroy,
                        task_timeout=task_timeout_s, lock_timeout=lock_timeout_s,
                        agent_timeout=agent_timeout_s, step=report.step)
report.applied(applied.changes)
applied.table()

# %% [markdown]
# ## Wait for the guests
#
# A VM that started is not yet usable. The guest agent must answer and report the address
# cloud-init gave it (if it never does: is `qemu-guest-agent` in the template, is `agent=1` set?);
# every lab VM is asked here, including those that ran before this notebook. Then SSH must accept
# the operator's key, and `cloud-init status --wait` must say *done*. The first
# SSH contact with a VM records its host key in the lab's `known_hosts`; later runs refuse a
# changed key instead of trusting it silently.

# %%
names = [n.name for n in lab.nodes]
agents = proxmox.wait_agents(api, lab, names, timeout=agent_timeout_s, dry_run=dry_run)  # booted now or before
session = ssh.connect(lab)
reach = session.reachable(names, dry_run=dry_run)
report.add_timings("ssh + cloud-init", reach)
session.host_key_table()

# %% [markdown]
# ## Verify
#
# The checks read the lab back from the API and over SSH; they do not trust what the cells above
# claim. Every check must pass, or the notebook fails at its end naming the failed ones (a dry run
# shows them without failing).

# %%
report.verify(proxmox.verify(api, lab, agents, reach))

# %%
vms = proxmox.vm_table(api, lab)
vms

# %%
plots.timeline(report.timings(), title="Provisioning timeline")

# %%
record(report, vms=len(vms), dry_run=dry_run)
