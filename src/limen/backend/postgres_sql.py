"""The PostgreSQL backend's schema and every statement it runs, as functions over one borrowed
connection (``limen.backend.postgres_pool.Lease``).

Called by ``limen.backend.postgres`` only. Schema (``schema`` = 1 in the meta table)::

    limen_backend_meta(name text PRIMARY KEY, value bigint)   rows: schema, revision, compacted
    limen_backend_items(key text COLLATE "C" PRIMARY KEY, value bytea, revision bigint,
                        expires double precision)
    limen_backend_events(revision bigint, seq int, key text COLLATE "C", type text,
                         value bytea, created double precision)  PRIMARY KEY (revision, seq)

Keys use the "C" collation so that ordering and prefix ranges are code-point order whatever
the database's locale (as Python and SQLite order them).

Every write is one transaction in READ COMMITTED that first locks the ``revision`` row of the
meta table (``SELECT ... FOR UPDATE``): writers of every process and replica take turns, each
sees everything its predecessors committed, checks its conditions (expired items count as
absent), sweeps expired items (their DELETE events take a revision of their own), takes the
next revision, writes items and events, stores the counter and ``pg_notify``s the revision on
``CHANNEL`` (delivered at commit). Revisions therefore commit in order, so a watcher that has
read every event up to revision N never later finds an event below N. A watcher polls the
events table in a REPEATABLE READ snapshot, which sees the counter, the compaction mark and
the events of the same moment. Opening creates the schema under an advisory lock, so several
replicas may open an empty database at once.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, Final, LiteralString

import psycopg

from limen.backend._common import Check, compacted_error, evaluate, prefix_upper_bound
from limen.backend.base import Delete, Event, EventType, Item, Put
from limen.backend.postgres_pool import Connection, Lease
from limen.errors import BadParameter

__all__ = [
    "CHANNEL",
    "SCHEMA_VERSION",
    "compact",
    "get",
    "list_items",
    "open_schema",
    "poll",
    "revision",
    "sweep",
    "write",
]

SCHEMA_VERSION = 1
CHANNEL: Final = "limen_backend"
"""The ``LISTEN``/``NOTIFY`` channel; the payload is the committed revision."""

_SCHEMA_LOCK = 0x4C494D454E5F4B56  # pg_advisory_xact_lock key while creating the schema

_SCHEMA: tuple[LiteralString, ...] = (
    "CREATE TABLE IF NOT EXISTS limen_backend_meta ("
    " name text PRIMARY KEY, value bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS limen_backend_items ("
    ' key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL, revision bigint NOT NULL,'
    " expires double precision)",
    "CREATE INDEX IF NOT EXISTS limen_backend_items_expires"
    " ON limen_backend_items (expires) WHERE expires IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS limen_backend_events ("
    " revision bigint NOT NULL, seq integer NOT NULL, key text COLLATE \"C\" NOT NULL,"
    " type text NOT NULL, value bytea NOT NULL, created double precision NOT NULL,"
    " PRIMARY KEY (revision, seq))",
)
_META_DEFAULTS: LiteralString = (
    "INSERT INTO limen_backend_meta (name, value) VALUES"
    " ('schema', %s), ('revision', 0), ('compacted', 0) ON CONFLICT (name) DO NOTHING"
)
_LIST: dict[bool, LiteralString] = {
    True: "SELECT key, value, revision, expires FROM limen_backend_items"
    " WHERE key >= %s AND key < %s AND (expires IS NULL OR expires > %s) ORDER BY key",
    False: "SELECT key, value, revision, expires FROM limen_backend_items"
    " WHERE key >= %s AND (expires IS NULL OR expires > %s) ORDER BY key",
}
_POLL: dict[bool, LiteralString] = {
    True: "SELECT revision, key, type, value FROM limen_backend_events"
    " WHERE revision > %s AND revision <= %s AND key >= %s AND key < %s ORDER BY revision, seq",
    False: "SELECT revision, key, type, value FROM limen_backend_events"
    " WHERE revision > %s AND revision <= %s AND key >= %s ORDER BY revision, seq",
}
_UPSERT: LiteralString = (
    "INSERT INTO limen_backend_items (key, value, revision, expires)"
    " SELECT u.key, u.value, %s, u.expires"
    " FROM unnest(%s::text[], %s::bytea[], %s::float8[]) AS u(key, value, expires)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, revision = excluded.revision,"
    " expires = excluded.expires"
)
_ADD_EVENTS: LiteralString = (
    "INSERT INTO limen_backend_events (revision, seq, key, type, value, created)"
    " SELECT %s, u.seq, u.key, u.type, u.value, %s"
    " FROM unnest(%s::text[], %s::text[], %s::bytea[]) WITH ORDINALITY AS u(key, type, value, seq)"
)
_SET_REVISION: LiteralString = (
    "WITH updated AS (UPDATE limen_backend_meta SET value = %s WHERE name = 'revision'"
    " RETURNING value) SELECT pg_notify(%s, value::text) FROM updated"
)


def _key_range(prefix: str) -> tuple[bool, tuple[str, ...]]:
    upper = prefix_upper_bound(prefix)
    return (False, (prefix,)) if upper is None else (True, (prefix, upper))


def _int(row: tuple[Any, ...] | None, what: str) -> int:
    if row is None or row[0] is None:
        raise BadParameter(f"the PostgreSQL database is not a Limen backend (no {what} row)")
    return int(row[0])


# -- opening ------------------------------------------------------------------------------------


def open_schema(conninfo: str) -> int:
    """Create the schema if missing (one transaction under an advisory lock), check its
    version, and return the current revision. Synchronous: called once when opening."""
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        missing = conn.execute(
            "SELECT to_regclass('limen_backend_meta') IS NULL"
            " OR to_regclass('limen_backend_items') IS NULL"
            " OR to_regclass('limen_backend_events') IS NULL"
        ).fetchone()
        if missing is None or missing[0]:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(_META_DEFAULTS, (SCHEMA_VERSION,))
        schema = _int(
            conn.execute("SELECT value FROM limen_backend_meta WHERE name = 'schema'").fetchone(),
            "schema",
        )
        if schema != SCHEMA_VERSION:
            raise BadParameter(
                f"the PostgreSQL database has backend schema version {schema}; this Limen reads "
                f"version {SCHEMA_VERSION}"
            )
        return _int(
            conn.execute(
                "SELECT value FROM limen_backend_meta WHERE name = 'revision'"
            ).fetchone(),
            "revision",
        )


# -- reads --------------------------------------------------------------------------------------


async def revision(lease: Lease) -> int:
    cur = await lease.conn.execute(
        "SELECT value FROM limen_backend_meta WHERE name = 'revision'"
    )
    return _int(await cur.fetchone(), "revision")


async def get(lease: Lease, key: str, now: float) -> Item | None:
    cur = await lease.conn.execute(
        "SELECT value, revision, expires FROM limen_backend_items"
        " WHERE key = %s AND (expires IS NULL OR expires > %s)",
        (key, now),
    )
    row = await cur.fetchone()
    return None if row is None else Item(key, bytes(row[0]), int(row[1]), row[2])


async def list_items(lease: Lease, prefix: str, now: float) -> list[Item]:
    bounded, params = _key_range(prefix)
    cur = await lease.conn.execute(_LIST[bounded], (*params, now))
    return [Item(k, bytes(v), int(r), e) for k, v, r, e in await cur.fetchall()]


async def poll(
    lease: Lease, prefix: str, cursor: int, max_revisions: int
) -> tuple[builtins.list[Event], int, int]:
    """Events under ``prefix`` with ``cursor < revision <= cursor + max_revisions``, from one
    snapshot. Returns them, the new cursor and the latest revision; ``BadParameter`` when
    events after ``cursor`` have been compacted away."""
    bounded, params = _key_range(prefix)
    async with lease.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") as conn:
        cur = await conn.execute(
            "SELECT name, value FROM limen_backend_meta WHERE name IN ('revision', 'compacted')"
        )
        meta = {str(name): int(value) for name, value in await cur.fetchall()}
        latest, compacted = meta.get("revision", 0), meta.get("compacted", 0)
        if cursor < compacted:
            raise compacted_error(cursor)
        if latest <= cursor:
            return [], cursor, latest
        upper = min(latest, cursor + max_revisions)
        cur = await conn.execute(_POLL[bounded], (cursor, upper, *params))
        rows = await cur.fetchall()
    return [Event(EventType(t), k, int(r), bytes(v)) for r, k, t, v in rows], upper, latest


# -- writes -------------------------------------------------------------------------------------


async def write(
    lease: Lease, checks: Sequence[Check], ops: Sequence[Put | Delete], now: float
) -> int:
    """Check, sweep, apply ``ops`` under one new revision; returns it (or the current revision,
    changing nothing, when ``ops`` is empty)."""
    async with lease.transaction() as conn:
        current = await _lock_revision(conn)
        if checks:
            live = await _live_revisions(conn, [check.key for check in checks], now)
            evaluate(checks, live.get)
        if not ops:
            return current
        current, _ = await _sweep_locked(conn, current, now)
        current += 1
        await _apply(conn, current, ops, now)
        await conn.execute(_SET_REVISION, (current, CHANNEL))
    return current


async def sweep(lease: Lease, now: float) -> tuple[int, int]:
    """Delete the expired items under one revision of DELETE events; returns how many and the
    revision (0 when nothing was swept)."""
    cur = await lease.conn.execute(
        "SELECT 1 FROM limen_backend_items WHERE expires IS NOT NULL AND expires <= %s LIMIT 1",
        (now,),
    )
    if await cur.fetchone() is None:
        return 0, 0
    async with lease.transaction() as conn:
        current, swept = await _sweep_locked(conn, await _lock_revision(conn), now)
        if swept:
            await conn.execute(_SET_REVISION, (current, CHANNEL))
    return swept, current if swept else 0


async def compact(lease: Lease, now: float, min_events: int, min_age: float) -> int:
    """Drop whole revisions of events that are neither among the newest ``min_events`` events
    nor younger than ``min_age`` seconds; returns the compacted revision."""
    async with lease.transaction() as conn:
        cur = await conn.execute(
            "SELECT value FROM limen_backend_meta WHERE name = 'compacted' FOR UPDATE"
        )
        compacted = _int(await cur.fetchone(), "compacted")
        keep = await _first_kept_revision(conn, now, min_events, min_age)
        if keep is None:
            cur = await conn.execute("SELECT MAX(revision) FROM limen_backend_events")
        else:
            cur = await conn.execute(
                "SELECT MAX(revision) FROM limen_backend_events WHERE revision < %s", (keep,)
            )
        row = await cur.fetchone()
        if row is None or row[0] is None:
            return compacted
        cut = int(row[0])
        await conn.execute("DELETE FROM limen_backend_events WHERE revision <= %s", (cut,))
        compacted = max(compacted, cut)
        await conn.execute(
            "UPDATE limen_backend_meta SET value = %s WHERE name = 'compacted'", (compacted,)
        )
    return compacted


# -- internals ----------------------------------------------------------------------------------


async def _lock_revision(conn: Connection) -> int:
    """Take the writers' turn: lock the revision row and read the counter."""
    cur = await conn.execute(
        "SELECT value FROM limen_backend_meta WHERE name = 'revision' FOR UPDATE"
    )
    return _int(await cur.fetchone(), "revision")


async def _live_revisions(conn: Connection, keys: list[str], now: float) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT key, revision FROM limen_backend_items"
        " WHERE key = ANY(%s::text[]) AND (expires IS NULL OR expires > %s)",
        (keys, now),
    )
    return {str(key): int(rev) for key, rev in await cur.fetchall()}


async def _first_kept_revision(
    conn: Connection, now: float, min_events: int, min_age: float
) -> int | None:
    candidates: list[int] = []
    if min_events > 0:
        cur = await conn.execute(
            "SELECT revision FROM limen_backend_events ORDER BY revision DESC, seq DESC"
            " LIMIT 1 OFFSET %s",
            (min_events - 1,),
        )
        row = await cur.fetchone()
        candidates.append(int(row[0]) if row else 0)
    cur = await conn.execute(
        "SELECT MIN(revision) FROM limen_backend_events WHERE created > %s", (now - min_age,)
    )
    young = await cur.fetchone()
    if young is not None and young[0] is not None:
        candidates.append(int(young[0]))
    return min(candidates) if candidates else None


async def _sweep_locked(conn: Connection, current: int, now: float) -> tuple[int, int]:
    cur = await conn.execute(
        "DELETE FROM limen_backend_items WHERE expires IS NOT NULL AND expires <= %s"
        " RETURNING key",
        (now,),
    )
    expired = sorted(str(row[0]) for row in await cur.fetchall())
    if not expired:
        return current, 0
    current += 1
    await _add_events(conn, current, [(key, EventType.DELETE, b"") for key in expired], now)
    return current, len(expired)


async def _apply(
    conn: Connection, revision: int, ops: Sequence[Put | Delete], now: float
) -> None:
    deletes = [op.key for op in ops if isinstance(op, Delete)]
    present: set[str] = set()
    if deletes:
        cur = await conn.execute(
            "DELETE FROM limen_backend_items WHERE key = ANY(%s::text[]) RETURNING key",
            (deletes,),
        )
        present = {str(row[0]) for row in await cur.fetchall()}
    puts = [op for op in ops if isinstance(op, Put)]
    if puts:
        await conn.execute(
            _UPSERT,
            (revision, [p.key for p in puts], [p.value for p in puts], [p.expires for p in puts]),
        )
    events: builtins.list[tuple[str, EventType, bytes]] = []
    for op in ops:
        if isinstance(op, Put):
            events.append((op.key, EventType.PUT, op.value))
        elif op.key in present:
            events.append((op.key, EventType.DELETE, b""))
    await _add_events(conn, revision, events, now)


async def _add_events(
    conn: Connection, revision: int, events: Sequence[tuple[str, EventType, bytes]], now: float
) -> None:
    if not events:
        return
    await conn.execute(
        _ADD_EVENTS,
        (
            revision,
            now,
            [key for key, _, _ in events],
            [kind.value for _, kind, _ in events],
            [value for _, _, value in events],
        ),
    )
