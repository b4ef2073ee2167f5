"""How a log's writer thread tells the code that emitted audit events that they are written.

Used by :class:`~limen.events.FileLog` (its writer thread settles one *slot* per event, once the
event is fsynced or has failed). Three kinds of waiter, all settled from the writer thread:

* a ``concurrent.futures.Future`` per event: ``FileLog.write`` from a thread;
* :class:`Batch`: the events of one ``emit_many``; one Future for the lot;
* :class:`TurnBatch`: group commit from an event loop. Every ``emit()`` made during one turn of
  an asyncio loop is collected by :class:`Turns` and handed to the writer in one queue item at
  the end of the turn (``loop.call_soon``); when the writer has settled every event of that
  hand-over it wakes the loop once (``call_soon_threadsafe``), and the loop resolves each
  ``emit()``'s own asyncio future with its own outcome. So a burst of N concurrent emits costs
  one hand-over and one loop wake-up, not N of each; each emit still returns only after its
  event is durable, and fails alone when its event fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol

from limen.events.event import AuditEvent

__all__ = ["Batch", "Done", "Pending", "Slot", "TurnBatch", "Turns", "fail", "succeed",
           "succeed_all"]


class Done(Protocol):
    """What the writer thread settles per event: a Future, or a slot of a batch."""

    def set_result(self, result: None, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


Pending = tuple[AuditEvent, Done]
"""One event on its way to the writer, with what to settle when it is written or failed."""


class Slot:
    """One event's share of a :class:`Batch` or :class:`TurnBatch`: settled once."""

    __slots__ = ("_batch", "_done", "_index")

    def __init__(self, batch: Batch | TurnBatch, index: int) -> None:
        self._batch = batch
        self._index = index
        self._done = False

    def set_result(self, _result: None) -> None:
        self._settle(None)

    def set_exception(self, err: BaseException) -> None:
        self._settle(err)

    def _settle(self, err: BaseException | None) -> None:
        if self._done:
            raise RuntimeError("an audit event was settled twice")
        self._done = True
        self._batch.settled(self._index, err)


class Batch:
    """The events of one ``emit_many``: ``future`` resolves (with the first failure) once
    every event is written or failed, so the caller wakes once per batch, not per event."""

    def __init__(self, count: int) -> None:
        self.future: Future[None] = Future()
        self._left = count
        self._error: BaseException | None = None

    def pending(self, events: list[AuditEvent]) -> list[Pending]:
        return [(event, Slot(self, i)) for i, event in enumerate(events)]

    def settled(self, _index: int, err: BaseException | None) -> None:
        if err is not None and self._error is None:
            self._error = err
        self.written(1)

    def written(self, count: int) -> None:
        """``count`` more of the batch's events are written."""
        self._left -= count
        if self._left == 0:
            if self._error is not None:
                self.future.set_exception(self._error)
            else:
                self.future.set_result(None)


class TurnBatch:
    """The events one event-loop turn emitted: each ``emit()`` has its own asyncio future,
    resolved on the loop with its own outcome after the writer settled the whole hand-over
    (one ``call_soon_threadsafe`` for the lot)."""

    __slots__ = ("_errors", "_left", "_loop", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 waiters: list[asyncio.Future[None]]) -> None:
        self._loop = loop
        self._waiters = waiters
        self._errors: list[BaseException | None] = [None] * len(waiters)
        self._left = len(waiters)

    def settled(self, index: int, err: BaseException | None) -> None:
        """From the writer thread (the only one that settles slots)."""
        self._errors[index] = err
        self.written(1)

    def written(self, count: int) -> None:
        """``count`` more of the hand-over's events are written (their errors stay None)."""
        self._left -= count
        if self._left == 0:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        for waiter, err in zip(self._waiters, self._errors, strict=True):
            if waiter.done():  # its emit() was cancelled; the event was written anyway
                continue
            if err is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(err)


class Turns:
    """The events emitted during the current turn of each event loop, not yet handed over.

    Not thread-safe by itself: the owner calls :meth:`add`, :meth:`take` and :meth:`take_all`
    under its own lock (``close()`` may run on another thread)."""

    def __init__(self) -> None:
        self._open: dict[asyncio.AbstractEventLoop,
                         tuple[list[AuditEvent], list[asyncio.Future[None]]]] = {}

    def add(self, loop: asyncio.AbstractEventLoop, event: AuditEvent) -> tuple[
            asyncio.Future[None], bool]:
        """Queue ``event`` for ``loop``'s current turn: its waiter, and whether this is the
        turn's first event (the caller then schedules the hand-over with ``call_soon``)."""
        waiter: asyncio.Future[None] = loop.create_future()
        turn = self._open.get(loop)
        first = turn is None
        if turn is None:
            turn = self._open[loop] = ([], [])
        turn[0].append(event)
        turn[1].append(waiter)
        return waiter, first

    def take(self, loop: asyncio.AbstractEventLoop) -> list[Pending]:
        """``loop``'s events of this turn as one hand-over (empty if already taken)."""
        turn = self._open.pop(loop, None)
        return [] if turn is None else _pending(loop, *turn)

    def take_all(self) -> list[list[Pending]]:
        """Every loop's events not yet handed over (``close()``: they are written first)."""
        turns, self._open = self._open, {}
        return [_pending(loop, *turn) for loop, turn in turns.items()]

    @staticmethod
    def refuse(pending: list[Pending], err: BaseException) -> None:
        """Fail a hand-over that can no longer be written (the log was closed meanwhile)."""
        for _, done in pending:
            fail(done, err)


def _pending(loop: asyncio.AbstractEventLoop, events: list[AuditEvent],
             waiters: list[asyncio.Future[None]]) -> list[Pending]:
    batch = TurnBatch(loop, waiters)
    return [(event, Slot(batch, i)) for i, event in enumerate(events)]


def succeed(done: Done) -> None:
    """Settle ``done`` as written. Called per event on the writer thread: a ``try`` costs
    nothing when nothing is raised, ``contextlib.suppress`` half a microsecond per event."""
    try:  # noqa: SIM105
        done.set_result(None)
    except Exception:  # noqa: S110 -- cancelled by its waiter: nothing to report
        pass


def succeed_all(dones: Sequence[Done]) -> None:
    """Settle ``dones`` as written: the slots of one batch with one call of its own (a
    batch's events are written together), anything else one by one."""
    counts: dict[Batch | TurnBatch, int] = {}
    for done in dones:
        if type(done) is Slot:
            if done._done:  # as ``succeed`` ignores a second settling: counted once
                continue
            done._done = True
            counts[done._batch] = counts.get(done._batch, 0) + 1
        else:
            succeed(done)
    for batch, count in counts.items():
        batch.written(count)


def fail(done: Done, err: BaseException) -> None:
    with contextlib.suppress(Exception):
        done.set_exception(err)
