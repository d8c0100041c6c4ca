"""labkit: the operator's toolkit behind the homelab-notebooks series."""

__version__ = "0.1.0"
