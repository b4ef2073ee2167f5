"""AuditBuffer (``limen.events.buffer``): recorded events are written in order and in batches,
a durable emit returns only once everything queued before it is written, a full buffer makes
producers wait without dropping anything, a failed write fails the streams whose events it
held (fail closed) and closing flushes. Over every emitter a db agent can have: FileLog, the
agent's AuditOutbox, PostgresLog (on the session's real PostgreSQL) and MemoryEmitter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_backend_db import backend_database

from dbservers import PostgresServer
from limen.agents.audit_outbox import AuditOutbox
from limen.auth.client import AuthClient
from limen.events import FileLog, MemoryEmitter, make_event
from limen.events.buffer import AuditBuffer, AuditUnavailable
from limen.events.event import AuditEvent
from limen.events.postgres_log import PostgresLog

DEADLINE = 5.0


def query(n: int, session: str = "s1") -> AuditEvent:
    return make_event("db.session.query", user="alice", session_id=session, query=f"q{n}")


def numbers(events: Sequence[AuditEvent | dict[str, Any]]) -> list[int]:
    out = []
    for event in events:
        fields = event.fields if isinstance(event, AuditEvent) else event
        text = str(fields.get("query", ""))
        if text.startswith("q"):
            out.append(int(text[1:]))
    return out


def file_lines(directory: Path) -> list[dict[str, Any]]:
    """Every event line of the day files in ``directory``, in file order."""
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_text().splitlines() if '"event"' in line]


class Gate:
    """An emitter that holds every write until ``opened`` is set; can be made to fail."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.entered = asyncio.Event()
        self.written: list[AuditEvent] = []
        self.calls = 0
        self.fail: Exception | None = None

    async def emit(self, event: AuditEvent) -> None:
        await self.emit_many([event])

    async def emit_many(self, events: Sequence[AuditEvent]) -> None:
        self.calls += 1
        self.entered.set()
        await self.opened.wait()
        if self.fail is not None:
            raise self.fail
        self.written.extend(events)


async def test_order_across_streams_and_durable_emit_waits_for_what_came_before() -> None:
    memory = MemoryEmitter()
    buffer = AuditBuffer(memory)
    a, b = buffer.stream(), buffer.stream()
    for n in range(0, 300, 2):
        assert a.record_nowait(query(n, "a"))
        assert b.record_nowait(query(n + 1, "b"))
    await a.emit(make_event("db.session.end", user="alice", session_id="a"))
    # when the end event is durable, every query queued before it is written, in order
    assert numbers(memory.events) == list(range(300))
    assert memory.events[-1].type.value == "db.session.end"
    await buffer.aclose()


async def test_batches_go_to_emit_many_with_one_fsync_each(tmp_path: Path) -> None:
    log = FileLog(tmp_path / "events")
    buffer = AuditBuffer(log, max_batch=100)
    stream = buffer.stream()
    for n in range(1000):
        stream.record_nowait(query(n))
    await stream.emit(make_event("db.session.end", user="alice", session_id="s1"))
    assert buffer.batches <= 15  # 1001 events: batches of up to 100, not 1001 hand-offs
    await buffer.aclose()
    await log.aclose()
    lines = file_lines(tmp_path / "events")
    assert numbers(lines) == list(range(1000))


async def test_full_buffer_makes_the_producer_wait_and_drops_nothing() -> None:
    gate = Gate()
    buffer = AuditBuffer(gate, capacity=3, max_batch=2)
    stream = buffer.stream()
    assert stream.record_nowait(query(0))
    assert stream.record_nowait(query(1))
    assert not stream.record_nowait(query(2))  # kept, but the producer is told to wait
    assert buffer.held == 3
    assert buffer.full
    resumed = asyncio.Event()
    stream.when_space(resumed.set)
    blocked = asyncio.create_task(stream.record(query(3)))
    await asyncio.sleep(0)  # let the task reach its wait (not synchronisation: checked below)
    assert not blocked.done()
    assert not resumed.is_set()
    gate.opened.set()
    async with asyncio.timeout(DEADLINE):
        await blocked
        await resumed.wait()
        await buffer.flush()
    assert numbers(gate.written) == [0, 1, 2, 3]
    await buffer.aclose()


async def test_a_failed_write_fails_its_streams_and_not_the_others() -> None:
    gate = Gate()
    buffer = AuditBuffer(gate)
    failures: list[AuditUnavailable] = []
    doomed = buffer.stream(on_failure=failures.append)
    durable = asyncio.create_task(doomed.emit(query(0)))
    doomed.record_nowait(query(1))
    async with asyncio.timeout(DEADLINE):
        await gate.entered.wait()  # the first batch (query 0) is with the log
    gate.fail = OSError("No space left on device")
    gate.opened.set()
    with pytest.raises(AuditUnavailable, match="No space left on device"):
        async with asyncio.timeout(DEADLINE):
            await durable
    async with asyncio.timeout(DEADLINE):
        await buffer.flush()
    assert len(failures) == 1
    assert "cannot be written" in str(failures[0])
    with pytest.raises(AuditUnavailable):
        doomed.record_nowait(query(2))
    with pytest.raises(AuditUnavailable):
        await doomed.emit(query(3))
    gate.fail = None  # the log works again: a stream with nothing in the failed batch goes on
    other = buffer.stream()
    await other.emit(query(4, "other"))
    assert numbers(gate.written) == [4]
    await buffer.aclose()


async def test_close_flushes_and_refuses_later_events(tmp_path: Path) -> None:
    gate = Gate()
    buffer = AuditBuffer(gate)
    stream = buffer.stream()
    for n in range(10):
        stream.record_nowait(query(n))
    closing = asyncio.create_task(buffer.aclose())
    await asyncio.sleep(0)
    gate.opened.set()
    async with asyncio.timeout(DEADLINE):
        await closing
    assert numbers(gate.written) == list(range(10))
    with pytest.raises(AuditUnavailable, match="closed"):
        stream.record_nowait(query(10))


async def test_a_cancelled_durable_emit_still_writes_its_event() -> None:
    gate = Gate()
    buffer = AuditBuffer(gate)
    waiter = asyncio.create_task(buffer.emit(query(0)))
    await asyncio.sleep(0)
    waiter.cancel()
    gate.opened.set()
    async with asyncio.timeout(DEADLINE):
        await buffer.aclose()
    assert numbers(gate.written) == [0]


class NoAuth:
    async def call(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        raise AssertionError("not forwarded in this test")


async def test_over_an_agent_outbox(tmp_path: Path) -> None:
    async def client() -> AuthClient:
        return NoAuth()  # type: ignore[return-value]

    outbox = AuditOutbox(tmp_path / "outbox", client)
    buffer = AuditBuffer(outbox, max_batch=50)
    stream = buffer.stream()
    for n in range(200):
        stream.record_nowait(query(n))
    await stream.emit(make_event("db.session.end", user="alice", session_id="s1"))
    assert buffer.batches <= 6
    await buffer.aclose()
    await outbox._log.aclose()
    assert numbers(file_lines(tmp_path / "outbox")) == list(range(200))


async def test_over_a_postgres_log(postgres_server: PostgresServer) -> None:
    dsn = backend_database(postgres_server, "limen_audit_buffer", icu=False)
    log = PostgresLog(dsn)
    try:
        buffer = AuditBuffer(log, max_batch=64)
        stream = buffer.stream()
        for n in range(300):
            stream.record_nowait(query(n))
        await stream.emit(make_event("db.session.end", user="alice", session_id="s1"))
        await buffer.aclose()
        found = await log.search("db.session.query")
        assert sorted(numbers(found)) == list(range(300))
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT line FROM limen_audit_lines ORDER BY day, seq").fetchall()
        assert numbers([row[0] for row in rows]) == list(range(300))
    finally:
        await log.aclose()
