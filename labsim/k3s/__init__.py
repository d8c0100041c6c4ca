"""k3s on the simulated nodes: the installer, the k3s/k3s-agent units, the `k3s` binary
(version, kubectl, etcd-snapshot, cluster-reset), crictl, the uninstall scripts and what a server
deploys by itself. Importing the package registers its commands with the node's shell."""

from labsim.k3s import cli, crictl, curl, installer, service, uninstall

__all__ = ["cli", "crictl", "curl", "installer", "service", "uninstall"]
