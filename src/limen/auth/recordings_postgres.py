"""``PostgresRecordingStore``: session recordings kept in the PostgreSQL database of the
backend, so that every auth replica stores and serves the same recordings.

Chosen by ``limen.auth.recordings.recording_store`` when the backend is a
``PostgresBackend``; runs on that backend's connections (``PostgresBackend.run``). Tables
(created on first use, under an advisory lock)::

    limen_recordings(session_id text PRIMARY KEY,   one row per stored recording
                     upload uuid,                   which upload's chunks are the recording
                     meta json, size bigint, stored timestamptz)
    limen_recording_chunks(session_id text, upload uuid, n integer, data bytea)
                     PRIMARY KEY (session_id, upload, n)    CHUNK bytes each, the last shorter

An upload streams the file into chunks of a new upload id, a few per transaction (no
transaction holds a whole recording), then one transaction points the recording's row at the
new upload and drops the chunks of any other upload of that session (the recording it
replaces, an interrupted attempt). Readers therefore see either the old recording or the new
one, whole, and read its chunks in one snapshot. Every statement is safe to run twice (a
commit whose answer was lost is retried by the backend). Chunks of an upload interrupted
for good stay until that session is uploaded again (agents retry until it is stored).
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final, LiteralString

from limen.backend.postgres import PostgresBackend
from limen.backend.postgres_pool import Lease
from limen.errors import ConnectionProblem, NotFound
from limen.recording.writer import check_session_id

__all__ = ["CHUNK", "PostgresRecordingStore"]

CHUNK: Final = 1 << 20
"""Bytes per chunk row."""
_CHUNKS_PER_TRANSACTION: Final = 8
_SCHEMA_LOCK: Final = 0x4C494D454E5F5243  # pg_advisory_xact_lock key while creating the schema
_COMMIT_LOCK_CLASS: Final = 0x4C524543  # (class, hashtext(session id)) while storing one

_SCHEMA: tuple[LiteralString, ...] = (
    "CREATE TABLE IF NOT EXISTS limen_recordings ("
    " session_id text PRIMARY KEY, upload uuid NOT NULL, meta json NOT NULL,"
    " size bigint NOT NULL, stored timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS limen_recording_chunks ("
    " session_id text NOT NULL, upload uuid NOT NULL, n integer NOT NULL, data bytea NOT NULL,"
    " PRIMARY KEY (session_id, upload, n))",
)


class PostgresRecordingStore:
    """A :class:`~limen.recording.sink.RecordingStore` in ``backend``'s database."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend
        self._ready = False
        self._ready_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<PostgresRecordingStore {self.backend.description}>"

    async def upload(self, session_id: str, path: Path, meta: Mapping[str, Any]) -> None:
        """Store the recording at ``path`` (then removed) with ``meta``, replacing a stored
        recording of the same session."""
        session_id = check_session_id(session_id)
        meta_text = json.dumps(dict(meta), sort_keys=True, default=str)
        await self._schema()
        upload = uuid.uuid4()
        count = size = 0
        with await asyncio.to_thread(path.open, "rb") as handle:
            while chunks := await asyncio.to_thread(_read_chunks, handle):
                await self.backend.run(functools.partial(
                    _put_chunks, session_id=session_id, upload=upload, first=count,
                    chunks=chunks))
                count += len(chunks)
                size += sum(len(chunk) for chunk in chunks)
        await self.backend.run(functools.partial(
            _commit, session_id=session_id, upload=upload, meta=meta_text, count=count,
            size=size))
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def stored_meta(self, session_id: str) -> dict[str, Any] | None:
        return await self.metadata(session_id)

    async def metadata(self, session_id: str) -> dict[str, Any] | None:
        session_id = check_session_id(session_id)
        await self._schema()
        return await self.backend.run(functools.partial(_metadata, session_id=session_id))

    async def list_metadata(self) -> list[dict[str, Any]]:
        await self._schema()
        return await self.backend.run(_listing)

    async def read(self, session_id: str) -> bytes:
        session_id = check_session_id(session_id)
        await self._schema()
        data = await self.backend.run(functools.partial(_read, session_id=session_id))
        if data is None:
            raise NotFound(f"no recording of session {session_id}")
        return data

    async def _schema(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                await self.backend.run(_ensure_schema)
                self._ready = True


def _read_chunks(handle: BinaryIO) -> list[bytes]:
    chunks: list[bytes] = []
    while len(chunks) < _CHUNKS_PER_TRANSACTION:
        chunk = handle.read(CHUNK)
        if not chunk:
            break
        chunks.append(chunk)
    return chunks


def _meta(session_id: str, text: str) -> dict[str, Any]:
    try:
        found = json.loads(text)
    except ValueError:
        found = {}
    meta = dict(found) if isinstance(found, dict) else {}
    meta["session_id"] = session_id
    return meta


async def _ensure_schema(lease: Lease) -> None:
    cur = await lease.conn.execute(
        "SELECT to_regclass('limen_recordings') IS NOT NULL"
        " AND to_regclass('limen_recording_chunks') IS NOT NULL")
    row = await cur.fetchone()
    if row is not None and row[0]:
        return
    async with lease.transaction() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in _SCHEMA:
            await conn.execute(statement)


async def _put_chunks(lease: Lease, *, session_id: str, upload: uuid.UUID, first: int,
                      chunks: list[bytes]) -> None:
    async with lease.transaction() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO limen_recording_chunks (session_id, upload, n, data)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(session_id, upload, first + i, chunk) for i, chunk in enumerate(chunks)])


async def _commit(lease: Lease, *, session_id: str, upload: uuid.UUID, meta: str, count: int,
                  size: int) -> None:
    async with lease.transaction() as conn:
        # one commit per session at a time: the chunks counted are still there at the end
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                           (_COMMIT_LOCK_CLASS, session_id))
        cur = await conn.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM limen_recording_chunks"
            " WHERE session_id = %s AND upload = %s", (session_id, upload))
        row = await cur.fetchone()
        if row is None or (int(row[0]), int(row[1])) != (count, size):
            raise ConnectionProblem(f"the upload of recording {session_id} was cut short by "
                                    "another upload of the same session: send it again")
        await conn.execute(
            "INSERT INTO limen_recordings (session_id, upload, meta, size)"
            " VALUES (%s, %s, %s::json, %s) ON CONFLICT (session_id) DO UPDATE SET"
            " upload = excluded.upload, meta = excluded.meta, size = excluded.size,"
            " stored = now()",
            (session_id, upload, meta, size))
        await conn.execute(
            "DELETE FROM limen_recording_chunks WHERE session_id = %s AND upload <> %s",
            (session_id, upload))


async def _metadata(lease: Lease, *, session_id: str) -> dict[str, Any] | None:
    cur = await lease.conn.execute(
        "SELECT meta::text FROM limen_recordings WHERE session_id = %s", (session_id,))
    row = await cur.fetchone()
    return None if row is None else _meta(session_id, str(row[0]))


async def _listing(lease: Lease) -> list[dict[str, Any]]:
    cur = await lease.conn.execute(
        "SELECT session_id, meta::text FROM limen_recordings ORDER BY session_id")
    return [_meta(str(session_id), str(meta)) for session_id, meta in await cur.fetchall()]


async def _read(lease: Lease, *, session_id: str) -> bytes | None:
    async with lease.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") as conn:
        cur = await conn.execute(
            "SELECT upload FROM limen_recordings WHERE session_id = %s", (session_id,))
        row = await cur.fetchone()
        if row is None:
            return None
        cur = await conn.execute(
            "SELECT data FROM limen_recording_chunks WHERE session_id = %s AND upload = %s"
            " ORDER BY n", (session_id, row[0]))
        return b"".join(bytes(chunk) for chunk, in await cur.fetchall())
