"""The ``Emitter`` seam and the in-process emitters: fan-out and memory.

Everything that audits holds an :class:`Emitter` (passed explicitly, never a global) and calls
``await emitter.emit(make_event(...))``. In a running cluster that emitter is auth's
:class:`~limen.events.FileLog`, or :class:`~limen.events.PostgresLog` on a PostgreSQL backend
(``limen.events.factory``); agents apart from auth reach it through their outbox and
``POST /v1/events``. :class:`MemoryEmitter` keeps events for readers in the same process
(``subscribe()`` / ``wait_for()``: the tests today, a live activity feed later) and
:class:`MultiEmitter` fans one event out to several emitters; no daemon wires them yet."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Protocol, runtime_checkable

from limen.events.event import AuditEvent

__all__ = ["Emitter", "MemoryEmitter", "MultiEmitter", "Subscription", "emit_all"]


@runtime_checkable
class Emitter(Protocol):
    """Anything that records audit events. ``emit`` returns once the event is recorded."""

    async def emit(self, event: AuditEvent) -> None: ...


async def emit_all(emitter: Emitter, events: Sequence[AuditEvent]) -> None:
    """Record ``events`` in order: in one ``emit_many`` (one write and one fsync or commit for
    the lot) when ``emitter`` has it (FileLog, PostgresLog, an agent's outbox), else one by
    one. Called wherever several events are recorded at once."""
    emit_many = getattr(emitter, "emit_many", None)
    if emit_many is not None and len(events) > 1:
        await emit_many(events)
        return
    for event in events:
        await emitter.emit(event)


class MultiEmitter:
    """Fan-out: emit every event to all ``emitters`` concurrently.

    Every emitter gets the event even when another fails; then the failure is raised (one
    error as itself, several as an ``ExceptionGroup``), so a broken sink is never silent.
    """

    def __init__(self, *emitters: Emitter) -> None:
        self.emitters: tuple[Emitter, ...] = emitters

    async def emit(self, event: AuditEvent) -> None:
        results = await asyncio.gather(
            *(emitter.emit(event) for emitter in self.emitters), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise BaseExceptionGroup("audit emitters failed", errors)


class Subscription:
    """A live feed of events from a :class:`MemoryEmitter` (async iterator; ``with`` to end).

    Events arriving while the buffer (``maxsize``) is full are dropped and counted in
    ``dropped``: a slow subscriber never blocks the code that audits.
    """

    def __init__(self, owner: MemoryEmitter, maxsize: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[AuditEvent] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _offer(self, event: AuditEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def get(self) -> AuditEvent:
        return await self._queue.get()

    def close(self) -> None:
        self._owner._subscribers.discard(self)

    def __aiter__(self) -> AsyncIterator[AuditEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AuditEvent]:
        while True:
            yield await self._queue.get()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MemoryEmitter:
    """Keeps events in memory (the last ``maxlen``, or all) and feeds live subscribers.

    Use from one event loop. In tests, ``await memory.wait_for(lambda e: ..., timeout=5)``
    waits on a condition with a deadline instead of sleeping.
    """

    def __init__(self, maxlen: int | None = None) -> None:
        self._events: deque[AuditEvent] = deque(maxlen=maxlen)
        self._subscribers: set[Subscription] = set()

    @property
    def events(self) -> list[AuditEvent]:
        return list(self._events)

    def clear(self) -> None:
        self._events.clear()

    async def emit(self, event: AuditEvent) -> None:
        self._events.append(event)
        for subscription in list(self._subscribers):
            subscription._offer(event)

    def subscribe(self, maxsize: int = 1024) -> Subscription:
        """A feed of the events emitted from now on."""
        subscription = Subscription(self, maxsize)
        self._subscribers.add(subscription)
        return subscription

    async def wait_for(
        self,
        predicate: Callable[[AuditEvent], bool],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline is the point of this test helper
    ) -> AuditEvent:
        """The first stored or future event matching ``predicate``; ``TimeoutError`` after
        ``timeout`` seconds."""
        for event in self._events:
            if predicate(event):
                return event
        with self.subscribe(maxsize=0) as feed:  # unbounded: a waiter must not miss events
            async with asyncio.timeout(timeout):
                while True:
                    event = await feed.get()
                    if predicate(event):
                        return event
