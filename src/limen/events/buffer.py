"""``AuditBuffer``: audit events of a busy path accepted without waiting for the disk, written
in order and in batches by the log underneath; the few that must be durable still awaited.

Used by the db agent (:mod:`limen.agents.db`) for ``db.session.query``: a query is forwarded
as soon as its event is in the buffer, not once it is on disk. Wraps any
:class:`~limen.events.Emitter` (:class:`~limen.events.FileLog`,
:class:`~limen.events.PostgresLog`, an agent's :class:`~limen.agents.audit_outbox.AuditOutbox`,
a :class:`~limen.events.MemoryEmitter`); one with ``emit_many`` gets each batch in one call
(one hand-off to its writer thread and one fsync or commit per batch). A batch takes what
comes within ``linger`` (10 ms) of its first event, or goes at once when full or when a
durable event is in it::

    session A ── stream.record(q1) ─┐                          ┌─▶ emit_many([q1, q2, s3])
    session B ── stream.record(q2) ─┼─▶ ordered bounded queue ─┤   one batch at a time,
    session A ── stream.emit(end)  ─┘   (capacity events)      └─▶ then the next batch
                 └ returns once ``end`` and everything queued before it are written

The promise:

* **Order.** Events are written in the order they were queued, across all streams.
* **Durable when it matters.** :meth:`AuditStream.emit` (and :meth:`AuditBuffer.emit`)
  returns once its event is written as the log writes (fsynced by FileLog, committed by
  PostgresLog) — and with it every event queued before it. So when a session's
  ``db.session.end`` is durable, all of its queries are.
* **Nothing dropped.** :meth:`AuditStream.record_nowait` always keeps the event; it answers
  False when the buffer holds ``capacity`` events or more, and the caller stops reading its
  client until :meth:`AuditStream.when_space` calls back (``await record()`` waits itself):
  the buffer overshoots its capacity by at most what one read of each session carries.
* **Fail closed.** When the log fails to write a batch, every stream with an event in it is
  failed: its ``on_failure`` callback runs (the db engines end the session) and its later
  ``record``/``emit`` raise :class:`AuditUnavailable`. Durable emits in the batch raise it too.
  Streams without an event in the failed batch go on (a later batch may succeed).
* **Flushed on close.** :meth:`AuditBuffer.aclose` refuses new events and returns once
  everything queued is written (or failed).

A query whose event was queued but not yet written when the process dies is lost with the
process (the client may have had its answer): the window is one batch, about ten
milliseconds (the linger and the write). The linger is the trade: each batch costs a hand-over
to the log's writer thread, its system calls and the GIL going back and forth between that
thread and the event loop; at thousands of queries a second that cost per batch, not the
events, is what a longer linger saves (``pgbench -S`` at 16 clients through one ``limen
start``: 9,600-9,800 TPS at 2 ms, 10,400-10,650 at 10 ms; bench/RESULTS.md). Use from one
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from limen.errors import ConnectionProblem
from limen.events.emitter import Emitter, emit_all
from limen.events.event import AuditEvent

__all__ = ["AuditBuffer", "AuditStream", "AuditUnavailable"]

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 4096
DEFAULT_BATCH = 512
DEFAULT_LINGER = 0.010


class AuditUnavailable(ConnectionProblem):
    """The audit log could not take an event: whatever depends on it must stop."""


class _Entry:
    __slots__ = ("done", "event", "stream")

    def __init__(self, event: AuditEvent, stream: AuditStream | None,
                 done: asyncio.Future[None] | None) -> None:
        self.event, self.stream, self.done = event, stream, done


class AuditStream:
    """One session's way into an :class:`AuditBuffer` (from :meth:`AuditBuffer.stream`).

    An :class:`~limen.events.Emitter`: ``await emit(event)`` is durable as above.
    ``on_failure`` (settable) is called once, with the error, when one of this stream's
    events could not be written.
    """

    def __init__(self, buffer: AuditBuffer,
                 on_failure: Callable[[AuditUnavailable], None] | None = None) -> None:
        self._buffer = buffer
        self.on_failure = on_failure
        self.failure: AuditUnavailable | None = None

    def record_nowait(self, event: AuditEvent) -> bool:
        """Queue ``event`` (always kept); False when the buffer is full and the caller should
        wait for :meth:`when_space` before producing more. Raises :class:`AuditUnavailable`
        once this stream has failed or the buffer is closed."""
        self._check()
        return self._buffer._put(event, self, None)

    async def record(self, event: AuditEvent) -> None:
        """Queue ``event``; waits while the buffer is full."""
        if not self.record_nowait(event):
            await self._buffer.wait_space()

    async def emit(self, event: AuditEvent) -> None:
        """Queue ``event`` and return once it and everything queued before it are written."""
        self._check()
        await self._buffer._durable(event, self)

    def when_space(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (soon) once the buffer is below its capacity again."""
        self._buffer.when_space(callback)

    async def wait_space(self) -> None:
        """Return once the buffer is below its capacity."""
        await self._buffer.wait_space()

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _fail(self, failure: AuditUnavailable) -> None:
        if self.failure is not None:
            return
        self.failure = failure
        if self.on_failure is not None:
            try:
                self.on_failure(failure)
            except Exception:
                log.exception("audit buffer: a failure callback failed")


class AuditBuffer:
    """Ordered, bounded, batched audit events over ``emitter``; itself an Emitter
    (``emit`` is durable). ``capacity``: events held (queued and being written) before
    producers are told to wait; ``max_batch``: events handed to the log at once."""

    def __init__(self, emitter: Emitter, *, capacity: int = DEFAULT_CAPACITY,
                 max_batch: int = DEFAULT_BATCH, linger: float = DEFAULT_LINGER) -> None:
        if capacity < 1 or max_batch < 1 or linger < 0:
            raise ValueError("an audit buffer needs a positive capacity and batch size")
        self.emitter = emitter
        self.capacity = capacity
        self.max_batch = max_batch
        self.linger = linger
        self.batches = 0
        """Batches written so far (for tests and benchmarks)."""
        self._queue: deque[_Entry] = deque()
        self._held = 0
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._space: list[Callable[[], None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def held(self) -> int:
        """Events queued or being written."""
        return self._held

    @property
    def full(self) -> bool:
        return self._held >= self.capacity

    def stream(self, on_failure: Callable[[AuditUnavailable], None] | None = None
               ) -> AuditStream:
        return AuditStream(self, on_failure)

    async def emit(self, event: AuditEvent) -> None:
        """Durable, as :meth:`AuditStream.emit`, for events of no stream."""
        await self._durable(event, None)

    def when_space(self, callback: Callable[[], None]) -> None:
        if self.full:
            self._space.append(callback)
        else:
            asyncio.get_running_loop().call_soon(callback)

    async def wait_space(self) -> None:
        if not self.full:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)
        self._space.append(wake)
        await waiter

    async def flush(self) -> None:
        """Return once everything queued so far is written (or has failed)."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Refuse new events, write what is queued, stop the writer."""
        self._closed = True
        self._urgent.set()
        await self.flush()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    # -- queue ----------------------------------------------------------------------------

    def _put(self, event: AuditEvent, stream: AuditStream | None,
             done: asyncio.Future[None] | None) -> bool:
        if self._closed:
            raise AuditUnavailable("the audit buffer is closed: no more events are taken")
        self._queue.append(_Entry(event, stream, done))
        self._held += 1
        self._idle.clear()
        self._wake.set()
        if done is not None or len(self._queue) >= self.max_batch or self._closed:
            self._urgent.set()
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._run(), name="limen-audit-buffer")
        return self._held < self.capacity

    async def _durable(self, event: AuditEvent, stream: AuditStream | None) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)  # a failure nobody waits for any more is not news
        self._put(event, stream, done)
        await asyncio.shield(done)  # a cancelled caller does not withdraw its event

    # -- writer ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.linger and not self._urgent.is_set():
                # gather what comes within ``linger`` into this batch (one hand-off to the
                # log for many queries); a durable emit or a full batch goes at once
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.linger):
                        await self._urgent.wait()
            self._urgent.clear()
            count = min(len(self._queue), self.max_batch)
            batch = [self._queue.popleft() for _ in range(count)]
            if not self._queue:
                self._wake.clear()
            if not batch:
                continue
            try:
                await self._write([entry.event for entry in batch])
            except asyncio.CancelledError:
                self._settle(batch, AuditUnavailable("the audit writer was stopped"))
                raise
            except Exception as err:
                log.error("audit log: cannot write %d event(s): %s", len(batch), err)
                self._settle(batch, AuditUnavailable(f"the audit log cannot be written: {err}"))
            else:
                self._settle(batch, None)

    async def _write(self, events: list[AuditEvent]) -> None:
        self.batches += 1
        await emit_all(self.emitter, events)

    def _settle(self, batch: list[_Entry], failure: AuditUnavailable | None) -> None:
        for entry in batch:
            if failure is not None and entry.stream is not None:
                entry.stream._fail(failure)
            if entry.done is not None and not entry.done.done():
                if failure is None:
                    entry.done.set_result(None)
                else:
                    entry.done.set_exception(failure)
        self._held -= len(batch)
        if self._held == 0:
            self._idle.set()
        if not self.full and self._space:
            waiting, self._space = self._space, []
            for callback in waiting:
                callback()


def _retrieve(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()
