"""The synchronous half of ``SQLiteBackend``: one ``sqlite3`` connection, the schema, and every
transaction. Each method is called on the backend's single worker thread only.

Called by ``limen.backend.sqlite``; nothing else touches the database file.

Schema (``schema`` = 1 in ``meta``)::

    meta(name TEXT PRIMARY KEY, value INTEGER)   rows: schema, revision, compacted
    items(key TEXT PRIMARY KEY, value BLOB, revision INTEGER, expires REAL)
    events(seq INTEGER PRIMARY KEY, revision INTEGER, key TEXT, type TEXT, value BLOB,
           created REAL)                          indexed by revision; seq orders a revision

Every write is one ``BEGIN IMMEDIATE`` transaction: check the conditions (expired items count
as absent), sweep expired items (their DELETE events take a revision of their own), take the
next revision, write the items and the events, store the counter. Several processes may open
the same file: SQLite's locks serialise the writers and WAL lets readers (watch polls) run
beside them.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from limen.backend._common import Check, compacted_error, evaluate, prefix_upper_bound
from limen.backend.base import Delete, Event, EventType, Item, Put
from limen.errors import BadParameter, ConnectionProblem, LimenError

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL, expires REAL);
CREATE INDEX IF NOT EXISTS items_expires ON items(expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, revision INTEGER NOT NULL, key TEXT NOT NULL,
    type TEXT NOT NULL, value BLOB NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_revision ON events(revision);
"""

_UPSERT = (
    "INSERT INTO items(key, value, revision, expires) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value, revision = excluded.revision, "
    "expires = excluded.expires"
)
_ADD_EVENT = "INSERT INTO events(revision, key, type, value, created) VALUES (?, ?, ?, ?, ?)"
# Queries over a key prefix, by whether the prefix has an upper bound (only "" has none); both
# forms are range scans of the primary key index.
_LIST_SQL = {
    True: "SELECT key, value, revision, expires FROM items WHERE key >= ? AND key < ? "
    "AND (expires IS NULL OR expires > ?) ORDER BY key",
    False: "SELECT key, value, revision, expires FROM items WHERE key >= ? "
    "AND (expires IS NULL OR expires > ?) ORDER BY key",
}
_POLL_SQL = {
    True: "SELECT revision, key, type, value FROM events WHERE revision > ? AND revision <= ? "
    "AND key >= ? AND key < ? ORDER BY revision, seq",
    False: "SELECT revision, key, type, value FROM events WHERE revision > ? AND revision <= ? "
    "AND key >= ? ORDER BY revision, seq",
}
_IN_CHUNK = 500  # well under SQLite's host-parameter limit


def _prepare_file(path: Path) -> None:
    """Create the parent directory (0700) and the database file (0600) if missing, and take
    group/other permissions away from an existing file: it holds the cluster's secrets."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class SQLiteStore:
    """The database file at ``path``; raises ``BadParameter`` for a file that is not a Limen
    backend and ``ConnectionProblem`` when the file stays locked for ``busy_timeout`` seconds."""

    def __init__(self, path: Path, *, busy_timeout: float) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        try:
            _prepare_file(path)
        except OSError as err:
            raise BadParameter(f"cannot open the backend database {path}: {err}") from err
        self._conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        try:
            with self._errors():
                self._setup()
        except BaseException:
            self._conn.close()
            raise

    def _setup(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BadParameter(f"{self.path}: cannot switch the database to WAL mode ({mode})")
        # FULL rather than NORMAL: the store holds security state (single-use tokens, lockout
        # counters, CA rotation) that must not roll back after a power loss, and writes are few
        # and small (a 10,000-object sync is one transaction), so one fsync per commit is cheap.
        conn.execute("PRAGMA synchronous = FULL")
        with self._transaction():
            self._create_schema()
            schema = self._meta("schema")
            if schema != SCHEMA_VERSION:
                raise BadParameter(
                    f"{self.path} has backend schema version {schema}; this Limen reads "
                    f"version {SCHEMA_VERSION}"
                )

    def _create_schema(self) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._conn.execute(statement)
        self._conn.executemany(
            "INSERT OR IGNORE INTO meta(name, value) VALUES (?, ?)",
            [("schema", SCHEMA_VERSION), ("revision", 0), ("compacted", 0)],
        )

    # -- error translation and transactions ------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except LimenError:
            raise
        except sqlite3.OperationalError as err:
            text = str(err)
            if "locked" in text or "busy" in text:
                raise ConnectionProblem(
                    f"the backend database {self.path} is locked by another process or "
                    f"connection (gave up after {self._busy_timeout:g}s)"
                ) from err
            raise ConnectionProblem(f"the backend database {self.path} failed: {text}") from err
        except sqlite3.DatabaseError as err:
            if type(err) is not sqlite3.DatabaseError:  # integrity/programming: a bug, not the file
                raise
            raise BadParameter(
                f"{self.path} is not a usable Limen backend database ({err}); move it away or "
                "restore it from a backup"
            ) from err

    @contextlib.contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
        self._conn.execute(begin)
        try:
            yield
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _meta(self, name: str) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise BadParameter(f"{self.path} is not a Limen backend database (no {name} row)")
        return int(row[0])

    def _set_meta(self, name: str, value: int) -> None:
        self._conn.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name))

    # -- reads -----------------------------------------------------------------------------

    def revision(self) -> int:
        with self._errors():
            return self._meta("revision")

    def get(self, key: str, now: float) -> Item | None:
        with self._errors():
            row = self._conn.execute(
                "SELECT value, revision, expires FROM items "
                "WHERE key = ? AND (expires IS NULL OR expires > ?)",
                (key, now),
            ).fetchone()
        return None if row is None else Item(key, bytes(row[0]), row[1], row[2])

    def list(self, prefix: str, now: float) -> list[Item]:
        bounded, params = _key_range(prefix)
        with self._errors():
            rows = self._conn.execute(_LIST_SQL[bounded], (*params, now)).fetchall()
        return [Item(k, bytes(v), r, e) for k, v, r, e in rows]

    def poll(
        self, prefix: str, cursor: int, max_revisions: int
    ) -> tuple[builtins.list[Event], int, int]:
        """Events under ``prefix`` with ``cursor < revision <= cursor + max_revisions``, from
        one snapshot. Returns them, the new cursor and the latest revision; ``BadParameter``
        when events after ``cursor`` have been compacted away."""
        bounded, params = _key_range(prefix)
        with self._errors(), self._transaction("BEGIN"):
            latest, compacted = self._meta("revision"), self._meta("compacted")
            if cursor < compacted:
                raise compacted_error(cursor)
            if latest <= cursor:
                return [], cursor, latest
            upper = min(latest, cursor + max_revisions)
            rows = self._conn.execute(
                _POLL_SQL[bounded], (cursor, upper, *params)
            ).fetchall()
        return [Event(EventType(t), k, r, bytes(v)) for r, k, t, v in rows], upper, latest

    # -- writes ----------------------------------------------------------------------------

    def write(self, checks: Sequence[Check], ops: Sequence[Put | Delete], now: float) -> int:
        """Check, sweep, apply ``ops`` under one new revision; returns it (or the current
        revision, changing nothing, when ``ops`` is empty)."""
        with self._errors(), self._transaction():
            evaluate(checks, lambda key: self._current(key, now))
            revision = self._meta("revision")
            if ops:
                revision, _ = self._sweep_locked(revision, now)
                revision += 1
                self._apply(revision, ops, now)
                self._set_meta("revision", revision)
        return revision

    def sweep(self, now: float) -> int:
        """Delete the expired items under one revision of DELETE events; returns how many."""
        with self._errors():
            if not self._conn.execute(
                "SELECT 1 FROM items WHERE expires IS NOT NULL AND expires <= ? LIMIT 1", (now,)
            ).fetchone():
                return 0
            with self._transaction():
                revision, swept = self._sweep_locked(self._meta("revision"), now)
                self._set_meta("revision", revision)
        return swept

    def compact(self, now: float, min_events: int, min_age: float) -> int:
        """Drop whole revisions of events that are neither among the newest ``min_events``
        events nor younger than ``min_age`` seconds; returns the compacted revision."""
        with self._errors(), self._transaction():
            compacted = self._meta("compacted")
            keep = self._first_kept_revision(now, min_events, min_age)
            if keep is None:
                cut = self._conn.execute("SELECT MAX(revision) FROM events").fetchone()[0]
            else:
                cut = self._conn.execute(
                    "SELECT MAX(revision) FROM events WHERE revision < ?", (keep,)
                ).fetchone()[0]
            if cut is None:
                return compacted
            self._conn.execute("DELETE FROM events WHERE revision <= ?", (cut,))
            compacted = max(compacted, int(cut))
            self._set_meta("compacted", compacted)
        return compacted

    def close(self) -> None:
        self._conn.close()

    # -- internals -------------------------------------------------------------------------

    def _first_kept_revision(self, now: float, min_events: int, min_age: float) -> int | None:
        conn = self._conn
        candidates = []
        if min_events > 0:
            row = conn.execute(
                "SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?", (min_events - 1,)
            ).fetchone()
            candidates.append(row[0] if row else 0)
        young = conn.execute(
            "SELECT MIN(seq) FROM events WHERE created > ?", (now - min_age,)
        ).fetchone()[0]
        if young is not None:
            candidates.append(young)
        if not candidates:
            return None
        row = conn.execute(
            "SELECT revision FROM events WHERE seq >= ? ORDER BY seq LIMIT 1", (min(candidates),)
        ).fetchone()
        return None if row is None else int(row[0])

    def _current(self, key: str, now: float) -> int | None:
        row = self._conn.execute(
            "SELECT revision FROM items WHERE key = ? AND (expires IS NULL OR expires > ?)",
            (key, now),
        ).fetchone()
        return None if row is None else int(row[0])

    def _sweep_locked(self, revision: int, now: float) -> tuple[int, int]:
        expired = [
            row[0]
            for row in self._conn.execute(
                "SELECT key FROM items WHERE expires IS NOT NULL AND expires <= ? ORDER BY key",
                (now,),
            )
        ]
        if not expired:
            return revision, 0
        revision += 1
        self._conn.executemany("DELETE FROM items WHERE key = ?", ((k,) for k in expired))
        self._conn.executemany(
            _ADD_EVENT, ((revision, k, EventType.DELETE.value, b"", now) for k in expired)
        )
        return revision, len(expired)

    def _apply(self, revision: int, ops: Sequence[Put | Delete], now: float) -> None:
        conn = self._conn
        deletes = [op.key for op in ops if isinstance(op, Delete)]
        present = self._present(deletes)
        conn.executemany(
            _UPSERT,
            ((op.key, op.value, revision, op.expires) for op in ops if isinstance(op, Put)),
        )
        conn.executemany("DELETE FROM items WHERE key = ?", ((k,) for k in present))
        events: builtins.list[tuple[int, str, str, bytes, float]] = []
        for op in ops:
            if isinstance(op, Put):
                events.append((revision, op.key, EventType.PUT.value, op.value, now))
            elif op.key in present:
                events.append((revision, op.key, EventType.DELETE.value, b"", now))
        conn.executemany(_ADD_EVENT, events)

    def _present(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0]
                for row in self._conn.execute(
                    f"SELECT key FROM items WHERE key IN ({marks})", chunk  # noqa: S608 (placeholders only)
                )
            )
        return found


def _key_range(prefix: str) -> tuple[bool, tuple[str, ...]]:
    """Whether ``prefix`` has an upper bound, and the key range parameters for the queries."""
    upper = prefix_upper_bound(prefix)
    return (False, (prefix,)) if upper is None else (True, (prefix, upper))
