"""How `make test` splits the suite over its two workers (pytest-xdist, ``--dist loadgroup``): the
tests on the session's series lab (tests/labkit/series.py) form one group, run in file order on one
worker (later notebooks stand on earlier ones, and the lab is built once); every other file is a
group of its own, so that its module-scoped labs are built once too."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        defs = getattr(item, "_fixtureinfo", None) and item._fixtureinfo.name2fixturedefs.get("series")
        on_series = bool(defs) and defs[-1].scope == "session"
        item.add_marker(pytest.mark.xdist_group("series" if on_series else str(item.path)))
