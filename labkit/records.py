"""What an executed notebook carries for the runner: the labkit record (``Report``'s results) and the
changes as they were made, each a display output of a MIME type of its own. Apart from labkit.report
(which the notebooks use, with pandas and IPython) so that the runner reads them without those."""

from __future__ import annotations

import json

RECORD_MIME = "application/vnd.labkit.record+json"
APPLIED_MIME = "application/vnd.labkit.applied+json"  # changes, output as they are made


def records_in(notebook: dict) -> list[dict]:
    """The labkit records an executed notebook (as a JSON dict) carries, in order."""
    return _outputs_of(notebook, RECORD_MIME)


def applied_in(notebook: dict) -> list[dict]:
    """The changes an executed notebook made, as ``Report.applied`` output them (a failed
    notebook's too, up to where it stopped)."""
    return [change for batch in _outputs_of(notebook, APPLIED_MIME) for change in batch]


def _outputs_of(notebook: dict, mime: str) -> list:
    found = []
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) or []:
            data = output.get("data", {}).get(mime)
            if data is not None:
                found.append(json.loads(data) if isinstance(data, str) else data)
    return found
