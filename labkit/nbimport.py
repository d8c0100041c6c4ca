"""``nbformat``, imported without jsonschema's IRI parser.

jsonschema, under nbformat and papermill, imports ``rfc3987_syntax`` when it is installed
(JupyterLab's dependencies bring it), and that module builds a parser at import: 2.5 s (6 s on a
loaded machine) of every ``labkit run``, for IRI format checks that notebook schemas never make.
Marked absent, jsonschema leaves those two formats unchecked. Import nbformat from here.
"""

import sys

sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[assignment]

import nbformat  # noqa: E402

__all__ = ["nbformat"]
