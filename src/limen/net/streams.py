"""asyncio streams for protocols that parse what they relay (the database fronts and the db
agent): TLS on an already connected socket or data connection, a counted copy loop, and the
hand-over of a stream's connection to a :class:`~limen.net.relay.Relay` once the parsing is
done.

The database paths read their startup messages with streams, which make that plain; then
:func:`hand_over` gives each connection to a Relay (asyncio Protocols: no task and no
stream buffer per read), as the SSH paths do from the start. Called by ``limen.proxy.db``
and ``limen.agents.db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from limen.net.event_loop import stream_transport
from limen.net.memory_pipe import memory_pipe
from limen.net.relay import Relay
from limen.net.tcp import tune_socket

__all__ = [
    "Counter", "accept_tls", "both_ways", "close_writer", "connect_socket", "copy_stream",
    "hand_over", "memory_streams", "stream_pair",
]

_CHUNK = 256 * 1024


class Counter:
    """Bytes moved in one direction."""

    def __init__(self) -> None:
        self.bytes = 0


async def accept_tls(sock: socket.socket, context: ssl.SSLContext, *,
                     handshake_timeout: float = 10.0,
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Server-side TLS on a connected socket (the db agent's end of a data connection);
    raises ``ssl.SSLError``/``OSError``/``TimeoutError`` when the handshake fails."""
    loop = asyncio.get_running_loop()
    tune_socket(sock)
    reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.connect_accepted_socket(
        lambda: protocol, sock, ssl=context, ssl_handshake_timeout=handshake_timeout)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def connect_socket(sock: socket.socket
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over a connected socket of any family (a socket pair's end)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


def memory_streams(name: str) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter],
                                        tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Both ends of an in-process connection (:mod:`limen.net.memory_pipe`) as streams."""
    loop = asyncio.get_running_loop()
    readers = (asyncio.StreamReader(limit=_CHUNK, loop=loop),
               asyncio.StreamReader(limit=_CHUNK, loop=loop))
    protocols = (asyncio.StreamReaderProtocol(readers[0], loop=loop),
                 asyncio.StreamReaderProtocol(readers[1], loop=loop))
    ends = memory_pipe(protocols[0], protocols[1], name=name)
    first, second = (
        (readers[i], asyncio.StreamWriter(ends[i], protocols[i], readers[i], loop))
        for i in (0, 1))
    return first, second


def stream_pair(attach: Callable[[asyncio.Protocol], None]
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over a transport handed out by ``attach(protocol)`` (a tunnel data
    connection's :meth:`~limen.tunnel.sniffer.DataConnection.attach`)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
    protocol = _Attached(reader, loop=loop)
    attach(protocol)
    assert protocol.transport is not None, "attach() must call connection_made"
    return reader, asyncio.StreamWriter(protocol.transport, protocol, reader, loop)


class _Attached(asyncio.StreamReaderProtocol):
    """Remembers the transport it was attached to."""

    transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream_transport(transport)
        super().connection_made(transport)


async def copy_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      counter: Counter | None = None) -> None:
    """Copy until EOF, then half-close ``writer`` (or close it when it cannot half-close)."""
    try:
        while data := await reader.read(_CHUNK):
            if counter is not None:
                counter.bytes += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
    except (OSError, ssl.SSLError, RuntimeError):
        writer.close()


async def both_ways(foreground: Coroutine[Any, Any, None],
                    background: Coroutine[Any, Any, None], *, grace: float = 30.0) -> None:
    """Run ``background`` (usually the server-to-client copy) while ``foreground`` (the
    client-to-server side) runs; when the foreground is done, give the background ``grace``
    seconds to drain, then cancel it."""
    task = asyncio.create_task(background)
    try:
        await foreground
    finally:
        try:
            async with asyncio.timeout(grace):
                await task
        except TimeoutError:
            task.cancel()


def hand_over(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, relay: Relay,
              side: int) -> None:
    """Give the connection under ``reader``/``writer`` to ``relay`` as ``side``: what the
    stream had buffered (and its EOF) goes first, then the transport calls the relay's
    Protocol directly. Call it with nothing left to drain; the streams are not used after."""
    transport = stream_transport(writer.transport)
    buffered: bytearray | None = getattr(reader, "_buffer", None)
    data = bytes(buffered) if buffered else b""
    if buffered:
        buffered.clear()
    eof, failure = reader.at_eof(), reader.exception()
    lost = transport.is_closing()
    tls = transport.get_extra_info("sslcontext") is not None
    transport.set_protocol(relay.protocol(side, half_close=not tls))
    if getattr(reader, "_paused", False):  # the stream had paused a full buffer
        transport.resume_reading()
    relay.attach(side, transport)
    if data:
        relay.received(side, data)
    if lost:
        relay.lost(side, failure)
    elif eof:
        relay.eof(side)


async def close_writer(writer: asyncio.StreamWriter, grace: float = 5.0) -> None:
    """Close and wait (bounded) for the close to finish; errors of a dead peer are ignored.
    A connection handed over to a relay is only closed (the relay sees it go)."""
    writer.close()
    try:
        protocol = writer.transport.get_protocol()
    except AttributeError:  # a TLS transport already torn down (asyncio drops its protocol)
        return
    if not isinstance(protocol, asyncio.StreamReaderProtocol):
        return
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError, RuntimeError):
        async with asyncio.timeout(grace):
            await writer.wait_closed()
