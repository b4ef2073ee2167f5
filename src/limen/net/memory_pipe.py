"""An in-process connection: two asyncio transports joined in memory, no socket.

Used where two parts of one process talk as if over a connection: the proxy's database
front and a db agent in the same ``limen start`` (:meth:`limen.proxy.db.db_route.DBRouter.
attach_local`). What one end writes is handed to the other end's protocol on the next
event-loop step (coalesced: all the writes of a step arrive as one ``data_received``), with
no system call and no wake-up of the selector. Semantics of a TCP connection:

* **Order and back pressure.** Bytes arrive in order. When more than ``HIGH`` bytes wait
  unread at an end (its reading paused, or its protocol slow to be called), the writer's
  protocol gets ``pause_writing``; ``resume_writing`` once they fall below ``LOW``.
* **Half-close.** ``write_eof`` delivers ``eof_received`` after the bytes before it; a
  protocol answering falsy closes its end, as asyncio does.
* **Close.** ``close`` delivers what was written, then the peer's ``connection_lost``;
  ``abort`` drops the undelivered bytes. Each end's ``connection_lost`` runs once.

Use from one event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["HIGH", "LOW", "MemoryTransport", "memory_pipe"]

HIGH = 256 * 1024
LOW = 64 * 1024


class MemoryTransport(asyncio.Transport):
    """One end of :func:`memory_pipe`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        super().__init__({"peername": name, "sockname": name, "socket": None})
        self._loop = loop
        self._protocol: asyncio.BaseProtocol | None = None
        self.peer: MemoryTransport | None = None
        self._inbox: list[bytes] = []
        self._inbox_size = 0
        self._eof_in = False
        self._lost_in = False
        self._scheduled = False
        self._reading = True
        self._closing = False
        self._lost = False
        self._writer_paused = False
        """Whether we told the peer's protocol to pause writing to us."""

    # -- transport API ------------------------------------------------------------------

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._schedule()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data or self.peer is None:
            return
        self.peer._arrive(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._closing or self.peer is None:
            return
        self.peer._arrive_eof()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self.peer._inbox_size if self.peer is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return LOW, HIGH

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None  # fixed limits

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self.peer is not None:
            self.peer._arrive_lost()
        self._loop.call_soon(self._connection_lost)

    def abort(self) -> None:
        if self.peer is not None:
            self.peer._inbox.clear()
            self.peer._inbox_size = 0
        self.close()

    # -- delivery -------------------------------------------------------------------------

    def _arrive(self, data: bytes) -> None:
        if self._lost or self._eof_in:
            return
        self._inbox.append(data)
        self._inbox_size += len(data)
        if self._inbox_size > HIGH and not self._writer_paused and self.peer is not None:
            self._writer_paused = True
            _call(self.peer._protocol, "pause_writing")
        self._schedule()

    def _arrive_eof(self) -> None:
        self._eof_in = True
        self._schedule()

    def _arrive_lost(self) -> None:
        self._lost_in = True
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and not self._lost:
            self._scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        if self._lost or self._protocol is None:
            return
        if self._inbox and self._reading and not self._closing:
            data = self._inbox[0] if len(self._inbox) == 1 else b"".join(self._inbox)
            self._inbox.clear()
            self._inbox_size = 0
            self._protocol.data_received(data)  # type: ignore[attr-defined]
            self._maybe_resume_writer()
        if self._inbox and not self._closing:
            return  # paused: resume_reading schedules the rest
        if self._eof_in and not self._closing:
            self._eof_in = False
            keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
            if not keep_open:
                self.close()
        if self._lost_in:
            self._lost_in = False
            self.close()

    def _maybe_resume_writer(self) -> None:
        if self._writer_paused and self._inbox_size <= LOW and self.peer is not None:
            self._writer_paused = False
            _call(self.peer._protocol, "resume_writing")

    def _connection_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._inbox.clear()
        self._inbox_size = 0
        if self._protocol is not None:
            self._protocol.connection_lost(None)


def _call(protocol: asyncio.BaseProtocol | None, method: str) -> None:
    if protocol is not None:
        getattr(protocol, method)()


def memory_pipe(first: asyncio.BaseProtocol, second: asyncio.BaseProtocol, *,
                name: str = "in-process") -> tuple[MemoryTransport, MemoryTransport]:
    """Two joined transports with ``first`` and ``second`` as their protocols
    (``connection_made`` called on both)."""
    loop = asyncio.get_running_loop()
    a, b = MemoryTransport(loop, name), MemoryTransport(loop, name)
    a.peer, b.peer = b, a
    a.set_protocol(first)
    b.set_protocol(second)
    first.connection_made(a)
    second.connection_made(b)
    return a, b
