"""``MemoryBackend``: the ``Backend`` protocol kept in process memory, for unit tests.

Created by ``limen.backend.factory.open_backend(None, kind="memory")`` (or directly) in tests
of ``limen.services`` and above. Nothing is persisted.

Concurrency: safe for any number of tasks on ONE event loop (every operation runs without
awaiting in between, so it is atomic with respect to other tasks); not thread-safe.

Watchers read a shared, bounded event history (one entry per revision) with their own cursor,
and sleep on an ``asyncio.Event`` that every write sets and replaces. Expired items are
invisible to reads, swept before every successful write and by a periodic task (every
``sweep_interval`` seconds while the loop runs), and each sweep is one revision of DELETE
events.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from limen.aio.changed import Changed
from limen.aio.tasks import cancel_and_wait
from limen.backend._common import (
    DEFAULT_HISTORY_MIN_AGE,
    DEFAULT_HISTORY_MIN_EVENTS,
    DEFAULT_SWEEP_INTERVAL,
    Check,
    cas_checks,
    closed_error,
    compacted_error,
    create_checks,
    delete_checks,
    evaluate,
    validate_after,
    validate_atomic,
    validate_key,
    validate_put,
)
from limen.backend.base import Condition, Delete, Event, EventType, Item, Put

__all__ = ["MemoryBackend"]


@dataclass(frozen=True)
class _Revision:
    """The events written under one revision, in op order."""

    revision: int
    created: float
    events: tuple[Event, ...]


class MemoryBackend:
    """In-memory ``Backend``. ``clock`` returns UNIX time and decides expiry and history age."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sweep_interval: float | None = DEFAULT_SWEEP_INTERVAL,
        history_min_events: int = DEFAULT_HISTORY_MIN_EVENTS,
        history_min_age: float = DEFAULT_HISTORY_MIN_AGE,
    ) -> None:
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._history_min_events = history_min_events
        self._history_min_age = history_min_age
        self._items: dict[str, Item] = {}
        self._revision = 0
        self._compacted = 0
        self._history: builtins.list[_Revision] = []
        self._history_events = 0
        self._changed = Changed()
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None

    # -- reads ---------------------------------------------------------------------------

    async def get(self, key: str) -> Item | None:
        self._enter()
        item = self._items.get(validate_key(key))
        return item if item is not None and self._live(item, self._clock()) else None

    async def list(self, prefix: str) -> list[Item]:
        self._enter()
        now = self._clock()
        return sorted(
            (i for k, i in self._items.items() if k.startswith(prefix) and self._live(i, now)),
            key=lambda i: i.key,
        )

    async def current_revision(self) -> int:
        self._enter()
        return self._revision

    # -- writes --------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, expires: float | None = None) -> Item:
        op = validate_put(key, value, expires)
        return self._item(op, self._write([], [op]))

    async def create(self, key: str, value: bytes, *, expires: float | None = None) -> Item:
        op = validate_put(key, value, expires)
        return self._item(op, self._write(create_checks(op.key), [op]))

    async def compare_and_swap(
        self, key: str, expected_revision: int, value: bytes, *, expires: float | None = None
    ) -> Item:
        op = validate_put(key, value, expires)
        return self._item(op, self._write(cas_checks(op.key, expected_revision), [op]))

    async def delete(self, key: str, *, expected_revision: int | None = None) -> None:
        key = validate_key(key)
        self._write(delete_checks(key, expected_revision), [Delete(key)])

    async def atomic(
        self, conditions: Sequence[Condition], ops: Sequence[Put | Delete]
    ) -> int:
        checks, clean = validate_atomic(conditions, ops)
        return self._write(checks, clean)

    async def sweep(self) -> int:
        """Delete every expired item now (one revision of DELETE events); returns how many."""
        self._enter()
        return self._sweep(self._clock())

    async def compact(self) -> int:
        """Apply the history retention rule now (it also runs after every write); returns the
        compacted revision (watching ``after`` a revision below it raises ``BadParameter``)."""
        self._enter()
        self._compact(self._clock())
        return self._compacted

    # -- watch ---------------------------------------------------------------------------

    def watch(self, prefix: str, *, after: int | None = None) -> AsyncIterator[Event]:
        """Events under ``prefix`` after ``after`` (None: from this call on). The iterator ends
        when the backend closes; ``BadParameter`` if ``after`` has been compacted."""
        if self._closed:
            raise closed_error()
        start = validate_after(after)
        return self._follow(prefix, self._revision if start is None else start)

    async def _follow(self, prefix: str, cursor: int) -> AsyncIterator[Event]:
        while not self._closed:
            changed = self._changed.event
            if cursor < self._compacted:
                raise compacted_error(cursor)
            first = bisect.bisect_right(self._history, cursor, key=lambda r: r.revision)
            pending = self._history[first:]
            for rev in pending:
                for event in rev.events:
                    if event.key.startswith(prefix):
                        yield event
                cursor = rev.revision
            if not pending:
                await changed.wait()

    # -- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the sweeper and end every watcher; later calls raise ``ConnectionProblem``."""
        if self._closed:
            return
        self._closed = True
        self._changed.notify()
        await cancel_and_wait(self._sweeper)

    # -- internals -----------------------------------------------------------------------

    def _enter(self) -> None:
        if self._closed:
            raise closed_error()
        if self._sweeper is None and self._sweep_interval is not None:
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_forever(self._sweep_interval), name="limen-memory-backend-sweep"
            )

    async def _sweep_forever(self, interval: float) -> None:
        while not self._closed:
            await asyncio.sleep(interval)
            if not self._closed:
                self._sweep(self._clock())

    @staticmethod
    def _live(item: Item, now: float) -> bool:
        return item.expires is None or item.expires > now

    @staticmethod
    def _item(op: Put, revision: int) -> Item:
        return Item(op.key, op.value, revision, op.expires)

    def _write(self, checks: Sequence[Check], ops: Sequence[Put | Delete]) -> int:
        self._enter()
        now = self._clock()
        evaluate(checks, lambda key: self._current(key, now))
        if not ops:
            return self._revision
        self._sweep(now)
        revision = self._revision + 1
        events: builtins.list[Event] = []
        for op in ops:
            if isinstance(op, Put):
                self._items[op.key] = Item(op.key, op.value, revision, op.expires)
                events.append(Event(EventType.PUT, op.key, revision, op.value))
            elif self._items.pop(op.key, None) is not None:
                events.append(Event(EventType.DELETE, op.key, revision))
        self._commit(revision, now, events)
        return revision

    def _current(self, key: str, now: float) -> int | None:
        item = self._items.get(key)
        return item.revision if item is not None and self._live(item, now) else None

    def _sweep(self, now: float) -> int:
        expired = sorted(k for k, i in self._items.items() if not self._live(i, now))
        if not expired:
            return 0
        revision = self._revision + 1
        for key in expired:
            del self._items[key]
        self._commit(revision, now, [Event(EventType.DELETE, k, revision) for k in expired])
        return len(expired)

    def _commit(self, revision: int, now: float, events: builtins.list[Event]) -> None:
        self._revision = revision
        if events:
            self._history.append(_Revision(revision, now, tuple(events)))
            self._history_events += len(events)
            self._compact(now)
        self._changed.notify()

    def _compact(self, now: float) -> None:
        """Drop whole revisions that are neither among the newest ``history_min_events`` events
        nor younger than ``history_min_age`` seconds."""
        drop = 0
        remaining = self._history_events
        for rev in self._history:
            if remaining - len(rev.events) < self._history_min_events:
                break
            if rev.created > now - self._history_min_age:
                break
            remaining -= len(rev.events)
            drop += 1
        if drop:
            self._compacted = max(self._compacted, self._history[drop - 1].revision)
            del self._history[:drop]
            self._history_events = remaining
