"""How a notebook shows a table: no meaningless 0..n index, text left-aligned, long tables folded.

``install(shell)`` registers this rendering with IPython for every pandas DataFrame a cell shows, so
labkit's functions keep returning plain DataFrames (which tests and code index as usual) and the
cells stay a bare expression.
"""

from __future__ import annotations

import html

import pandas as pd

FOLD_AFTER = 12  # rows; a longer table is shown folded, its size in the summary line


def to_html(frame: pd.DataFrame) -> str:
    styler = frame.style.format(precision=2, na_rep="")
    if isinstance(frame.index, pd.RangeIndex):
        styler = styler.hide(axis="index")
    text = [c for c in frame.columns if frame[c].dtype == object]
    styler = styler.set_properties(subset=text, **{"text-align": "left"})
    styler = styler.set_table_styles([{"selector": "th", "props": [("text-align", "left")]}])
    body = styler.to_html()
    if len(frame) <= FOLD_AFTER:
        return body
    columns = html.escape(", ".join(map(str, frame.columns)))
    return f"<details><summary>{len(frame)} rows ({columns})</summary>{body}</details>"


def install(shell) -> None:
    """Render DataFrames this way in ``shell`` (see ``labkit.display.when_shell``)."""
    shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, to_html)
