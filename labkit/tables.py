"""How notebooks show pandas tables: without pandas' meaningless 0..n row numbers, long ones collapsed.

Installed into the kernel's HTML formatter when ``labkit.report`` is imported (every notebook does),
so JupyterLab and the rendered pages show the same tables; the text form is left as pandas makes it.
"""

from __future__ import annotations

from html import escape

import pandas as pd

LONG = 15  # rows: a longer table starts collapsed


def table_html(frame: pd.DataFrame) -> str:
    numbered = isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.name is None
    html = frame.to_html(index=not numbered, border=0, max_rows=pd.get_option("display.max_rows"))
    if len(frame) <= LONG:
        return html
    label = escape(f"{len(frame)} rows × {len(frame.columns)} columns")
    return f"<details><summary>{label}</summary>{html}</details>"


def install() -> None:
    """Use ``table_html`` for DataFrames in the running IPython kernel, if any."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, table_html)
