"""One background event loop for labkit's asyncio work (asyncssh), callable from sync code.

Notebook cells run inside ipykernel, whose own loop is already running, so ``asyncio.run`` is not
available there. labkit therefore runs its coroutines on a loop of its own, in a daemon thread,
and waits for them from the caller's thread. Connections opened on that loop stay usable across
cells, because every later call runs on the same loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def loop() -> asyncio.AbstractEventLoop:
    """labkit's loop, started on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="labkit-loop", daemon=True).start()
        return _loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on labkit's loop and return its result (exceptions propagate)."""
    if _on_labkit_loop():
        coro.close()
        raise RuntimeError("labkit.eventloop.run called from labkit's own loop; await the coroutine instead")
    return asyncio.run_coroutine_threadsafe(coro, loop()).result()


def _on_labkit_loop() -> bool:
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False
