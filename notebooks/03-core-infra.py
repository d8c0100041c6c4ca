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
# # 03 · Core infrastructure
#
# The second layer of the lab: storage from the NAS, addresses for LoadBalancer Services, TLS
# certificates from Let's Encrypt, and ingress. Each piece is a Helm chart deployed the k3s way (a
# `HelmChart` or `HelmChartConfig` that k3s' Helm controller installs) plus the few objects the lab
# file describes, and each is proved by *using* it: a volume written on one node and read on
# another, a LoadBalancer address answering from this machine, a certificate served by Traefik and
# verified against the issuer's CA.
#
# **Prerequisites.** Notebook 02 has run: the cluster is up and its kubeconfig written; k3s' ServiceLB
# is disabled (`k3s.disable: [servicelb]`); the NAS exports `nfs.path` to the nodes.
#
# **What it changes.** Installs or upgrades the charts of the lab file's `charts` section
# (nfs-subdir-external-provisioner, MetalLB, cert-manager) with their values files merged with what
# the lab file derives; installs `nfs-common` on the nodes that lack it (over SSH); makes
# `nfs.storage_class` the default StorageClass; applies the MetalLB pools,
# the ClusterIssuers (and the Cloudflare API token Secret) with server-side apply, pruning those a
# previous run applied and the lab file no longer names; configures k3s' Traefik through a
# `HelmChartConfig`. Test objects live in the namespace `labkit-probes`, deleted at the end unless
# `keep_probes=True`. A converged lab plans nothing and changes nothing; with `dry_run=True` it runs
# the read-only preflight and shows the plans.

# %% tags=["parameters"]
lab_file = "../parameters/sim.yaml"  # the lab (labkit run passes the lab file it runs)
dry_run = False                      # True: preflight and plans only
keep_probes = False                  # True: leave the test PVC, Services, Certificate and whoami site
chart_timeout_s = 600                # per chart: the helm Job, then its workloads rolled out
probe_timeout_s = 300                # per probe: a claim to bind, an address, a certificate

# %%
from labkit import certs, charts, infra, kube, manifests, net, params, plots, ssh, storage
from labkit.report import Report, record

report = Report("03-core-infra", dry_run=dry_run)
lab = params.load_lab(lab_file)
wanted = {c.name: c for c in charts.from_lab(lab)}  # values files checked here, before anything is applied
api = kube.connect(lab.kubeconfig)
session = ssh.connect(lab)
print(f"lab '{lab.name}': NFS {lab.nfs.server}:{lab.nfs.path} as {lab.nfs.storage_class}, "
      f"pool {lab.metallb.addresses}, domain {lab.ingress.domain}, issuer {lab.ingress.issuer}")
charts.table(wanted.values())

# %% [markdown]
# ## Preflight
#
# Read-only: every node Ready; k3s' ServiceLB disabled (read from each server's `config.yaml`, and no
# `svclb-*` DaemonSet running): with both ServiceLB and MetalLB on, two controllers answer for every
# LoadBalancer Service, the original system's known mistake; and the NAS's NFS port reachable from
# every node, since the kubelet mounts the export on whichever node a pod lands.

# %%
pre = infra.preflight(api, session, lab)
report.require("core-infra preflight passes", pre.ok, "; ".join(pre.problems) or f"{len(pre.nodes)} nodes")
pre.nodes

# %% [markdown]
# ## Storage: the nodes' NFS client
#
# The kubelet mounts the export on whichever node a pod lands, with `mount.nfs` from Debian's
# `nfs-common`: the nodes without it get it (`apt-get install -y nfs-common` over SSH). Then each node
# asks the NAS for its export list (`showmount -e`, the NFS MOUNT protocol's answer), which must
# name `nfs.path`: a NAS that does not answer, or that does not export the folder to the nodes
# (Synology: the shared folder's NFS permissions), stops the notebook here, naming the node and what
# the NAS said.

# %%
client_plan = storage.plan_nfs_client(session, lab)
report.plan(client_plan.changes())

# %%
report.applied(storage.apply_nfs_client(session, client_plan, dry_run=dry_run))
exported = storage.verify_exports(session, lab)
report.require(exported.name, exported.passed, exported.detail)

# %% [markdown]
# ## Storage: the NFS provisioner
#
# nfs-subdir-external-provisioner makes a folder `${namespace}-${pvcName}-${pvName}` in the export for
# each claim, and archives it (`archived-…`) when the claim goes if `nfs.archive_on_delete`. Its
# StorageClass becomes the default, so k3s' `local-path` stops being one, and stays so: k3s re-applies
# its packaged `local-storage.yaml` whenever it starts (a reboot, 08's upgrade, 07's etcd restore), so a
# `local-storage.yaml.skip` file on each server tells it not to. What can go wrong: the NAS
# refuses the nodes (export permissions), or a chart version that does not exist (the helm Job's log
# says so, and the notebook stops naming it).

# %%
nfs_plan = charts.plan(api, [wanted["nfs-subdir-external-provisioner"]])
default_plan = storage.plan_default_class(api, lab)
skip_plan = storage.plan_local_storage_skip(session, lab)
report.plan(nfs_plan.changes() + default_plan.changes() + skip_plan.changes())

# %%
report.applied(charts.apply(api, nfs_plan, timeout=chart_timeout_s, dry_run=dry_run, step=report.step))
report.applied(storage.apply_default_class(api, default_plan, dry_run=dry_run))
report.applied(storage.apply_local_storage_skip(session, skip_plan, dry_run=dry_run))
report.verify(storage.verify_class(api, lab))
storage.classes(api)

# %% [markdown]
# ## Addresses: MetalLB
#
# MetalLB's controller hands out addresses from the pools (`IPAddressPool`), its speakers answer ARP
# for them on the home network (`L2Advertisement`). The pools are objects, applied after the chart
# (which brings their CRDs); a pool the lab file no longer names is pruned, if labkit applied it.

# %%
metallb_plan = charts.plan(api, [wanted["metallb"]])
pools = net.pool_objects(lab)
report.plan(metallb_plan)

# %%
report.applied(charts.apply(api, metallb_plan, timeout=chart_timeout_s, dry_run=dry_run, step=report.step))
pools_plan = manifests.plan(api, "metallb", pools)
report.applied(manifests.apply(api, pools_plan, dry_run=dry_run, step=report.step))
report.plan(pools_plan)

# %% [markdown]
# ## Certificates: cert-manager and the Let's Encrypt issuers
#
# cert-manager (in `infra`) gets a ClusterIssuer per `tls.issuers` entry. With DNS-01, the Cloudflare
# API token is resolved from its reference into a Secret beside cert-manager (the plan shows a digest,
# never the token). An issuer is Ready once its ACME account is registered; one that is not (the ACME
# server unreachable, a refused e-mail) stops the notebook with cert-manager's message.

# %%
manager_plan = charts.plan(api, [wanted["cert-manager"]])
report.plan(manager_plan)

# %%
report.applied(charts.apply(api, manager_plan, timeout=chart_timeout_s, dry_run=dry_run, step=report.step))
issuers_plan = manifests.plan(api, "issuers", certs.issuer_objects(lab))
report.applied(manifests.apply(api, issuers_plan, dry_run=dry_run, step=report.step))
report.plan(issuers_plan)

# %%
certs.wait_issuers(api, lab, timeout=probe_timeout_s, dry_run=dry_run)

# %% [markdown]
# ## Ingress: Traefik
#
# k3s installs Traefik itself; its settings go into a `HelmChartConfig` that k3s merges over its own
# values: HTTP redirected to HTTPS, the dashboard off, access logs on (`ingress` in the lab file).
# Its LoadBalancer Service gets its address from MetalLB.

# %%
traefik_plan = charts.plan(api, [net.traefik_config(lab)])
report.plan(traefik_plan)

# %%
report.applied(charts.apply(api, traefik_plan, timeout=chart_timeout_s, dry_run=dry_run, step=report.step))

# %% [markdown]
# ## Verify by using it
#
# A claim on the NFS class binds; a pod on one node writes a file, a pod on another node reads it; the
# NAS, asked over SSH, shows the volume's folder holding that file.

# %%
with report.step("volume probe", lab.nfs.storage_class):
    volume = storage.probe_volume(api, lab, timeout=probe_timeout_s, dry_run=dry_run)
nas = storage.nas_view(session, lab, volume)
report.verify(volume.checks() + storage.nas_checks(nas, volume))
storage.volumes(api)

# %% [markdown]
# A web server behind a LoadBalancer Service gets an address from the pool and answers HTTP from this
# machine. Then the test site `whoami.<domain>`: a Certificate from the ingress issuer becomes Ready,
# and `https://whoami.<domain>` on Traefik's MetalLB address serves exactly that certificate, verified
# against the issuer's CA with the host name in SNI; plain HTTP is redirected to HTTPS.

# %%
with report.step("LoadBalancer probe", "metallb"):
    lb = net.probe_loadbalancer(api, lab, timeout=probe_timeout_s, dry_run=dry_run)
with report.step("TLS probe", f"whoami.{lab.ingress.domain}"):
    site = net.probe_site(api, lab, redirect=lab.ingress.redirect_https, timeout=probe_timeout_s, dry_run=dry_run)
report.verify(lb.checks() + site.checks())

# %%
report.verify([charts.verified(api, [*wanted.values(), net.traefik_config(lab)])])

# %%
plots.pool_usage(net.pool_usage(api, lab))

# %%
plots.storage(storage.volumes(api), nas.usage(), title=f"Storage: volumes and the NAS export {lab.nfs.path}")

# %%
plots.certificate_expiry(certs.certificates(api))

# %% [markdown]
# ## Clean up
#
# The test objects go with their namespace (the probe's volume folder is archived or deleted on the
# NAS as `nfs.archive_on_delete` says), unless `keep_probes=True`.

# %%
infra.remove_probes(api, keep=keep_probes, dry_run=dry_run)

# %%
report.inventory("charts", charts.table(wanted.values()), columns=["version", "namespace"])
report.checks_table()

# %%
plots.timeline(report.timings(), title="Core infrastructure timeline")

# %%
record(report, storage_class=lab.nfs.storage_class, pool=lab.metallb.addresses, domain=lab.ingress.domain,
       dry_run=dry_run)
