"""Setup that needs the running IPython shell: the display formatters of labkit's tables and figures.

A module hands its setup to ``when_shell``: inside a kernel it runs at once; imported where no shell
runs yet (the kernel fork server imports labkit before it forks kernels, ``labkit.kernelfork``), it
runs in each kernel as its shell starts (``started``). In plain Python it never runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_waiting: list[Callable[[Any], None]] = []


def when_shell(setup: Callable[[Any], None]) -> None:
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        _waiting.append(setup)
    else:
        setup(shell)


def started(shell: Any) -> None:
    for setup in _waiting:
        setup(shell)
