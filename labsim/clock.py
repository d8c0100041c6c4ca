"""Lab time: wall time plus an offset, with modelled durations scaled by ``time_scale``.

Every component takes time from one Clock so that a test can run the lab instantly
(``time_scale`` 0) and still move lab time forward (``advance``) to expire things.
"""

from __future__ import annotations

import asyncio
import time

from labsim.operations import Ledger, Operation


class Clock:
    def __init__(self, time_scale: float, offset: float = 0.0) -> None:
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        self.time_scale = time_scale
        self.offset = offset
        self._advanced_total = 0.0
        self._advanced = asyncio.Event()
        self.ledger = Ledger()  # the named waits (operations) that ended; a Lab gives it a file

    def now(self) -> float:
        """Lab time in epoch seconds."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move lab time forward; sleepers count the jump as modelled time already passed.
        Call it on the lab's event loop (from another thread: ``loop.call_soon_threadsafe``)."""
        if seconds < 0:
            raise ValueError("lab time only moves forward")
        self.offset += seconds
        self._advanced_total += seconds
        woken, self._advanced = self._advanced, asyncio.Event()
        woken.set()

    async def sleep(self, modelled_seconds: float, what: str = "") -> None:
        """Sleep ``modelled_seconds`` of lab activity: that times ``time_scale`` in real seconds.
        ``what`` names an operation something waits for (a clone, a pod's start): once the wait
        ends it is recorded in the ledger; a periodic wait (a poll, a probe's period) stays unnamed."""
        start = time.time()
        await self._sleep(modelled_seconds)
        if what:
            self.ledger.record(Operation(what, float(modelled_seconds), start, time.time()))

    async def _sleep(self, modelled_seconds: float) -> None:
        if self.time_scale == 0 or modelled_seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        start, skipped_before = loop.time(), self._advanced_total
        while True:
            remaining = modelled_seconds - (self._advanced_total - skipped_before)
            real_left = start + remaining * self.time_scale - loop.time()
            if real_left <= 0:
                return
            try:
                await asyncio.wait_for(self._advanced.wait(), real_left)
            except TimeoutError:
                return
