"""A small pool of psycopg ``AsyncConnection``s for ``PostgresBackend``, the transaction
helper every statement group runs in, and the translation of psycopg errors into Limen's.

Called by ``limen.backend.postgres`` (and the SQL of ``limen.backend.postgres_sql`` runs on the
connections it lends). Connections are in autocommit mode; a ``Lease.transaction`` sends
``BEGIN`` and ``COMMIT`` itself, so the caller knows whether a failure happened before the
commit (nothing was written, the work may be retried on a fresh connection) or during it
(unknown: reported, never retried).

A connection goes back to the pool only when it is idle and healthy; one that failed, was
cancelled mid-query or is left inside a transaction is closed. An idle connection whose socket
turned readable (the server sent a FATAL error or closed it, e.g. it restarted) is closed
instead of being lent.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import AsyncIterator
from typing import Any, LiteralString

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from limen.errors import BadParameter, ConnectionProblem, LimenError

__all__ = ["ConnectionPool", "Lease", "translate"]

Connection = psycopg.AsyncConnection[Any]


def _sentence(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def translate(err: psycopg.Error, where: str) -> LimenError:
    """The Limen error for a psycopg error met while talking to ``where`` (a description
    without secrets, from ``limen.backend.postgres_dsn.describe``)."""
    if isinstance(err, pg_errors.DataError):
        return BadParameter(f"{where} refused a value: {_sentence(err)}")
    if isinstance(err, psycopg.OperationalError):
        return ConnectionProblem(f"{where} is unreachable or failed: {_sentence(err)}")
    return ConnectionProblem(f"{where} refused the backend's statements: {_sentence(err)}")


def _socket_readable(conn: Connection) -> bool:
    """True when an idle connection has something to read: an error or EOF from a server that
    has gone away (an idle connection is sent nothing else)."""
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


async def _close_quietly(conn: Connection) -> None:
    with contextlib.suppress(psycopg.Error, OSError):
        await conn.close()


class Lease:
    """One borrowed connection. ``reused``: it came from the pool (it may have gone stale);
    ``committing``: a ``COMMIT`` is in flight (a failure now leaves the outcome unknown)."""

    def __init__(self, conn: Connection, *, reused: bool) -> None:
        self.conn = conn
        self.reused = reused
        self.committing = False
        self.discard = False

    @contextlib.asynccontextmanager
    async def transaction(self, begin: LiteralString = "BEGIN") -> AsyncIterator[Connection]:
        """Run the block in one transaction: ``ROLLBACK`` if it raises, ``COMMIT`` if not."""
        conn = self.conn
        await conn.execute(begin)
        try:
            yield conn
        except BaseException:
            if conn.info.transaction_status in (TransactionStatus.INTRANS,
                                                TransactionStatus.INERROR):
                try:
                    await conn.execute("ROLLBACK")
                except psycopg.Error:
                    self.discard = True
            else:
                self.discard = True
            raise
        self.committing = True
        await conn.execute("COMMIT")
        self.committing = False


class ConnectionPool:
    """At most ``size`` connections lent at once to ``conninfo``; more borrowers wait."""

    def __init__(self, conninfo: str, *, size: int, where: str) -> None:
        if size < 1:
            raise BadParameter(f"the PostgreSQL pool size must be at least 1, not {size}")
        self._conninfo = conninfo
        self._where = where
        self._size = size
        self._slots: asyncio.Semaphore | None = None
        self._idle: list[Connection] = []
        self._closed = False

    async def connect(self) -> Connection:
        """A new connection of the caller's own (autocommit), e.g. for ``LISTEN``."""
        try:
            return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as err:
            raise translate(err, self._where) from err

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Lease]:
        """Borrow a connection for the block; it returns to the pool if still healthy."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        async with self._slots:
            lease = await self._take()
            try:
                yield lease
            finally:
                await self._give_back(lease)

    async def discard_idle(self) -> None:
        """Close every idle connection (after one turned out stale, its siblings are too)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close_quietly(conn)

    async def close(self) -> None:
        """Close the idle connections now and every lent one when it comes back."""
        self._closed = True
        await self.discard_idle()

    async def _take(self) -> Lease:
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or conn.broken or _socket_readable(conn):
                await _close_quietly(conn)
                continue
            return Lease(conn, reused=True)
        if self._closed:
            raise ConnectionProblem(f"the connection pool of {self._where} is closed")
        return Lease(await self.connect(), reused=False)

    async def _give_back(self, lease: Lease) -> None:
        conn = lease.conn
        healthy = (
            not lease.discard
            and not self._closed
            and not conn.closed
            and not conn.broken
            and conn.info.transaction_status == TransactionStatus.IDLE
        )
        if healthy:
            self._idle.append(conn)
        else:
            await _close_quietly(conn)
