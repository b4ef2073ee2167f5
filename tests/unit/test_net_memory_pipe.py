"""The in-process connection (``limen.net.memory_pipe``) behaves like a TCP connection to the
code above it: streams both ways, EOF after the data (half-close), close and abort, back
pressure on a reader that stops reading, and a hand-over to a Relay."""

from __future__ import annotations

import asyncio

from limen.net.memory_pipe import HIGH
from limen.net.relay import Relay
from limen.net.streams import close_writer, hand_over, memory_streams

DEADLINE = 5.0


async def test_bytes_both_ways_then_eof_then_close() -> None:
    (ra, wa), (rb, wb) = memory_streams("test")
    wa.write(b"hello ")
    wa.write(b"world")
    await wa.drain()
    wb.write(b"back")
    async with asyncio.timeout(DEADLINE):
        assert await rb.readexactly(11) == b"hello world"
        assert await ra.readexactly(4) == b"back"
        wa.write_eof()  # half-close: b still writes
        assert await rb.read() == b""
        wb.write(b"after eof")
        assert await ra.readexactly(9) == b"after eof"
        await close_writer(wb)
        assert await ra.read() == b""
        await close_writer(wa)


async def test_a_reader_that_stops_reading_pauses_the_writer() -> None:
    (_ra, wa), (rb, wb) = memory_streams("test")
    wb.transport.pause_reading()
    chunk = b"x" * 65536
    sent = 0
    async with asyncio.timeout(DEADLINE):
        while sent <= HIGH:  # more than HIGH unread: the writer must wait in drain
            wa.write(chunk)
            sent += len(chunk)
        drained = asyncio.create_task(wa.drain())
        await asyncio.sleep(0)  # one step: nothing can resume the writer while b is paused
        assert not drained.done()
        wb.transport.resume_reading()
        got = 0
        while got < sent:
            got += len(await rb.read(1 << 20))
        await drained
    assert got == sent
    await close_writer(wa)
    await close_writer(wb)


async def test_abort_drops_what_was_not_delivered_and_ends_both() -> None:
    (_ra, wa), (rb, wb) = memory_streams("test")
    wb.transport.pause_reading()
    wa.write(b"never read")
    wa.transport.abort()
    wb.transport.resume_reading()
    async with asyncio.timeout(DEADLINE):
        assert await rb.read() == b""
        await wa.wait_closed()
        await close_writer(wb)


async def test_handed_over_to_a_relay() -> None:
    (ra, wa), (rb, wb) = memory_streams("left")
    (rc, wc), (rd, wd) = memory_streams("right")
    relay = Relay(name="test")
    hand_over(rb, wb, relay, 0)
    hand_over(rc, wc, relay, 1)
    async with asyncio.timeout(DEADLINE):
        wa.write(b"to the right")
        assert await rd.readexactly(12) == b"to the right"
        wd.write(b"to the left")
        assert await ra.readexactly(11) == b"to the left"
        await close_writer(wa)
        assert await rd.read() == b""  # EOF passed on
        await close_writer(wd)
        await relay.wait_closed()
