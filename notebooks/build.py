"""Writes notebooks 01 and 02 from the cell text below: output-free, kernel ``homelab-notebooks``,
the ``parameters`` cell tagged for papermill. Run ``python notebooks/build.py`` after editing."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
KERNEL = {"name": "homelab-notebooks", "display_name": "homelab-notebooks", "language": "python"}


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str, *tags: str):
    cell = new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


PROVISION = [
    md("""
# 01 · Provision the VMs

Clones the Ubuntu 22.04 cloud-init template into the lab's VMs (one k3s server, the agents), gives
each its cores, memory, disk, static address, SSH key, tags and guest agent, starts them, and waits
until each one answers: first its guest agent with the expected address, then SSH with the
operator's key once cloud-init has finished.

**Prerequisites.** A Proxmox VE host with an API token for labkit, the cloud-init template
(`proxmox.template_vmid`, with `qemu-guest-agent` installed), and the lab file. On the embedded lab
all of this exists already.

**What it changes.** Creates and starts the VMs the lab file names that do not exist yet. It never
touches a VM it does not own: a vmid held by another VM stops the plan. Drift (a VM whose settings
differ from the lab file) is only reported unless `reconcile=True`. VMs are deleted only when named
in `destroy` *and* `confirm_destroy=True`, and never a template or a node the lab file still lists. With `dry_run=True` it shows the plan and changes nothing.
"""),
    code("""
lab_file = "../parameters/sim.yaml"  # the lab: Proxmox, network, nodes (labkit run passes an absolute path)
dry_run = False                      # True: show the plan, change nothing
reconcile = False                    # True: fix drifted VMs (may reboot them, see the plan's needs_reboot)
destroy = []                         # VMs outside the lab file to delete (stop, delete with disks)...
confirm_destroy = False              # ...only when this is True as well
memory_overcommit = 1.0              # VM memory may reach this multiple of the host's memory
storage_overcommit = 1.0             # new disks may use this multiple of the storage's free space
task_timeout_s = 600                 # per PVE task (clone, resize, start)
lock_timeout_s = 60                  # how long to retry a VM that another task holds locked
agent_timeout_s = 300                # per VM, for the guest agent to report its address
""", "parameters"),
    code("""
from labkit import params, plots, proxmox, ssh
from labkit.errors import ProxmoxError
from labkit.report import Report, record

report = Report("01-provision-vms")
lab = params.load_lab(lab_file)  # validated before anything is touched
print(f"lab '{lab.name}' ({lab.kind}): {len(lab.nodes)} VMs on PVE node '{lab.proxmox.node}' "
      f"at {lab.proxmox.host}:{lab.proxmox.port}, template {lab.proxmox.template_vmid}")
"""),
    md("""
## Connect to Proxmox VE

labkit authenticates with the API token named in the lab file (its secret is read from the secret
store, never written here) and verifies the host's TLS certificate, against the lab's CA file or a
pinned SHA-256 fingerprint. The host's capacity is what the plan must fit into.
"""),
    code("""
api = proxmox.connect(lab)
host = proxmox.capacity(api, lab)
host.table()
"""),
    md("""
## Plan

Each node of the lab file is matched with the VMs that exist, by vmid and by name:

- **create**: no such VM yet: full clone, configure, resize, start;
- **unchanged**: the VM exists, runs and matches the lab file;
- **start**: the VM exists and matches, but is stopped;
- **drift**: the VM's settings differ (the *detail* column says which, and *needs_reboot* whether
  fixing them takes a restart: CPU, memory and cloud-init settings do, tags and disk growth do not).

A vmid that belongs to a VM of another name, or a name that exists under another vmid, is an
error: provisioning never overwrites somebody else's VM.
"""),
    code("""
plan = proxmox.plan(api, lab, destroy=destroy)
report.plan(plan.changes())
"""),
    md("""
## Capacity check

Before any change, the memory the VMs would commit (existing VMs plus the new ones) is compared
with the host's memory, and the new disks with the storage's free space, each times its
over-commit factor. A plan that does not fit stops here, saying by how much.
"""),
    code("""
fit = proxmox.check_capacity(plan, lab, host, memory_overcommit=memory_overcommit,
                             storage_overcommit=storage_overcommit)
report.check("plan fits the host's memory and storage", fit.ok, "; ".join(fit.problems) or "within limits")
if not fit.ok:
    raise ProxmoxError("capacity check failed: " + "; ".join(fit.problems))
plots.capacity(fit.usage, title=f"Requested vs available on {lab.proxmox.node}")
"""),
    md("""
## Apply

Clones run one at a time: PVE locks the template while it is copied, so parallel clones would
fail or queue anyway. Each task's UPID is followed until it stops; a task that fails raises with
PVE's own message, and a VM locked by another task is retried with backoff before giving up.
Each new VM is configured (cores, memory, `ciuser`, URL-encoded `sshkeys`, static `ipconfig0`
with the gateway, `nameserver`, `searchdomain`, `agent=1`, `onboot=1`, tags), its disk grown to the
asked size, and started right away, so that boots overlap with the next clone; its guest agent
is awaited in the background meanwhile.
"""),
    code("""
if dry_run:
    print("dry run: nothing applied")
else:
    applied = proxmox.apply(api, lab, plan, reconcile=reconcile, confirm_destroy=confirm_destroy,
                            task_timeout=task_timeout_s, lock_timeout=lock_timeout_s,
                            agent_timeout=agent_timeout_s, step=report.step)
    report.applied(applied.changes)
    print(f"{len(applied.changes)} change(s) made; not done: {[c.target for c in applied.skipped] or 'none'}")
"""),
    md("""
## Wait for the guests

A VM that started is not yet usable. The guest agent must answer and report the address
cloud-init gave it (if it never does: is `qemu-guest-agent` in the template, is `agent=1` set?);
every lab VM is asked here, including those that ran before this notebook. Then SSH must accept
the operator's key, and `cloud-init status --wait` must say *done*. The first
SSH contact with a VM records its host key in the lab's `known_hosts`; later runs refuse a
changed key instead of trusting it silently.
"""),
    code("""
names = [n.name for n in lab.nodes]
if not dry_run:
    agents = proxmox.wait_agents(api, lab, names, timeout=agent_timeout_s)  # all of them, booted now or before
    session = ssh.connect(lab)
    reach = session.reachable(names)
    for row in reach.itertuples():
        report.add_timing("ssh + cloud-init", row.node, row.start, row.end)
    display(session.host_key_table())
"""),
    md("""
## Verify

The checks read the lab back from the API and over SSH; they do not trust what the cells above
claim. Every check must pass, or the notebook fails at its end naming the failed ones.
"""),
    code("""
vms = proxmox.vm_table(api, lab)
if not dry_run:
    running = set(vms.query("status == 'running'")["name"])
    drift = [c for c in proxmox.plan(api, lab).changes() if c.is_change]
    answered = {a.name for a in agents if a.ip == str(lab.node(a.name).ip)}
    settled = set(reach.query("cloud_init == 'done'")["node"])
    report.check("every lab VM exists and runs", running == set(names), ", ".join(sorted(running)))
    report.check("VM settings match the lab file", not drift, "; ".join(f"{c.target}: {c.detail}" for c in drift) or "no drift")
    report.check("guest agents report the planned addresses", answered == set(names), ", ".join(sorted(answered)))
    report.check("SSH works and cloud-init is done", settled == set(names), ", ".join(sorted(settled)))
vms
"""),
    code("""
report.checks_table()
"""),
    code("""
plots.timeline(report.timings(), title="Provisioning timeline")
"""),
    code("""
record(report, vms=len(vms), dry_run=dry_run)
"""),
]


BOOTSTRAP = [
    md("""
# 02 · Bootstrap k3s

Installs k3s, pinned to the lab file's version, on the VMs of notebook 01: the server first (with
embedded etcd), then the agents, concurrently. Fetches the cluster's kubeconfig to the operator's
machine and proves the cluster works: every node Ready at the pinned version, the system pods
running, the API server's certificate valid for the master's address.

**Prerequisites.** Notebook 01 has run: the VMs are up and reachable over SSH with host keys pinned.

**What it changes.** Writes `/etc/rancher/k3s/config.yaml` and runs k3s' installer on nodes that do
not run k3s yet; writes the kubeconfig (mode 0600) to the lab's `kubeconfig` path. A node already
running the pinned version is left alone; a node at another version stops the notebook (upgrades
belong to 08-upgrade-k3s); a node whose config.yaml differs from the lab file is reported as drift
and fixed (config rewritten, k3s restarted) only with `reconcile=True`. With `dry_run=True` it runs
the read-only preflight and shows the plan.
"""),
    code("""
lab_file = "../parameters/sim.yaml"  # the lab (labkit run passes an absolute path)
dry_run = False                      # True: preflight and plan only
reconcile = False                    # True: rewrite a drifted config.yaml and restart k3s on that node
install_timeout_s = 600              # per node, for the installer and the service to come up
ready_timeout_s = 300                # for all nodes to be Ready and kube-system pods to run
""", "parameters"),
    code("""
from datetime import UTC, datetime

from labkit import k3s, kube, params, plots, ssh
from labkit.errors import K3sError
from labkit.report import Report, record
from labkit.secrets import redact

report = Report("02-bootstrap-k3s")
lab = params.load_lab(lab_file)
session = ssh.connect(lab)
print(f"lab '{lab.name}': k3s {lab.k3s.version}, server {lab.master.name} ({lab.master.ip}), "
      f"agents {', '.join(n.name for n in lab.agents) or 'none'}")
"""),
    md("""
## Preflight

Read-only checks on every node, over SSH and concurrently: the OS, cloud-init finished, CPUs,
memory and disk as the lab file plans them, and whether k3s is installed (at which version). Any
problem stops the notebook here, before a single change.
"""),
    code("""
pre = k3s.preflight(session, lab)
display(pre.table())
if dry_run and not pre.ok:
    print("dry run: a real run would stop here:\\n" + "\\n".join(pre.problems))
elif not pre.ok:
    report.check("preflight passes on every node", False, "; ".join(pre.problems))
    raise K3sError("preflight failed:\\n" + "\\n".join(pre.problems))
else:
    report.check("preflight passes on every node", True, f"{len(pre.facts)} nodes")
"""),
    md("""
## Plan and configuration

The server's settings go into `/etc/rancher/k3s/config.yaml`, not installer flags, so a later
upgrade (which re-runs the installer) keeps them: the cluster token (from the secret store),
`tls-san` with the master's address and names, `write-kubeconfig-mode: "0600"`,
`disable: [servicelb]` (MetalLB will serve LoadBalancer services), `cluster-init: true` (embedded
etcd, which makes etcd snapshots possible) and node labels. The token is masked below.
"""),
    code("""
changes = k3s.plan(lab, pre.facts)
print(redact(k3s.render(k3s.server_config(lab, lab.master))))
report.plan(changes)
"""),
    md("""
## Install the server, join the agents

The server runs k3s' documented installer with `INSTALL_K3S_VERSION` pinned; labkit waits for the
`k3s` service to be active. Agents then join concurrently with `K3S_URL` and the node token read
from the server; the token goes into each agent's config.yaml (mode 0600), never onto a command
line or into this notebook. A join that fails (a wrong token, the server unreachable) stops with
the agent's journal, which says why.
"""),
    code("""
started = datetime.now(UTC)  # readiness is measured from here, per node
if dry_run:
    print("dry run: nothing installed")
else:
    done = k3s.bootstrap(session, lab, changes, timeout=install_timeout_s, reconcile=reconcile, step=report.step)
    report.applied(done)
    print(f"{len(done)} node(s) installed or joined" if done else "every node already runs the pinned version")
"""),
    md("""
## kubeconfig

k3s writes `/etc/rancher/k3s/k3s.yaml` pointing at `https://127.0.0.1:6443`, which is only right on
the server itself. labkit fetches it, points it at the master's address, names the cluster, user
and context after the lab, and writes it with mode 0600 (it holds the admin client key). From here
on every call goes through this kubeconfig.
"""),
    code("""
if not dry_run:
    with report.step("kubeconfig", lab.master.name):
        path = k3s.fetch_kubeconfig(session, lab)
    print(f"kubeconfig written to {path} (mode {path.stat().st_mode & 0o777:o})")
"""),
    md("""
## Wait for the cluster

Nodes and pods are watched (the API server says when something changes); each wait has a timeout
and prints a line when its state moves.
"""),
    code("""
if not dry_run:
    api = kube.connect(lab.kubeconfig)
    ready = kube.wait_nodes_ready(api, [n.name for n in lab.nodes], timeout=ready_timeout_s)
    installed = report.timings().groupby("target")["end"].max()  # per node: its install or join ended
    for name, at in ready.items():  # from installed to Ready; a node Ready before this run: no bar
        since = installed.get(name, started)
        report.add_timing("until Ready", name, since, max(at, since))
    with report.step("kube-system pods running", "cluster"):
        system_pods = kube.wait_pods_running(api, "kube-system", timeout=ready_timeout_s)
"""),
    md("""
## Verify

Read back from the cluster: nodes, versions, system pods, the API server's certificate.
"""),
    code("""
if not dry_run:
    names = {n.name for n in lab.nodes}
    nodes = kube.node_table(api)
    versions = set(nodes["version"])
    phases = set(system_pods["phase"])
    sans = kube.server_certificate_sans(lab.kubeconfig)
    left = [c for c in k3s.plan(lab, k3s.preflight(session, lab).facts).changes() if c.is_change]
    report.check("k3s and config.yaml match the lab file", not left, "; ".join(f"{c.target}: {c.detail}" for c in left) or "no drift")
    report.check("every lab node is Ready", set(nodes.query("ready")["name"]) == names, f"{nodes['ready'].sum()} Ready")
    report.check(f"kubelet versions = pin {lab.k3s.version}", versions == {lab.k3s.version}, ", ".join(sorted(versions)))
    report.check("kube-system pods are running", phases <= {"Running", "Succeeded"}, f"{len(system_pods)} pods")
    report.check("API server certificate covers the master IP", str(lab.master.ip) in sans, ", ".join(sans))
    report.check("kubeconfig is private (0600)", lab.kubeconfig.stat().st_mode & 0o777 == 0o600)
    display(nodes)
"""),
    code("""
if not dry_run:
    display(system_pods)
report.checks_table()
"""),
    code("""
if not dry_run:
    display(plots.timeline(report.timings(), title="Bootstrap and readiness timeline"))
    display(plots.node_allocatable(nodes, title="Allocatable CPU and memory per node"))
"""),
    code("""
record(report, nodes=len(lab.nodes), k3s_version=lab.k3s.version, dry_run=dry_run)
"""),
]


SERIES = {"01-provision-vms.ipynb": PROVISION, "02-bootstrap-k3s.ipynb": BOOTSTRAP}


def build(name: str) -> str:
    """The notebook's file text, as committed."""
    cells = SERIES[name]
    for i, cell in enumerate(cells):
        cell.id = f"{name[:2]}-{i:02d}"  # stable ids: rebuilding gives the same file
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNEL, "language_info": {"name": "python"}})
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


if __name__ == "__main__":
    for notebook in SERIES:
        (HERE / notebook).write_text(build(notebook))
