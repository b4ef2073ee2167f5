"""MultiEmitter fan-out and MemoryEmitter (storage, subscriptions, wait_for)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from limen.events import (
    AuditEvent,
    Emitter,
    FileLog,
    MemoryEmitter,
    MultiEmitter,
    make_event,
    search,
)


class Broken:
    def __init__(self, message: str) -> None:
        self.message = message

    async def emit(self, event: AuditEvent) -> None:
        raise OSError(self.message)


def test_emitters_satisfy_the_protocol(tmp_path: Path) -> None:
    with FileLog(tmp_path, fsync=False) as log:
        for emitter in (log, MemoryEmitter(), MultiEmitter(), Broken("x")):
            assert isinstance(emitter, Emitter)


async def test_multi_emitter_fans_out(tmp_path: Path) -> None:
    memory = MemoryEmitter()
    log = FileLog(tmp_path, fsync=False)
    event = make_event("role.created", user="admin", name="dev")
    await MultiEmitter(memory, log).emit(event)
    await log.aclose()
    assert memory.events == [event]
    assert [e["uid"] for e in search(tmp_path)] == [event.uid]


async def test_multi_emitter_delivers_to_all_before_raising() -> None:
    first, last = MemoryEmitter(), MemoryEmitter()
    event = make_event("exec")
    with pytest.raises(OSError, match="disk full"):
        await MultiEmitter(first, Broken("disk full"), last).emit(event)
    assert first.events == [event]
    assert last.events == [event]
    with pytest.raises(BaseExceptionGroup) as group:
        await MultiEmitter(Broken("a"), Broken("b")).emit(event)
    assert sorted(str(e) for e in group.value.exceptions) == ["a", "b"]


async def test_memory_emitter_keeps_the_last_maxlen() -> None:
    memory = MemoryEmitter(maxlen=2)
    events = [make_event("exec", n=i) for i in range(3)]
    for event in events:
        await memory.emit(event)
    assert memory.events == events[1:]
    memory.clear()
    assert memory.events == []


async def test_subscription_receives_future_events_and_drops_when_full() -> None:
    memory = MemoryEmitter()
    await memory.emit(make_event("exec", n=0))  # before subscribing: not delivered
    with memory.subscribe(maxsize=2) as feed:
        for n in (1, 2, 3):
            await memory.emit(make_event("exec", n=n))
        assert feed.dropped == 1
        assert (await feed.get()).fields["n"] == 1
        assert (await anext(aiter(feed))).fields["n"] == 2
    await memory.emit(make_event("exec", n=4))  # closed: no longer fed
    assert feed.dropped == 1
    assert feed._queue.empty()


async def test_wait_for_past_and_future_events() -> None:
    memory = MemoryEmitter()
    await memory.emit(make_event("user.login", user="alice"))
    found = await memory.wait_for(lambda e: e.user == "alice", timeout=1)
    assert found.user == "alice"

    waiter = asyncio.create_task(memory.wait_for(lambda e: e.type == "session.end", timeout=5))
    await memory.emit(make_event("session.start", user="bob"))
    await memory.emit(make_event("session.end", user="bob"))
    assert (await waiter).user == "bob"


async def test_wait_for_times_out() -> None:
    memory = MemoryEmitter()
    await memory.emit(make_event("exec"))
    with pytest.raises(TimeoutError):
        await memory.wait_for(lambda e: e.type == "session.end", timeout=0.05)
