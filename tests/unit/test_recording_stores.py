"""Auth's recording stores (``limen.recording.sink.RecordingStore``): the data directory's and
PostgreSQL's (``limen.auth.recordings_postgres``), with the same behaviour — upload, read back,
metadata, listing, replacement, a missing recording — and the PostgreSQL one shared by two
backends ("replicas") on one database, for recordings of several chunks;
``limen.auth.recordings.recording_store`` chooses by backend.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_backend_db import backend_database, reset_backend

from dbservers import PostgresServer
from limen.auth.recordings import recording_store
from limen.auth.recordings_postgres import CHUNK, PostgresRecordingStore
from limen.backend.memory import MemoryBackend
from limen.backend.postgres import PostgresBackend
from limen.errors import BadParameter, NotFound
from limen.recording.sink import LocalDirectorySink, RecordingStore

Opener = Callable[[], Awaitable[RecordingStore]]


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:
    return backend_database(postgres_server, "limen_recordings", icu=False)


@pytest.fixture
async def backends(pg_dsn: str) -> AsyncIterator[Callable[[], PostgresBackend]]:
    reset_backend(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS limen_recordings, limen_recording_chunks")
    opened: list[PostgresBackend] = []

    def make() -> PostgresBackend:
        backend = PostgresBackend(pg_dsn, sweep_interval=None, compact_interval=None)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        await backend.close()


@pytest.fixture(params=["directory", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], RecordingStore]:
    """Two handles on one store: the same directory, or two backends on one database."""
    if request.param == "directory":
        return lambda: LocalDirectorySink(tmp_path / "recordings")
    make = request.getfixturevalue("backends")
    return lambda: PostgresRecordingStore(make())


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def test_a_recording_stored_through_one_handle_is_read_through_the_other(
        stores: Callable[[], RecordingStore], tmp_path: Path) -> None:
    writer, reader = stores(), stores()
    meta: dict[str, Any] = {"user": "alice", "server_id": "node-a", "start": "2026-01-01T00:00Z"}
    cast = b'{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "hi"]\n'
    source = _file(tmp_path, "upload.cast", cast)
    await writer.upload("sess-1", source, meta)
    assert not source.exists()  # the store took it
    assert await reader.read("sess-1") == cast
    assert await reader.metadata("sess-1") == {**meta, "session_id": "sess-1"}
    assert await reader.stored_meta("sess-1") == {**meta, "session_id": "sess-1"}
    await writer.upload("sess-0", _file(tmp_path, "other.cast", b"{}\n"), {"user": "bob"})
    assert [m["session_id"] for m in await reader.list_metadata()] == ["sess-0", "sess-1"]

    replaced = cast + b'[0.2, "o", "more"]\n'
    await reader.upload("sess-1", _file(tmp_path, "again.cast", replaced), {**meta, "end": "x"})
    assert await writer.read("sess-1") == replaced
    assert (await writer.metadata("sess-1") or {})["end"] == "x"

    assert await reader.metadata("sess-9") is None
    assert await reader.stored_meta("sess-9") is None
    with pytest.raises(NotFound):
        await reader.read("sess-9")
    with pytest.raises(BadParameter):
        await reader.read("../escape")


async def test_a_recording_of_many_chunks_comes_back_whole(
        backends: Callable[[], PostgresBackend], tmp_path: Path, pg_dsn: str) -> None:
    writer, reader = PostgresRecordingStore(backends()), PostgresRecordingStore(backends())
    data = os.urandom(9 * CHUNK + 123)  # more chunks than one transaction takes
    await writer.upload("big", _file(tmp_path, "big.cast", data), {"user": "alice"})
    assert await reader.read("big") == data
    await writer.upload("big", _file(tmp_path, "small.cast", b"small"), {"user": "alice"})
    assert await reader.read("big") == b"small"
    with psycopg.connect(pg_dsn) as conn:  # the replaced recording's chunks are gone
        rows = conn.execute("SELECT count(*) FROM limen_recording_chunks").fetchall()
    assert rows == [(1,)]


async def test_the_store_follows_the_backend(backends: Callable[[], PostgresBackend],
                                             tmp_path: Path) -> None:
    assert isinstance(recording_store(backends(), tmp_path), PostgresRecordingStore)
    local = recording_store(MemoryBackend(), tmp_path)
    assert isinstance(local, LocalDirectorySink)
    assert local.directory == tmp_path
