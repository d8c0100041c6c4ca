"""The container runtime of the embedded lab's kubelets: what runs inside a pod.

``runtime`` (ContainerRuntime: what the kubelet asks; exec and attach), ``filesystem`` (container
folders from the image model + volumes), ``images`` (the image model), ``processes`` (a plain
container's command run by the node shell model), ``tar`` (the ``tar`` kubectl cp runs).

Image -> runner:

| image | runner |
|---|---|
| busybox, alpine, curlimages/curl, ubuntu, debian, any other | a *plain container*: its command runs in the node shell model over the container's files; with no command, its entrypoint is modelled as running |

Real programs (PostgreSQL, Prometheus, nginx, Traefik) and app models are not wired yet.
"""

# The node shell's programs (coreutils, sh, ...) and tar: what a plain container runs.
from labsim.node import coreutils, system, textutils  # noqa: F401
from labsim.runtime import tar  # noqa: F401
