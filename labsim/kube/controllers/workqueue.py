"""The reconcile loop every controller runs, in the manner of controller-runtime.

Store events are mapped to keys; a key waiting in the queue is reconciled once however many
events queued it, so a burst of writes costs one pass. A controller is idle (no CPU) until an
event arrives or one of its timers falls due. Two kinds of timers: *modelled durations* (an image
pull, a job's run time) go through ``clock.sleep`` and so follow the lab's time scale; *lab-time
deadlines* (a cron schedule, a toleration running out) fall due when ``clock.now()`` reaches them,
which ``clock.advance()`` hastens.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from labsim.kube.resources import Resource
from labsim.kube.store import StoreError

log = logging.getLogger("labsim.kube.controllers")

Key = Hashable
# (event type, object) -> keys to reconcile. The object is the store's own: read it, never change it.
Mapper = Callable[[str, dict], Iterable[Key]]
# Lab-time deadlines are checked at least this often (real seconds), so clock.advance() is seen.
_DEADLINE_POLL = 0.2
_RETRY_DELAY = 0.5  # real seconds, doubled per consecutive failure of a key
_RETRY_MAX = 30.0


class KeyQueue:
    """A set-like FIFO of keys: adding a key already waiting is a no-op."""

    def __init__(self) -> None:
        self._keys: dict[Key, None] = {}
        self._ready = asyncio.Event()

    def add(self, key: Key) -> None:
        self._keys[key] = None
        self._ready.set()

    async def get(self) -> Key:
        while not self._keys:
            self._ready.clear()
            await self._ready.wait()
        key = next(iter(self._keys))
        del self._keys[key]
        return key


class Controller:
    """Base of every controller: subclasses say what they watch and how to reconcile a key."""

    name = "controller"

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.clock = cluster.clock
        self.queue = KeyQueue()
        self._delays: dict[tuple, asyncio.Task | bool] = {}
        self._deadlines: list[tuple[float, int, Key]] = []
        self._next_deadline: dict[Key, float] = {}
        self._failures: dict[Key, int] = {}
        self._deadline_added = asyncio.Event()
        self._seq = itertools.count()
        self._tasks: list[asyncio.Task] = []

    # -- what subclasses provide ---------------------------------------------------------
    def watches(self) -> list[tuple[Resource | None, Mapper]]:
        """What to subscribe to (None: every resource) and how its events map to keys."""
        raise NotImplementedError

    async def reconcile(self, key: Key) -> None:
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------
    def res(self, api_version: str, kind: str) -> Resource:
        return self.store.resource(api_version, kind)

    def after(self, token: tuple, key: Key, modelled_seconds: float, what: str = "") -> bool:
        """True once a modelled duration named ``token`` has passed; the first call starts it
        and ``key`` is requeued when it ends. ``what`` names it in the clock's ledger."""
        state = self._delays.get(token)
        if state is True:
            return True
        if state is None:
            self._delays[token] = asyncio.create_task(self._delay(token, key, modelled_seconds, what))
        return False

    def forget(self, prefix: tuple) -> None:
        """Drop the modelled durations whose token (a tuple) starts with ``prefix``."""
        for token in [t for t in self._delays if t[:len(prefix)] == prefix]:
            state = self._delays.pop(token)
            if isinstance(state, asyncio.Task):
                state.cancel()

    def at(self, lab_time: float, key: Key) -> None:
        """Requeue ``key`` when the lab clock reaches ``lab_time`` (the earliest such time counts)."""
        if self._next_deadline.get(key, float("inf")) <= lab_time:
            return
        self._next_deadline[key] = lab_time
        heapq.heappush(self._deadlines, (lab_time, next(self._seq), key))
        self._deadline_added.set()

    async def _delay(self, token: tuple, key: Key, seconds: float, what: str) -> None:
        await self.clock.sleep(seconds, what)
        self._delays[token] = True
        self.queue.add(key)

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        watches = self.watches()
        subscriptions = [(self.store.subscribe(res), mapper) for res, mapper in watches]
        try:
            self._tasks = [asyncio.create_task(self._feed(sub, mapper)) for sub, mapper in subscriptions]
            self._tasks.append(asyncio.create_task(self._deadline_loop()))
            for res, mapper in watches:  # the initial sync: everything already stored
                objects = self.store.list(res) if res else [obj for _, obj in self.store.all_objects()]
                for obj in objects:
                    self._enqueue(mapper, "ADDED", obj)
            await self._work()
        finally:
            for task in self._tasks + [t for t in self._delays.values() if isinstance(t, asyncio.Task)]:
                task.cancel()
            for sub, _ in subscriptions:
                sub.close()

    async def _feed(self, subscription, mapper: Mapper) -> None:
        # Events as the store published them, not copies: mappers only read (a copy per event
        # and controller was most of the lab's CPU with a few hundred pods).
        while (event := await subscription.next_event()) is not None:
            self._enqueue(mapper, event.type, event.object)

    def _enqueue(self, mapper: Mapper, event_type: str, obj: dict) -> None:
        try:
            keys = list(mapper(event_type, obj))
        except Exception:  # one odd object must not end this controller's watch
            log.exception("%s: mapping %s event failed", self.name, event_type)
            return
        for key in keys:
            self.queue.add(key)

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.reconcile(key)
                self._failures.pop(key, None)
            except StoreError as err:
                # A conflict or a vanished object: the next pass sees fresh state.
                log.debug("%s: %s: %s", self.name, key, err)
                self._retry(key)
            except Exception:
                log.exception("%s: reconciling %s failed", self.name, key)
                self._retry(key)
            await asyncio.sleep(0)  # let the API server and the other controllers run

    def _retry(self, key: Key) -> None:
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = min(_RETRY_DELAY * 2 ** (failures - 1), _RETRY_MAX)
        asyncio.get_running_loop().call_later(delay, self.queue.add, key)

    async def _deadline_loop(self) -> None:
        while True:
            if not self._deadlines:
                self._deadline_added.clear()
                await self._deadline_added.wait()
            now = self.clock.now()
            while self._deadlines and self._deadlines[0][0] <= now:
                when, _, key = heapq.heappop(self._deadlines)
                if self._next_deadline.get(key) == when:
                    del self._next_deadline[key]
                    self.queue.add(key)
            if self._deadlines:
                wait = min(self._deadlines[0][0] - now, _DEADLINE_POLL)
                self._deadline_added.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._deadline_added.wait(), max(wait, 0.0))


def by_name(event_type: str, obj: dict) -> list[Key]:
    """The usual mapping: an object's own (namespace, name)."""
    meta = obj["metadata"]
    return [(meta.get("namespace"), meta["name"])]


def by_controller(kind: str) -> Mapper:
    """Map an object to its controlling owner of ``kind`` (a pod to its ReplicaSet...)."""

    def mapper(event_type: str, obj: dict) -> list[Key]:
        meta = obj["metadata"]
        return [(meta.get("namespace"), ref["name"]) for ref in meta.get("ownerReferences") or ()
                if ref.get("controller") and ref.get("kind") == kind]

    return mapper
