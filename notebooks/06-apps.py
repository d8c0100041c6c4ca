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
# # 06 · Apps: Ollama, n8n and the nginx dev proxy
#
# The lab's workloads: **Ollama** for LLM inference at `https://ollama.<domain>`, **n8n** for
# workflow automation at `https://n8n.<domain>` (its data in 05's PostgreSQL), and an **nginx**
# development reverse proxy at `https://nginx.<domain>`. The original lab ran them from `:latest`
# images without resource limits and saw OOM kills; here images and charts are pinned, every
# container has requests and limits, and each app is proved with the client its users use: the
# official `ollama` Python client, n8n's public REST API, plain HTTPS through the proxy.
#
# **Prerequisites.** 03 (Traefik, MetalLB, cert-manager with the lab's issuers, the NFS storage
# class) and 05 (PostgreSQL) have run.
#
# **What it changes.** In the namespace of `apps.namespace`: n8n's Secrets (database password,
# encryption key, API key: generated once or from references, never rotated), n8n's role and
# database in PostgreSQL, the `ollama` and `n8n` HelmCharts, a Certificate and an Ingress per app,
# and the proxy (ConfigMap rendered from `apps.nginx.upstreams`, Deployment, Service). It pulls the
# configured Ollama models and creates one workflow, `labkit canary`, in n8n (once, by name).
# With `dry_run=True` it shows the plan only.

# %% tags=["parameters"]
lab_file = "../parameters/sim.yaml"  # the lab (labkit run passes the lab file it runs)
dry_run = False                      # True: plan only
timeout_s = 600                      # for each chart's helm Job and rollout, and each certificate

# %%
from labkit import apps, kube, params, plots
from labkit.report import Report, record

report = Report("06-apps", dry_run=dry_run)
lab = params.load_lab(lab_file)
api = kube.connect(lab.kubeconfig)
enabled = apps.settings(lab).enabled()
print(f"lab '{lab.name}': " + "; ".join(f"{name} {app.image} at https://{app.host}" for name, app in enabled.items()))

# %% [markdown]
# ## Plan
#
# First n8n's Secrets and its role and database in PostgreSQL (read as the superuser whose
# password 05 keeps in its Secret), then the two charts (a values change shows as an upgrade with
# its diff), then labkit's own objects: a Certificate and an Ingress per app and the proxy. The
# proxy's ConfigMap is named after its content, so a changed upstream is a new ConfigMap and a
# rolling update of the proxy.

# %%
planned = apps.plan(api, lab)
report.plan(planned.changes())

# %% [markdown]
# ## Apply
#
# The charts are installed in turn (each one's k3s helm Job to its end), then roll out side by side:
# both Deployments are rolled out (n8n's readiness waits for its database) before labkit's own
# objects go in. The proxy's new pod must be ready before its old ConfigMap is pruned: if
# nginx refuses the new config, the rollout stops here with nginx's own error line and the proxy
# keeps serving the config it had.

# %%
report.applied(apps.apply(api, lab, planned, dry_run=dry_run, timeout=timeout_s, step=report.step))

# %% [markdown]
# ## HTTPS for every app
#
# For each app: its certificate Ready (if it is not, the ACME Challenge's reason), then a TLS
# connection to Traefik's load-balancer address with the app's name in SNI, verified against the
# issuer's CA, the certificate's names, issuer and expiry, and plain HTTP redirected to HTTPS.

# %%
sites = apps.probe_sites(api, lab, timeout=timeout_s, dry_run=dry_run)
apps.sites_table(sites)

# %% [markdown]
# ## Ollama: pull, then generate with the official client
#
# The `ollama` client talks to `https://ollama.<domain>` through Traefik. Each configured model is
# pulled (progress per layer; an unknown model stops with Ollama's own error), then the benchmark
# prompt runs `repetitions` times per model, not streamed, and once more as a streamed chat.
# Tokens per second are Ollama's own `eval_count / eval_duration`; latency is what the client waited.
# On the embedded lab the Ollama model paces its answers on the lab's clock: tokens per second are its
# modelled speed (as a real node would report them), latency is real seconds at the lab's time scale.

# %%
ollama = apps.verify_ollama(api, lab, dry_run=dry_run)
ollama.models

# %%
ollama.summary

# %%
plots.ollama_benchmark(ollama.summary, title="Ollama: tokens per second and latency per model")

# %% [markdown]
# ## n8n: ready on its database, its tables in PostgreSQL, a workflow through its API
#
# n8n is ready only once its database answers. Its tables are read from PostgreSQL as n8n's own
# user (what n8n made when it started), and the workflow `labkit canary` is created through the
# public API (`/api/v1/workflows`, with the API key from its Secret) unless it exists, then listed.

# %%
n8n = apps.verify_n8n(api, lab, dry_run=dry_run)
n8n.tables

# %%
n8n.workflows

# %% [markdown]
# ## nginx: each upstream through the proxy
#
# `https://nginx.<domain>/<name>/` for each upstream of the lab file: an answer below 500 means the
# proxy reached it (502/504: it did not). The results are in the table of checks below.

# %%
proxied = apps.verify_nginx(api, lab, dry_run=dry_run)

# %% [markdown]
# ## Requests and limits against usage
#
# What each app container asked for and is bounded by, against what it uses (the metrics API,
# `metrics.k8s.io`, as `kubectl top pod` shows it).

# %%
usage = apps.usage(api, lab, dry_run=dry_run)
usage

# %%
plots.app_resources(usage, title="Requests, limits and usage per app")

# %% [markdown]
# ## Every app, every check

# %%
checks = apps.all_checks(sites, ollama, n8n, proxied, usage)
for found in checks.values():
    report.verify(found)
apps.checks_table(lab, checks)

# %%
report.checks_table()

# %%
report.inventory("apps", {name: {"image": app.image, "host": app.host} for name, app in enabled.items()})
plots.timeline(report.timings(), title="Apps deployment timeline")

# %%
record(report, apps=list(enabled), dry_run=dry_run)
