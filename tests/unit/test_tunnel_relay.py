"""The relay's rules, on recording endpoints (deterministic) and on real loopback sockets:
bytes both ways, EOF passed on and both-sides EOF closing, loss of one side closing the other,
back pressure crossing over, buffering before a side is attached, and the idle timeout."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

from limen.net.relay import Relay


class End:
    def __init__(self, can_eof: bool = True) -> None:
        self.data = bytearray()
        self.eof = False
        self.closed = False
        self.aborted = False
        self.paused = 0
        self.resumed = 0
        self._can_eof = can_eof

    def write(self, data: bytes) -> None:
        assert not self.eof, "write after EOF"
        self.data += data

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return self._can_eof

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        self.resumed += 1

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


async def test_bytes_eof_and_close_on_eof_from_both_sides() -> None:
    relay, a, b = Relay(), End(), End()
    relay.attach(0, a)
    relay.attach(1, b)
    relay.received(0, b"pi")
    relay.received(0, b"ng")
    relay.received(1, b"pong")
    assert (b.data, a.data) == (b"", b"")  # coalesced until the end of the loop step
    relay.flush()
    assert (bytes(b.data), bytes(a.data)) == (b"ping", b"pong")
    relay.eof(0)
    assert b.eof
    assert not a.closed  # half-close: the other direction still flows
    assert not b.closed
    relay.received(1, b"more")
    relay.eof(1)  # EOF writes what is pending first
    assert bytes(a.data) == b"pongmore"
    assert a.eof
    assert a.closed
    assert b.closed
    assert relay.close_reason == "eof from both sides"
    relay.lost(0)
    relay.lost(1)
    assert relay.done.done()
    assert relay.bytes_from == [4, 8]


async def test_coalesced_writes_go_out_at_the_end_of_the_loop_step() -> None:
    relay, a, b = Relay(), End(), End()
    relay.attach(0, a)
    relay.attach(1, b)
    for chunk in (b"a", b"b", b"c"):
        relay.received(0, chunk)
    flushed = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(lambda: flushed.set_result(bytes(b.data)))
    assert await flushed == b"abc"


async def test_without_coalescing_each_chunk_is_written_at_once_in_order() -> None:
    relay, a, b = Relay(coalesce=False), End(), End()
    relay.attach(0, a)
    relay.attach(1, b)
    relay.received(0, b"query")
    assert bytes(b.data) == b"query"  # no loop step in between
    relay.received(1, b"answer")
    relay.reply(1, b"+note")
    assert bytes(a.data) == b"answer"
    assert bytes(b.data) == b"query+note"
    relay.lost(1)
    relay.received(0, b"after")  # the peer is gone: nothing written, nothing raised
    assert bytes(b.data) == b"query+note"


async def test_pending_bytes_are_written_before_a_close() -> None:
    relay, a, b = Relay(), End(), End()
    relay.attach(0, a)
    relay.attach(1, b)
    relay.received(0, b"last")
    relay.lost(0)
    assert bytes(b.data) == b"last"
    assert b.closed


async def test_losing_one_side_closes_the_other_and_runs_on_close_once() -> None:
    calls: list[Relay] = []
    relay, a, b = Relay(on_close=calls.append), End(), End()
    relay.attach(0, a)
    relay.attach(1, b)
    relay.lost(1, ConnectionResetError("reset"))
    assert a.closed
    assert not relay.done.done()
    relay.lost(0)
    assert relay.done.done()
    assert calls == [relay]
    assert "reset" in relay.close_reason
    relay.close()
    assert calls == [relay]


async def test_back_pressure_crosses_over() -> None:
    relay, a, b = Relay(), End(), End()
    relay.attach(0, a)
    relay.attach(1, b)
    relay.pause(1)  # side 1's writer is full: stop reading side 0
    assert (a.paused, b.paused) == (1, 0)
    relay.resume(1)
    assert a.resumed == 1


async def test_data_before_the_other_side_is_attached_is_buffered() -> None:
    relay, a, b = Relay(), End(), End()
    relay.attach(1, b)
    relay.received(1, b"SSH-2.0-node\r\n")
    relay.eof(1)
    assert b.paused == 1
    relay.attach(0, a)
    assert bytes(a.data) == b"SSH-2.0-node\r\n"
    assert a.eof
    assert b.resumed == 1


async def test_a_side_lost_before_the_other_attaches_still_delivers_its_data() -> None:
    relay, a, b = Relay(), End(), End()
    relay.attach(1, b)
    relay.received(1, b"last words")
    relay.lost(1)
    assert not relay.done.done()
    relay.attach(0, a)
    assert bytes(a.data) == b"last words"
    assert a.closed
    relay.lost(0)
    assert relay.done.done()


async def test_close_with_an_unattached_side_finishes_when_the_other_is_gone() -> None:
    relay, a = Relay(), End()
    relay.attach(0, a)
    relay.close("dial failed")
    assert a.closed
    relay.lost(0)
    assert relay.done.done()
    assert relay.close_reason == "dial failed"


async def test_eof_on_a_side_that_cannot_half_close_closes() -> None:
    relay, a, b = Relay(), End(), End(can_eof=False)
    relay.attach(0, a)
    relay.attach(1, b)
    relay.eof(0)
    assert b.closed
    assert a.closed


async def test_idle_timeout_aborts_both_sides() -> None:
    relay, a, b = Relay(idle_timeout=0.2), End(), End()
    relay.attach(0, a)
    relay.attach(1, b)
    async with asyncio.timeout(5):
        await relay.wait_closed()
    assert a.aborted
    assert b.aborted
    assert "idle" in relay.close_reason


async def test_traffic_keeps_the_idle_timer_away() -> None:
    relay, a, b = Relay(idle_timeout=0.4), End(), End()
    relay.attach(0, a)
    relay.attach(1, b)
    loop = asyncio.get_running_loop()
    for _ in range(8):  # 8 x 0.1 s of traffic: twice the idle timeout
        relay.received(0, b"x")
        tick = loop.create_future()
        loop.call_later(0.1, tick.set_result, None)
        await tick
    assert not relay.done.done()
    relay.abort()


async def test_real_sockets_one_mebibyte_each_way_then_clean_close() -> None:
    loop = asyncio.get_running_loop()
    payload_up, payload_down = os.urandom(1 << 20), os.urandom(1 << 20)
    got_at_server = bytearray()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload_down)
        writer.write_eof()
        got_at_server.extend(await reader.read())
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    up_port = server.sockets[0].getsockname()[1]
    relays: list[Relay] = []
    tasks: list[asyncio.Task[Any]] = []

    def front() -> Any:
        relay = Relay(idle_timeout=30)
        relays.append(relay)
        tasks.append(loop.create_task(loop.create_connection(
            lambda: relay.protocol(1), "127.0.0.1", up_port)))
        return relay.protocol(0)

    listener = await loop.create_server(front, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload_up)
    writer.write_eof()
    async with asyncio.timeout(20):
        got_at_client = await reader.read()
        (relay,) = relays
        await relay.wait_closed()
    writer.close()
    listener.close()
    server.close()
    assert hashlib.sha256(got_at_client).digest() == hashlib.sha256(payload_down).digest()
    assert hashlib.sha256(got_at_server).digest() == hashlib.sha256(payload_up).digest()
    assert relay.bytes_from == [1 << 20, 1 << 20]
