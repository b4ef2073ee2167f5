"""The database fronts reached through the web port: ALPN ``limen-postgres`` and
``limen-mysql`` (routed by :mod:`limen.proxy.tls_router`), used by ``lmsh proxy db``.

::

    lmsh proxy db ──TLS (ALPN limen-postgres, database certificate)──▶ TLSRouter
                  ──▶ DBTLSRoutes ──▶ PostgresFront.handle_routed: startup, authenticate,
                                      decide, db agent (the db listener's code from there)
    lmsh proxy db ──TLS (ALPN limen-mysql, database certificate)──▶ TLSRouter
                  ──▶ DBTLSRoutes ──▶ MySQLFront.handle_routed: greeting without CLIENT_SSL,
                                      HandshakeResponse, the rest as on the db listener

The web listener's handshake verified any certificate the client presented against this
cluster's TLS CA (another CA's, an expired one: the handshake fails there); the fronts then
authenticate the database certificate, decide and audit exactly as for their own listeners
(:meth:`limen.proxy.db.db_route.DBRouter.connect`), so a connection without a certificate
is refused in its protocol and audited as a failed ``db.session.start``. This module only
turns the router's transport into streams and keeps the connections it started, to end them
when the proxy stops. Built by :class:`limen.proxy.db.db_proxy_service.DBProxyService`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from limen.dbproto.alpn import ALPN_MYSQL, ALPN_POSTGRES

__all__ = ["DBTLSRoutes", "StreamHandler"]

log = logging.getLogger(__name__)

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                         Coroutine[Any, Any, None]]
_READ_LIMIT = 256 * 1024  # as the postgres listener's streams


class DBTLSRoutes:
    """The router's protocol factories for the two fronts' routed handlers."""

    def __init__(self, postgres: StreamHandler, mysql: StreamHandler) -> None:
        self._handlers = {ALPN_POSTGRES: postgres, ALPN_MYSQL: mysql}
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def routes(self) -> dict[str, Callable[[], asyncio.BaseProtocol]]:
        """``ALPN -> protocol factory`` for :class:`limen.proxy.tls_router.TLSRouter`."""
        return {alpn: partial(self._protocol, handler)
                for alpn, handler in self._handlers.items()}

    def _protocol(self, handler: StreamHandler) -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=_READ_LIMIT)

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.create_task(handler(reader, writer), name="db route connection")
            self._tasks.add(task)
            self._writers.add(writer)

            def done(finished: asyncio.Task[None]) -> None:
                self._tasks.discard(finished)
                self._writers.discard(writer)
                if not finished.cancelled() and finished.exception() is not None:
                    log.error("db route: a connection failed", exc_info=finished.exception())
            task.add_done_callback(done)

        return asyncio.StreamReaderProtocol(reader, connected)

    def __len__(self) -> int:
        return len(self._tasks)

    async def stop(self) -> None:
        """End the routed connections (the router stopped accepting before)."""
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
