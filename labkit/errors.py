"""The errors labkit raises. Each message says what went wrong and what to do about it."""


class LabError(Exception):
    """Base of every error labkit raises on purpose."""


class ParamsError(LabError):
    """The lab file is invalid; nothing was touched."""

    def __init__(self, errors: list[str], source: str = "lab file"):
        self.errors = errors
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  {e}" for e in errors))


class SecretError(LabError):
    """A secret reference could not be resolved. Names the reference, never a value."""


class ProxmoxError(LabError):
    """The Proxmox VE API refused a request or a task failed."""


class SshError(LabError):
    """An SSH connection or a remote command failed."""


class K3sError(LabError):
    """k3s could not be installed, joined or checked."""


class KubeError(LabError):
    """The Kubernetes API refused a request or a wait timed out."""


class ChecksFailed(LabError):
    """A notebook's verification checks did not all pass."""


class Terminated(KeyboardInterrupt):
    """SIGTERM during ``labkit run``, raised as Ctrl-C is, so that the run cleans up the same way."""
