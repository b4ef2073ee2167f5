"""asyncssh's SSH receive path without a whole-buffer copy per packet (issue 20).

Written against asyncssh 2.24.1 (the version ``constraints.txt`` pins) and installed only on
the versions in :data:`SUPPORTED_VERSIONS`. :mod:`limen.net.sshalgs` calls :func:`install` at
import, so every Limen process that holds SSH connections (the proxy's SSH front, the tunnel
server and agent, the node agent, the web terminal, ``lmsh``) runs with it.

What it replaces: ``asyncssh.connection.SSHConnection`` keeps every received byte in one
``bytes`` object, ``_inpbuf``. ``data_received`` appends to it (``_inpbuf += data``, a copy of
everything buffered) and the packet handlers ``_recv_pkthdr`` and ``_recv_packet`` consume
the front with ``_inpbuf = _inpbuf[n:]``: two copies of the whole rest of the buffer per
packet. With a 256 KiB read holding eight 32 KiB packets, that memmove was 16% of the proxy's
CPU, as much as AES-GCM.

How: received bytes wait in a per-connection backlog (``bytes`` plus a read offset, taken
from without copying the rest), and ``_inpbuf`` is topped up from it with only what the
current handler needs: the rest of a packet header (``_recv_blocksize``), the rest of a packet
(``4 + _pktlen + _recv_macsize - _recv_blocksize``), or up to asyncssh's banner line limit
while the version line is read. asyncssh's handlers themselves are untouched: they see the
same bytes in the same order, so packet lengths, the MAC/AEAD checks, the ``_recv_handler``
state machine, the errors on a corrupted packet and rekeying are asyncssh's own. Where asyncssh
reads past what a well-formed packet needs (a packet length shorter than its header, which
slices ``_inpbuf`` with negative indices), the whole backlog moves into ``_inpbuf``, as
asyncssh had it. Replaced or wrapped methods of ``SSHConnection``:

* ``data_received``: appends to the backlog instead of ``_inpbuf``;
* ``_recv_data``: asyncssh's loop, with the top-up before each handler call;
* ``_finish_recv_packet``: after an asynchronously processed packet, asyncssh resumes parsing
  only when ``_inpbuf`` holds bytes; the wrapper also resumes when only the backlog does;
* ``_cleanup``: where asyncssh drops ``_inpbuf`` on close, the backlog goes with it.

On any other asyncssh version :func:`install` logs a warning and leaves asyncssh as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import asyncssh
from asyncssh import connection as _conn

__all__ = ["SUPPORTED_VERSIONS", "install", "installed", "uninstall"]

SUPPORTED_VERSIONS: Final = frozenset({"2.24.1"})
"""asyncssh versions whose receive path this module was written against and tested with."""

_log = logging.getLogger(__name__)

_Conn = _conn.SSHConnection
_BANNER_LIMIT: int = _conn._MAX_BANNER_LINE_LEN

_originals: dict[str, Callable[..., Any]] = {}
_recv_version: Callable[..., Any] = _Conn._recv_version
_recv_pkthdr: Callable[..., Any] = _Conn._recv_pkthdr
_recv_packet: Callable[..., Any] = _Conn._recv_packet


def _wanted(conn: Any) -> int:
    """How many more bytes the current receive handler needs in ``_inpbuf``; -1 for all."""
    handler = getattr(conn._recv_handler, "__func__", None)
    have = len(conn._inpbuf)
    if handler is _recv_pkthdr:
        return int(conn._recv_blocksize) - have
    if handler is _recv_packet:
        rest = 4 + conn._pktlen - conn._recv_blocksize
        if rest < 0:
            return -1
        return int(rest + conn._recv_macsize) - have
    if handler is _recv_version:
        return _BANNER_LIMIT - have
    # asyncssh's only other handler is ``lambda: False`` while a packet is processed
    # asynchronously: it reads nothing, so nothing moves.
    return 0


def _top_up(conn: Any) -> bool:
    """Move what the handler needs from the backlog into ``_inpbuf``; is there input?"""
    pending: bytes = conn._limen_rx
    start: int = conn._limen_rx_off
    available = len(pending) - start
    if available:
        wanted = _wanted(conn)
        take = available if wanted < 0 else min(wanted, available)
        if take > 0:
            chunk = pending[start:start + take]
            conn._inpbuf = conn._inpbuf + chunk if conn._inpbuf else chunk
            if take == available:
                conn._limen_rx, conn._limen_rx_off = b"", 0
            else:
                conn._limen_rx_off = start + take
    return bool(conn._inpbuf)


def _data_received(self: Any, data: bytes, datatype: Any = None) -> None:
    """Replaces ``SSHConnection.data_received``: append to the backlog, then parse."""
    start: int = self._limen_rx_off
    if start == len(self._limen_rx):
        self._limen_rx, self._limen_rx_off = data, 0
    else:
        self._limen_rx, self._limen_rx_off = self._limen_rx[start:] + data, 0
    self._recv_data()


def _recv_data(self: Any) -> None:
    """Replaces ``SSHConnection._recv_data``: asyncssh's loop, topping ``_inpbuf`` up first."""
    self._reset_keepalive_timer()
    try:
        while _top_up(self) and self._recv_handler():
            pass
    except asyncssh.DisconnectError as exc:
        self._send_disconnect(exc.code, exc.reason, exc.lang)
        self._force_close(exc)
    except Exception:  # asyncssh's own handling: any other error is internal
        self.internal_error()


def _finish_recv_packet(self: Any, pkttype: int, seq: int, _task: Any = None,
                        is_async: bool = False) -> None:
    """Wraps ``SSHConnection._finish_recv_packet``: resume on a non-empty backlog too."""
    resume = is_async and not self._inpbuf
    _originals["_finish_recv_packet"](self, pkttype, seq, _task, is_async)
    if resume and len(self._limen_rx) > self._limen_rx_off:
        self._recv_data()


def _cleanup(self: Any, exc: Exception | None) -> None:
    """Wraps ``SSHConnection._cleanup``: drop the backlog where asyncssh drops ``_inpbuf``."""
    _originals["_cleanup"](self, exc)
    self._limen_rx, self._limen_rx_off = b"", 0


_REPLACEMENTS: Final[dict[str, Callable[..., Any]]] = {
    "data_received": _data_received,
    "_recv_data": _recv_data,
    "_finish_recv_packet": _finish_recv_packet,
    "_cleanup": _cleanup,
}


def installed() -> bool:
    """Is the receive path in place?"""
    return bool(_originals)


def install(version: str | None = None) -> bool:
    """Put the receive path into asyncssh's ``SSHConnection`` once; True when it is in place.

    ``version`` is the running asyncssh's (given only by tests). On a version outside
    :data:`SUPPORTED_VERSIONS` this logs a warning and changes nothing.
    """
    if _originals:
        return True
    running = asyncssh.__version__ if version is None else version
    if running not in SUPPORTED_VERSIONS:
        _log.warning("asyncssh %s: not installing Limen's receive path (written for asyncssh "
                     "%s); SSH works with asyncssh's own, at more CPU per byte", running,
                     ", ".join(sorted(SUPPORTED_VERSIONS)))
        return False
    _Conn._limen_rx = b""  # type: ignore[attr-defined]
    _Conn._limen_rx_off = 0  # type: ignore[attr-defined]
    for name, replacement in _REPLACEMENTS.items():
        _originals[name] = _Conn.__dict__[name]
        setattr(_Conn, name, replacement)
    return True


def uninstall() -> None:
    """Give asyncssh its own receive path back (benchmarks and tests compare the two).

    Only for connections opened afterwards: one with bytes in its backlog would lose them.
    """
    for name, original in _originals.items():
        setattr(_Conn, name, original)
    _originals.clear()
    for name in ("_limen_rx", "_limen_rx_off"):
        if name in _Conn.__dict__:
            delattr(_Conn, name)
