"""FileLog's group commit from the event loop (``limen.events.waiters``): the emits of one loop
turn reach the writer as one hand-over, yet each emit keeps its own outcome, a cancelled emit
is still written, ``close()`` writes what a turn had collected, and nothing is acknowledged
before its fsync. The writer settles a written batch's events in one call per batch
(``succeed_all``), no sooner than its last event and never twice."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

import pytest

from limen.events import AuditEvent, EventType, FileLog, make_event, scan
from limen.events import filelog as filelog_module
from limen.events.waiters import Batch, Turns, succeed_all

DAY = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _unwritable() -> AuditEvent:
    """An event whose free field is not JSON data (``make_event`` refuses to build one; a
    hand-made ``AuditEvent`` reaches the writer, which must fail it alone)."""
    good = make_event("exec", time=DAY)
    return AuditEvent(type=good.type, code=good.code, time=DAY, uid="u", cluster="",
                      success=True, fields={"bad": object()})


async def test_a_bad_event_fails_alone_in_its_turn(tmp_path: Path) -> None:
    log = FileLog(tmp_path, fsync=False)
    events = [make_event("exec", time=DAY, n=i) for i in range(5)]
    results = await asyncio.gather(*(log.emit(e) for e in [*events[:2], _unwritable(),
                                                             *events[2:]]),
                                   return_exceptions=True)
    await log.aclose()
    assert [type(r).__name__ for r in results] == ["NoneType"] * 2 + ["TypeError"] + \
        ["NoneType"] * 3
    assert [e["n"] for e in scan(tmp_path).events] == [0, 1, 2, 3, 4]


async def test_a_cancelled_emit_is_still_written(tmp_path: Path) -> None:
    log = FileLog(tmp_path, fsync=False)
    cancelled = asyncio.create_task(log.emit(make_event("exec", time=DAY, n=0)))
    kept = asyncio.create_task(log.emit(make_event("exec", time=DAY, n=1)))
    await asyncio.sleep(0)  # one turn: both tasks have emitted (not a timing wait)
    cancelled.cancel()
    await kept
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await log.aclose()
    assert sorted(e["n"] for e in scan(tmp_path).events) == [0, 1]


async def test_close_writes_what_the_turn_collected(tmp_path: Path) -> None:
    log = FileLog(tmp_path, fsync=False)
    tasks = [asyncio.create_task(log.emit(make_event("exec", time=DAY, n=i))) for i in range(3)]
    await asyncio.sleep(0)  # one turn: the three emits are collected, not yet handed over
    log.close()
    await asyncio.gather(*tasks)  # written before close() returned, each acknowledged
    assert [e["n"] for e in scan(tmp_path).events] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="closed"):
        await log.emit(make_event("exec"))


async def test_a_turn_handed_over_after_close_fails_its_emits(tmp_path: Path) -> None:
    """``close()`` from another thread between a turn's emits and its hand-over: the emits
    raise (they were not written), they never report success."""
    log = FileLog(tmp_path, fsync=False)
    loop = asyncio.get_running_loop()
    with log._lock:
        waiter, first = log._turns.add(loop, make_event("exec", time=DAY))
    assert first
    pending = log._turns.take(loop)
    log.close()
    Turns.refuse(pending, RuntimeError("audit log closed"))
    with pytest.raises(RuntimeError, match="closed"):
        await waiter
    assert scan(tmp_path).events == []


async def test_no_emit_of_a_turn_returns_before_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hand-over done, line written, fsync not yet finished: nobody is acknowledged; a failed
    fsync then fails every emit of the batch (a crash there never returned success)."""
    written, gate = threading.Event(), threading.Event()

    def gated_fsync(fd: int) -> None:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return  # the directory, when the day file is created
        written.set()
        assert gate.wait(10)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(filelog_module.os, "fsync", gated_fsync)
    log = FileLog(tmp_path)
    tasks = [asyncio.create_task(log.emit(make_event(EventType.CERT_CREATE, time=DAY, n=i)))
             for i in range(8)]
    await asyncio.to_thread(written.wait, 5)  # the writer is inside the fsync
    assert not any(t.done() for t in tasks)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await log.aclose()
    assert all(isinstance(r, OSError) for r in results)


def test_a_batch_is_settled_once_its_last_event_is_written() -> None:
    batch = Batch(3)
    slots = [done for _, done in batch.pending([make_event("exec", time=DAY, n=i)
                                                for i in range(3)])]
    alone: Future[None] = Future()  # FileLog.write's waiter, written in the same go
    succeed_all([slots[0], alone, slots[1]])
    assert alone.done()
    assert not batch.future.done()
    succeed_all([slots[2]])
    assert batch.future.result() is None
    succeed_all([slots[0]])  # settled already: not counted again
    assert batch._left == 0
