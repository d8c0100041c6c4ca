"""The lab file: pydantic models, validated before anything touches a machine.

``load_lab(path)`` returns a ``Lab`` or raises ``ParamsError`` whose lines name the YAML path and
the fix, e.g. ``nodes[1].ip: '192.168.2.300' is not an IPv4 address``. Unknown keys are errors,
secrets are references only (``labkit.secrets``), relative paths resolve against the file's folder.

One module per part of the file, in the order of the notebooks that use it: ``fields`` (field
types), ``cluster`` (01-02), ``infra`` (03), ``observability`` (04), ``postgres`` (05, 07),
``apps`` (06), ``lab`` (the whole file), ``load`` (reading and error messages), ``rules``
(cross-field rules, files and variables).
"""

from labkit.params.apps import App, Apps
from labkit.params.cluster import Node
from labkit.params.fields import excerpt
from labkit.params.infra import Issuer
from labkit.params.lab import Lab
from labkit.params.load import load_lab
from labkit.params.observability import Observability, duration_seconds
from labkit.params.postgres import Backup, Postgres
from labkit.params.rules import missing_files, unset_variables

__all__ = ["App", "Apps", "Backup", "Issuer", "Lab", "Node", "Observability", "Postgres", "duration_seconds",
           "excerpt", "load_lab", "missing_files", "unset_variables"]
