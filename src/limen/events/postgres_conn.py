"""One synchronous psycopg connection to the database of the PostgreSQL audit log, opened when
first needed and reopened after it breaks, with psycopg errors turned into Limen's.

Used by :class:`~limen.events.postgres_log.PostgresLog` (one for its writer thread, one for its
readers) and ``lmctl audit verify --postgres``. The DSN (it may hold a password) is never
logged nor put in a message: errors name the database and host only (:func:`describe`).
``limen.events`` may not import ``limen.backend`` (sibling layers), hence these few lines of
its own beside ``limen.backend.postgres_pool``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from limen.errors import BadParameter, ConnectionProblem, LimenError

__all__ = ["AuditConnection", "Connection", "describe", "translate"]

Connection = psycopg.Connection[Any]
_T = TypeVar("_T")


def describe(conninfo: str) -> str:
    """``PostgreSQL database 'NAME' on HOST``: never the password or other options."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "the audit log's PostgreSQL database"
    dbname = params.get("dbname") or params.get("user") or "?"
    host = params.get("host") or params.get("hostaddr") or "the default socket"
    return f"PostgreSQL database {str(dbname)!r} on {host}"


def translate(err: psycopg.Error, where: str) -> LimenError:
    """The Limen error for a psycopg error met while talking to ``where``."""
    sentence = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, pg_errors.DataError):
        return BadParameter(f"{where} refused an audit value: {sentence}")
    if isinstance(err, psycopg.OperationalError):
        return ConnectionProblem(f"{where} is unreachable or failed: {sentence}")
    return ConnectionProblem(f"{where} refused the audit log's statements: {sentence}")


def _conninfo(dsn: str, application_name: str, connect_timeout: int) -> str:
    if not isinstance(dsn, str) or not dsn.strip():
        raise BadParameter("the audit log's PostgreSQL DSN is empty")
    defaults: dict[str, str | int] = {
        "connect_timeout": connect_timeout, "application_name": application_name,
        "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
    try:  # a parse error may echo part of a password: never quote it
        given = conninfo_to_dict(dsn)
        return make_conninfo(dsn, **{k: v for k, v in defaults.items() if k not in given})
    except psycopg.Error:
        raise BadParameter("the audit log's PostgreSQL DSN is not a valid libpq connection "
                           "string or postgresql:// URI") from None


class AuditConnection:
    """A connection for one thread at a time (``run`` holds a lock): ``run(work)`` calls
    ``work(conn)`` (autocommit; ``work`` opens its own ``conn.transaction()``). When it fails
    with a connection error the connection is dropped, and ``work`` is run once more on a new
    one if the failed one had served before (it may only have gone stale: a restart of the
    server). ``work`` must therefore be safe to repeat, even after a commit whose answer was
    lost: the audit log's transactions check what is already there first."""

    def __init__(self, dsn: str, *, application_name: str = "limen-audit",
                 connect_timeout: int = 5, statement_timeout: float = 30.0) -> None:
        self._conninfo = _conninfo(dsn, application_name, connect_timeout)
        self.description = describe(self._conninfo)
        self._statement_timeout_ms = int(statement_timeout * 1000)
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def run(self, work: Callable[[Connection], _T]) -> _T:
        with self._lock:
            for attempt in (1, 2):
                reused = self._conn is not None
                try:
                    return work(self._connection())
                except psycopg.OperationalError as err:
                    self._drop()
                    if attempt == 1 and reused:
                        continue
                    raise translate(err, self.description) from err
                except psycopg.Error as err:
                    if self._conn is not None and self._conn.broken:
                        self._drop()
                    raise translate(err, self.description) from err
            raise AssertionError("unreachable: the second attempt returns or raises")

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connection(self) -> Connection:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._drop()
        conn = psycopg.connect(self._conninfo, autocommit=True)
        try:
            conn.execute("SELECT set_config('statement_timeout', %s, false)",
                         (str(self._statement_timeout_ms),))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                conn.close()
