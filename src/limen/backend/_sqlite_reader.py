"""Point reads of ``SQLiteBackend`` on the event loop's own thread: a second, read-only
``sqlite3`` connection to the same file.

A ``get`` of one key through the worker thread costs a thread hop each way (about 65 µs of
CPU, against 5 µs for the read itself on a warm file), and certificate issuance makes two of
them per certificate pair (the user, then its roles). WAL lets this connection read beside the
worker's writes without waiting: every statement runs in its own read transaction, so a read
sees every write committed before it, this process's and other processes'. When SQLite cannot
answer at once (``SQLITE_BUSY`` during a WAL recovery or a checkpoint's restart, a file
problem), :meth:`SQLiteReader.get` raises :class:`AskTheWorker` and the backend asks the
worker thread, which waits for the lock and reports errors in the backend's terms. The same
connection tells the backend when the file changed (:meth:`SQLiteReader.data_version`). Listing
stays on the worker: a prefix may hold thousands of items. Called by
``limen.backend.sqlite``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from limen.backend.base import Item

__all__ = ["AskTheWorker", "SQLiteReader"]


class AskTheWorker(Exception):
    """The reader could not answer without waiting: ask the worker thread."""

_GET = ("SELECT value, revision, expires FROM items "
        "WHERE key = ? AND (expires IS NULL OR expires > ?)")


class SQLiteReader:
    """The read-only connection; used from one thread at a time (the backend's event loop)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=0, isolation_level=None,
                                     check_same_thread=False)
        self._conn.execute("PRAGMA query_only = 1")

    def get(self, key: str, now: float) -> Item | None:
        try:
            row = self._conn.execute(_GET, (key, now)).fetchone()
        except sqlite3.Error as err:
            raise AskTheWorker(str(err)) from err
        return None if row is None else Item(key, bytes(row[0]), row[1], row[2])

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes when another connection (the worker's,
        another process's) commits; :class:`AskTheWorker` when SQLite cannot answer at once."""
        try:
            row = self._conn.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error as err:
            raise AskTheWorker(str(err)) from err
        return int(row[0])

    def close(self) -> None:
        self._conn.close()
