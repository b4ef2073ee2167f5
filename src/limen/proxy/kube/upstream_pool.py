"""Kept-alive tunnel connections to the kube agent for one HTTP/2 client connection: a
stream takes an idle one (or dials a new one) for its request and gives it back when the
response ended cleanly, so a kubectl session does not dial the agent for every request.
Every connection carries the client's certificate (one client connection, one identity), and
the agent decides each request on it. A dial outlives a stream reset while it runs: its
connection is kept idle (or closed), never left half-open. Called by
:mod:`limen.proxy.kube.kube_h2`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from limen.net.streams import close_writer

__all__ = ["Dial", "Upstream", "UpstreamPool"]

Dial = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
"""Opens a new tunnel connection to the agent (raises StreamRefused when refused)."""


@dataclass(frozen=True)
class Upstream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool
    """Taken from the idle ones (it may have been closed by the agent meanwhile)."""

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()


class UpstreamPool:
    """At most ``max_idle`` idle connections are kept; the others are closed."""

    def __init__(self, dial: Dial, *, max_idle: int = 8) -> None:
        self._dial = dial
        self._max_idle = max_idle
        self._idle: list[Upstream] = []
        self._closed = False

    async def acquire(self, *, fresh: bool = False) -> Upstream:
        """An idle connection, or a new one (always new with ``fresh``)."""
        while self._idle and not fresh:
            upstream = self._idle.pop()
            if upstream.usable():
                return Upstream(upstream.reader, upstream.writer, reused=True)
            await close_writer(upstream.writer)
        dialling = asyncio.ensure_future(self._dial())
        try:
            reader, writer = await asyncio.shield(dialling)
        except asyncio.CancelledError:  # the stream is gone (reset): its dial is kept idle
            dialling.add_done_callback(self._adopt)
            raise
        return Upstream(reader, writer, reused=False)

    def _adopt(self, dialling: asyncio.Future[tuple[asyncio.StreamReader,
                                                   asyncio.StreamWriter]]) -> None:
        """A dial whose stream went away while it ran: idle, or closed (never leaked)."""
        if dialling.cancelled() or dialling.exception() is not None:
            return
        reader, writer = dialling.result()
        upstream = Upstream(reader, writer, reused=False)
        if self._closed or len(self._idle) >= self._max_idle:
            writer.transport.abort()
        else:
            self._idle.append(upstream)

    async def release(self, upstream: Upstream) -> None:
        """Give back a connection whose last response ended cleanly."""
        if self._closed or len(self._idle) >= self._max_idle or not upstream.usable():
            await close_writer(upstream.writer)
        else:
            self._idle.append(upstream)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for upstream in idle:
            await close_writer(upstream.writer)
