"""The tunnel port's first bytes: control (``SSH-``) or data (``LIMEN-DATA <nonce>\\n``).

:class:`PortSniffer` is the asyncio Protocol of every accepted connection. It reads until it
can tell the two apart, within ``preamble_timeout``; an SSH connection is handed, bytes
included, to an asyncssh server connection (``transport.set_protocol``); a data connection is
paused after its preamble and handed to the tunnel server as a :class:`DataConnection` with
the bytes that followed the preamble. Anything else is dropped. Called by
:mod:`limen.tunnel.server`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from limen.errors import LimenError
from limen.net.event_loop import stream_transport
from limen.net.tcp import tune_socket
from limen.tunnel.protocol import DATA_PREFIX, MAX_PREAMBLE, parse_preamble

__all__ = ["DataConnection", "PortSniffer", "SniffTarget"]

log = logging.getLogger("limen.tunnel.server")
_SSH = b"SSH-"


class SniffTarget(Protocol):
    """What the sniffer hands connections to (the tunnel server)."""

    preamble_timeout: float
    unsorted: set[asyncio.Transport]

    def new_ssh_connection(self) -> Any: ...

    def data_connection(self, nonce: str, transport: asyncio.Transport, leftover: bytes,
                        peer: str) -> None: ...


class DataConnection:
    """A data connection paired with a dial: the raw transport, paused, plus any bytes that
    arrived right after the preamble. :meth:`attach` hands the stream to a protocol."""

    def __init__(self, transport: asyncio.Transport, leftover: bytes, peer: str,
                 host_id: str) -> None:
        self.transport = transport
        self.leftover = leftover
        self.peer = peer
        self.host_id = host_id
        self._attached = False

    def attach(self, protocol: asyncio.Protocol) -> None:
        """Make ``protocol`` the stream's protocol (connection_made, leftover, resume)."""
        if self._attached:
            raise RuntimeError("data connection already attached")
        self._attached = True
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        if self.leftover:
            data, self.leftover = self.leftover, b""
            protocol.data_received(data)
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if not self._attached:
            self.transport.close()



class PortSniffer(asyncio.Protocol):
    """Reads the first bytes of a tunnel-port connection and hands it over."""

    def __init__(self, server: SniffTarget) -> None:
        self.server = server
        self.buf = b""
        self.peer = ""
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = stream_transport(transport)
        tune_socket(transport.get_extra_info("socket"))
        host, port = (transport.get_extra_info("peername") or ("?", 0))[:2]
        self.peer = f"{host}:{port}"
        self.server.unsorted.add(transport)
        self._timer = asyncio.get_running_loop().call_later(
            self.server.preamble_timeout, self._drop, "no preamble in time")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head = self.buf[:len(DATA_PREFIX)]
        if head[:4] == _SSH[:len(head[:4])]:
            if len(self.buf) >= len(_SSH):
                self._to_ssh()
        elif head == DATA_PREFIX[:len(head)]:
            end = self.buf.find(b"\n", 0, MAX_PREAMBLE)
            if end < 0:
                if len(self.buf) >= MAX_PREAMBLE:
                    self._drop("malformed preamble")
                return
            try:
                nonce = parse_preamble(self.buf[:end + 1])
            except LimenError:
                self._drop("malformed preamble")
                return
            self._to_data(nonce, self.buf[end + 1:])
        else:
            self._drop("garbage")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self.transport is not None:
            self.server.unsorted.discard(self.transport)

    def _to_ssh(self) -> None:
        assert self.transport is not None
        self._cancel()
        self.server.unsorted.discard(self.transport)
        conn = self.server.new_ssh_connection()
        self.transport.set_protocol(conn)
        conn.connection_made(self.transport)
        conn.data_received(self.buf)

    def _to_data(self, nonce: str, leftover: bytes) -> None:
        assert self.transport is not None
        self._cancel()
        self.server.unsorted.discard(self.transport)
        self.transport.pause_reading()
        self.server.data_connection(nonce, self.transport, leftover, self.peer)

    def _drop(self, reason: str) -> None:
        self._cancel()
        log.info("tunnel: dropping connection from %s: %s", self.peer, reason)
        if self.transport is not None:
            self.transport.abort()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
