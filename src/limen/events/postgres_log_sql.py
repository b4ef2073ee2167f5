"""The PostgreSQL audit log's schema and every statement it runs, as functions over one
synchronous psycopg connection. Called by :mod:`limen.events.postgres_log` (writing, search)
and :mod:`limen.events.postgres_verify` (reading a day's chain back). Schema::

    limen_audit_chains(day date PRIMARY KEY,          one row per chain: a UTC day
                       seq bigint, hash text,          its head: last position and line hash
                       checkpoint text,                the reason when that line is a checkpoint
                       unsigned integer,               lines after the last checkpoint
                       dirty_since timestamptz)        when the first of them was written
    limen_audit_lines(day date, seq bigint,            PRIMARY KEY (day, seq)
                      uid text UNIQUE, event_type text, username text, event_time timestamptz,
                                                       NULL for a checkpoint line
                      line json)                       the chained line, byte for byte

``line`` holds exactly the line a day file would hold (``limen.events.chain``): the ``json``
type keeps its input text verbatim, so the hash still covers the stored bytes, and SQL can
read it (``line->>'login'``). The other columns only index it for search.

Append-only is a convention, not a permission: the tables belong to the role Limen connects
as, and an owner can always grant itself ``UPDATE``/``DELETE`` back, so revoking them from that
role proves nothing. Edits are found by the hash chain and the signed checkpoints instead
(``lmctl audit verify --postgres``); for a log Limen's own role cannot rewrite, create these
tables as another role and grant Limen's role ``SELECT, INSERT`` on ``limen_audit_lines`` and
``SELECT, INSERT, UPDATE`` on ``limen_audit_chains`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Final, LiteralString

from psycopg import sql

from limen.events.chain import SEALING_REASONS, seed_for
from limen.events.filelog import day_file_name
from limen.events.postgres_conn import Connection

__all__ = [
    "ChainHead",
    "LineRow",
    "due_checkpoints",
    "ensure_schema",
    "insert_lines",
    "list_days",
    "lock_chain",
    "present_uids",
    "read_day",
    "search_lines",
    "store_head",
]

_SCHEMA_LOCK: Final = 0x4C494D454E5F4155  # pg_advisory_xact_lock key while creating the schema
_SEALING: Final = sorted(SEALING_REASONS)

_SCHEMA: tuple[LiteralString, ...] = (
    "CREATE TABLE IF NOT EXISTS limen_audit_chains ("
    " day date PRIMARY KEY, seq bigint NOT NULL, hash text NOT NULL, checkpoint text,"
    " unsigned integer NOT NULL, dirty_since timestamptz)",
    "CREATE TABLE IF NOT EXISTS limen_audit_lines ("
    " day date NOT NULL, seq bigint NOT NULL, uid text, event_type text, username text,"
    " event_time timestamptz, line json NOT NULL, PRIMARY KEY (day, seq))",
    "CREATE UNIQUE INDEX IF NOT EXISTS limen_audit_lines_uid ON limen_audit_lines (uid)",
    "CREATE INDEX IF NOT EXISTS limen_audit_lines_time ON limen_audit_lines (event_time)"
    " WHERE uid IS NOT NULL",
)


@dataclass(frozen=True)
class ChainHead:
    """Where one day's chain stands (a row of ``limen_audit_chains``)."""

    day: date
    seq: int
    hash: str
    checkpoint: str | None
    unsigned: int

    def advanced(self, digest: str, checkpoint: str | None = None) -> ChainHead:
        """The head after appending one line hashing to ``digest``."""
        return replace(self, seq=self.seq + 1, hash=digest, checkpoint=checkpoint,
                       unsigned=0 if checkpoint is not None else self.unsigned + 1)


@dataclass(frozen=True)
class LineRow:
    """One row of ``limen_audit_lines``; the index columns are None for a checkpoint."""

    day: date
    seq: int
    line: str
    uid: str | None = None
    event_type: str | None = None
    username: str | None = None
    event_time: datetime | None = None


def ensure_schema(conn: Connection) -> None:
    """Create the tables and indexes when missing (under an advisory lock: several replicas
    may open an empty database at once)."""
    present = conn.execute(
        "SELECT to_regclass('limen_audit_chains') IS NOT NULL"
        " AND to_regclass('limen_audit_lines') IS NOT NULL"
        " AND to_regclass('limen_audit_lines_time') IS NOT NULL").fetchone()
    if present is not None and present[0]:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in _SCHEMA:
            conn.execute(statement)


# -- writing (inside the caller's transaction) ---------------------------------------------


def lock_chain(conn: Connection, day: date, *, create: bool = True) -> ChainHead | None:
    """Lock ``day``'s chain row until the transaction ends (created at its seed when missing
    and ``create``): writers of every replica take turns, so the chain never forks."""
    if create:
        conn.execute(
            "INSERT INTO limen_audit_chains (day, seq, hash, checkpoint, unsigned)"
            " VALUES (%s, 0, %s, NULL, 0) ON CONFLICT (day) DO NOTHING",
            (day, seed_for(day_file_name(day))))
    row = conn.execute(
        "SELECT seq, hash, checkpoint, unsigned FROM limen_audit_chains WHERE day = %s"
        " FOR UPDATE", (day,)).fetchone()
    if row is None:
        return None
    return ChainHead(day, int(row[0]), str(row[1]), row[2], int(row[3]))


def present_uids(conn: Connection, uids: Sequence[str]) -> set[str]:
    """Which of ``uids`` a line already holds (a repeated delivery is written once)."""
    if not uids:
        return set()
    rows = conn.execute("SELECT uid FROM limen_audit_lines WHERE uid = ANY(%s::text[])",
                        (list(uids),)).fetchall()
    return {str(row[0]) for row in rows}


def insert_lines(conn: Connection, rows: Sequence[LineRow]) -> None:
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO limen_audit_lines"
            " (day, seq, uid, event_type, username, event_time, line)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s::json)",
            [(r.day, r.seq, r.uid, r.event_type, r.username, r.event_time, r.line)
             for r in rows])


def store_head(conn: Connection, head: ChainHead) -> None:
    """Write the chain's new head; ``dirty_since`` starts with its first unsigned line."""
    conn.execute(
        "UPDATE limen_audit_chains SET seq = %s, hash = %s, checkpoint = %s, unsigned = %s,"
        " dirty_since = CASE WHEN %s > 0 THEN coalesce(dirty_since, now()) END"
        " WHERE day = %s",
        (head.seq, head.hash, head.checkpoint, head.unsigned, head.unsigned, head.day))


def due_checkpoints(conn: Connection, today: date, interval: float) -> list[tuple[date, str]]:
    """The chains a checkpoint is due on, with its reason: ``rotate`` for an earlier day not
    sealed, ``periodic`` for one with lines unsigned for ``interval`` seconds."""
    rows = conn.execute(
        "SELECT day FROM limen_audit_chains WHERE seq > 0 AND ("
        " (day < %s AND (checkpoint IS NULL OR NOT checkpoint = ANY(%s::text[])))"
        " OR (unsigned > 0 AND dirty_since <= now() - make_interval(secs => %s)))"
        " ORDER BY day",
        (today, _SEALING, interval)).fetchall()
    return [(row[0], "rotate" if row[0] < today else "periodic") for row in rows]


# -- reading --------------------------------------------------------------------------------


def list_days(conn: Connection) -> list[date]:
    """Every day with a chain, oldest first."""
    return [row[0] for row in conn.execute(
        "SELECT day FROM limen_audit_chains WHERE seq > 0 ORDER BY day").fetchall()]


def read_day(conn: Connection, day: date) -> tuple[ChainHead | None, list[str]]:
    """``day``'s chain head and its lines in chain order, from one snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        head = conn.execute(
            "SELECT seq, hash, checkpoint, unsigned FROM limen_audit_chains WHERE day = %s",
            (day,)).fetchone()
        lines = conn.execute(
            "SELECT line::text FROM limen_audit_lines WHERE day = %s ORDER BY seq",
            (day,)).fetchall()
    found = None if head is None else ChainHead(day, int(head[0]), str(head[1]), head[2],
                                                int(head[3]))
    return found, [str(row[0]) for row in lines]


def search_lines(
    conn: Connection, *, types: Sequence[str] | None, user: str | None,
    since: datetime | None, until: datetime | None, limit: int | None, descending: bool,
) -> list[str]:
    """The lines of the events matching every given filter, ordered by event time."""
    where: list[sql.Composable] = [sql.SQL("uid IS NOT NULL")]
    params: list[object] = []
    if types is not None:
        where.append(sql.SQL("event_type = ANY(%s::text[])"))
        params.append(list(types))
    if user is not None:
        where.append(sql.SQL("username = %s"))
        params.append(user)
    if since is not None:
        where.append(sql.SQL("event_time >= %s"))
        params.append(since)
    if until is not None:
        where.append(sql.SQL("event_time < %s"))
        params.append(until)
    order = sql.SQL("DESC" if descending else "ASC")
    query = sql.SQL(
        "SELECT line::text FROM limen_audit_lines WHERE {where}"
        " ORDER BY event_time {order}, day {order}, seq {order} LIMIT %s"
    ).format(where=sql.SQL(" AND ").join(where), order=order)
    params.append(limit)
    return [str(row[0]) for row in conn.execute(query, params).fetchall()]
