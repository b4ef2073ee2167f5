"""What only ``SQLiteBackend`` promises: the file and its permissions, persistence, several
processes on one file, compaction on disk, periodic tasks, clear errors for corrupt or locked
files, a worker thread that never blocks the event loop; and ``open_backend``'s own errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import stat
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from limen.backend.base import Delete, Event, EventType, Item, Put
from limen.backend.factory import open_backend
from limen.backend.sqlite import DB_FILENAME, WATCH_FALLBACK, SQLiteBackend
from limen.errors import BadParameter, ConnectionProblem

T0 = 1_700_000_000.0

COUNTER = """
import asyncio, json, sys
from pathlib import Path
from limen.backend.factory import open_backend
from limen.errors import CompareFailed

async def main(data_dir, key, times):
    backend = open_backend(Path(data_dir), sweep_interval=None, compact_interval=None)
    revisions = []
    try:
        for _ in range(times):
            while True:
                item = await backend.get(key)
                expected = item.revision if item else 0
                value = str(int(item.value) + 1 if item else 1).encode()
                try:
                    done = await backend.compare_and_swap(key, expected, value)
                    revisions.append(done.revision)
                    break
                except CompareFailed:
                    continue
    finally:
        await backend.close()
    print(json.dumps(revisions))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

WRITER = """
import asyncio, sys
from pathlib import Path
from limen.backend.factory import open_backend

async def main(data_dir):
    backend = open_backend(Path(data_dir), sweep_interval=None, compact_interval=None)
    try:
        await backend.put("from/other-process", b"hello")
    finally:
        await backend.close()

asyncio.run(main(sys.argv[1]))
"""


@pytest.fixture
async def opened() -> AsyncIterator[Callable[..., SQLiteBackend]]:
    """Opens SQLite backends (periodic tasks off unless asked for) and closes them after."""
    backends: list[SQLiteBackend] = []

    def make(data_dir: Path, **options: Any) -> SQLiteBackend:
        options.setdefault("sweep_interval", None)
        options.setdefault("compact_interval", None)
        options.setdefault("poll_interval", 0.02)
        backend = SQLiteBackend(data_dir / DB_FILENAME, **options)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        await backend.close()


def raw(data_dir: Path) -> sqlite3.Connection:
    """A second, plain connection to the backend file, as another process would have."""
    return sqlite3.connect(data_dir / DB_FILENAME, isolation_level=None)


async def run_python(code: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``check()`` holds, failing after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 (state in another connection; no event to await)
            await asyncio.sleep(0.01)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the file -----------------------------------------------------------------------------------


async def test_creates_the_directory_0700_and_the_files_0600(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    data_dir = tmp_path / "data"
    backend = opened(data_dir)
    await backend.put("k", b"v")
    assert mode(data_dir) == 0o700
    files = sorted(p.name for p in data_dir.iterdir())
    assert files == [DB_FILENAME, f"{DB_FILENAME}-shm", f"{DB_FILENAME}-wal"]
    assert {p.name: mode(p) for p in data_dir.iterdir()} == dict.fromkeys(files, 0o600)


async def test_tightens_an_existing_file_readable_by_others(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    (tmp_path / DB_FILENAME).touch()
    os.chmod(tmp_path / DB_FILENAME, 0o644)
    opened(tmp_path)
    assert mode(tmp_path / DB_FILENAME) == 0o600


async def test_uses_wal_and_the_documented_tables(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    opened(tmp_path)
    with contextlib.closing(raw(tmp_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = {
            table: [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            for table in ("items", "events", "meta")
        }
        indexes = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
    assert columns == {
        "items": ["key", "value", "revision", "expires"],
        "events": ["seq", "revision", "key", "type", "value", "created"],
        "meta": ["name", "value"],
    }
    assert "events_revision" in indexes


async def test_state_and_revision_counter_survive_a_reopen(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    first = opened(tmp_path, clock=lambda: T0)
    await first.put("a", b"1")
    await first.atomic([], [Put("b", b"2", expires=T0 + 3600), Put("c", b"3")])
    await first.delete("c")
    await first.close()

    again = opened(tmp_path, clock=lambda: T0)
    assert await again.current_revision() == 3
    assert await again.list("") == [Item("a", b"1", 1), Item("b", b"2", 2, T0 + 3600)]
    assert (await again.put("d", b"4")).revision == 4
    async with contextlib.aclosing(again.watch("", after=0)) as events:
        replay = [await anext(events) for _ in range(5)]
    assert [(e.type, e.key, e.revision) for e in replay] == [
        (EventType.PUT, "a", 1), (EventType.PUT, "b", 2), (EventType.PUT, "c", 2),
        (EventType.DELETE, "c", 3), (EventType.PUT, "d", 4),
    ]


# -- several processes --------------------------------------------------------------------------


async def test_a_watcher_sees_a_write_from_another_process(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    backend = opened(tmp_path)
    await backend.put("from/here", b"")
    async with contextlib.aclosing(backend.watch("from/")) as events:
        await run_python(WRITER, str(tmp_path))
        async with asyncio.timeout(WATCH_FALLBACK / 2):  # noticed, not found by the fallback
            event = await anext(events)
    assert event == Event(EventType.PUT, "from/other-process", 2, b"hello")


async def test_idle_watchers_do_not_poll_each_on_their_own(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    backend = opened(tmp_path)  # poll_interval 0.02
    polls = 0
    poll = backend._store.poll

    def counted(*args: Any) -> Any:
        nonlocal polls
        polls += 1
        return poll(*args)

    backend._store.poll = counted  # type: ignore[method-assign]
    watchers = [backend.watch(f"w{i}/") for i in range(10)]
    pending = [asyncio.create_task(anext(w)) for w in watchers]
    try:
        await backend.current_revision()
        await eventually(lambda: polls >= 10)  # each watcher's first poll
        await asyncio.sleep(0.5)  # not a wait for anything: the idle window observed
        assert polls == 10  # 250 when each watcher polled every interval
        await backend.put("w3/k", b"")  # a write still wakes them all, once
        event = await asyncio.wait_for(pending[3], 5)
        assert event.key == "w3/k"
        await eventually(lambda: polls >= 20)
        await asyncio.sleep(0.3)  # the observed window again: no second wake for that write
        assert polls == 20
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for watcher in watchers:
            await watcher.aclose()  # type: ignore[attr-defined]


async def test_processes_incrementing_one_counter_lose_no_update(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    backend = opened(tmp_path)
    await backend.put("counter", b"0")
    outputs = await asyncio.gather(
        run_python(COUNTER, str(tmp_path), "counter", "15"),
        run_python(COUNTER, str(tmp_path), "counter", "15"),
        run_python(COUNTER, str(tmp_path), "counter", "15"),
    )
    revisions = [r for out in outputs for r in json.loads(out)]
    item = await backend.get("counter")
    assert item is not None
    assert int(item.value) == 45
    assert len(revisions) == len(set(revisions)) == 45
    assert item.revision == max(revisions) == await backend.current_revision()


async def test_watch_wakes_at_once_on_a_local_write(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    backend = opened(tmp_path, poll_interval=60)
    events = backend.watch("")
    async with contextlib.aclosing(events):
        await backend.put("first", b"")
        assert (await asyncio.wait_for(anext(events), 5)).key == "first"
        # Caught up, the watcher's next step is its 60 s wait: only the wake-up can end it.
        waiting = asyncio.create_task(anext(events))
        await backend.put("k", b"")
        assert await asyncio.wait_for(waiting, 5) == Event(EventType.PUT, "k", 2, b"")


# -- history and expiry -------------------------------------------------------------------------


async def test_compaction_deletes_old_events_but_never_splits_a_revision(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    backend = opened(tmp_path, history_min_events=2, history_min_age=0)
    for i in range(4):
        await backend.put(f"k{i}", b"")
    await backend.atomic([], [Put(f"batch{i}", b"") for i in range(5)])
    assert await backend.compact() == 4
    with contextlib.closing(raw(tmp_path)) as conn:
        assert conn.execute("SELECT DISTINCT revision FROM events").fetchall() == [(5,)]
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (5,)
        assert conn.execute("SELECT value FROM meta WHERE name='compacted'").fetchone() == (4,)
    with pytest.raises(BadParameter, match="revision 3 has been compacted; re-list"):
        await anext(backend.watch("", after=3))
    assert len(await backend.list("")) == 9  # compaction drops history, never items


async def test_periodic_compaction_runs_by_itself(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    backend = opened(tmp_path, history_min_events=1, history_min_age=0, compact_interval=0.02)
    for i in range(3):
        await backend.put(f"k{i}", b"")
    with contextlib.closing(raw(tmp_path)) as conn:
        await eventually(
            lambda: conn.execute("SELECT COUNT(*) FROM events").fetchone() == (1,)
        )


async def test_periodic_sweep_reports_expired_items(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    now = [T0]
    backend = opened(tmp_path, clock=lambda: now[0], sweep_interval=0.02)
    await backend.put("session", b"s", expires=T0 + 1)
    async with contextlib.aclosing(backend.watch("", after=1)) as events:
        now[0] += 2
        async with asyncio.timeout(5):
            assert await anext(events) == Event(EventType.DELETE, "session", 2, b"")
    with contextlib.closing(raw(tmp_path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM items").fetchone() == (0,)


# -- failures -----------------------------------------------------------------------------------


def limen_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("limen-sqlite")}


async def test_a_corrupt_file_gives_a_clear_error(tmp_path: Path) -> None:
    before = limen_threads()
    (tmp_path / DB_FILENAME).write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(BadParameter, match=r"backend\.sqlite is not a usable Limen backend"):
        open_backend(tmp_path)
    assert limen_threads() == before


async def test_a_newer_schema_is_refused(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    await opened(tmp_path).close()
    with contextlib.closing(raw(tmp_path)) as conn:
        conn.execute("UPDATE meta SET value = 2 WHERE name = 'schema'")
    with pytest.raises(BadParameter, match="schema version 2"):
        open_backend(tmp_path)


async def test_a_locked_file_gives_a_clear_error_instead_of_hanging(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    backend = opened(tmp_path, busy_timeout=0.2)
    await backend.put("k", b"1")
    with contextlib.closing(raw(tmp_path)) as conn:
        conn.execute("BEGIN EXCLUSIVE")
        async with asyncio.timeout(5):
            with pytest.raises(ConnectionProblem, match="locked by another process"):
                await backend.put("k", b"2")
            with pytest.raises(ConnectionProblem, match="locked"):
                open_backend(tmp_path, busy_timeout=0.2)
            assert await backend.get("k") == Item("k", b"1", 1)  # WAL readers still read
        conn.execute("ROLLBACK")
    assert (await backend.put("k", b"3")).revision == 2


async def test_a_write_waiting_for_a_lock_does_not_block_the_event_loop(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    backend = opened(tmp_path, busy_timeout=5)
    with contextlib.closing(raw(tmp_path)) as conn:
        conn.execute("BEGIN EXCLUSIVE")
        write = asyncio.create_task(backend.put("k", b"v"))
        # A write blocking the loop would hold this sleep up until it failed after 5 s.
        await asyncio.sleep(0.1)
        assert not write.done()
        conn.execute("COMMIT")
    assert (await asyncio.wait_for(write, 10)).revision == 1


async def test_a_get_reads_on_the_loop_and_sees_every_committed_write(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    backend = opened(tmp_path)
    await backend.put("k", b"1")
    store_get = backend._store.get
    backend._store.get = lambda *a: pytest.fail("a get went to the worker thread")  # type: ignore[method-assign]
    try:
        assert await backend.get("k") == Item("k", b"1", 1)
        await backend.put("k", b"2")  # this process's write, then another connection's
        assert await backend.get("k") == Item("k", b"2", 2)
        with contextlib.closing(raw(tmp_path)) as conn:
            conn.execute("UPDATE items SET value = x'33' WHERE key = 'k'")
        assert (await backend.get("k")).value == b"3"  # type: ignore[union-attr]
        assert await backend.get("missing") is None
    finally:
        backend._store.get = store_get  # type: ignore[method-assign]


async def test_a_get_the_loop_cannot_answer_goes_to_the_worker(
    tmp_path: Path, opened: Callable[..., SQLiteBackend]
) -> None:
    backend = opened(tmp_path)
    await backend.put("k", b"1")
    backend._reader.close()  # every read on it now fails, as on a busy file
    assert await backend.get("k") == Item("k", b"1", 1)


async def test_close_joins_the_worker_thread(tmp_path: Path) -> None:
    before = limen_threads()
    backend = SQLiteBackend(tmp_path / DB_FILENAME)
    await backend.put("k", b"")
    assert limen_threads() - before
    await backend.close()
    assert limen_threads() == before
    assert backend.closed


# -- factory ------------------------------------------------------------------------------------


async def test_open_backend_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    backend = open_backend(tmp_path)
    try:
        assert isinstance(backend, SQLiteBackend)
        assert backend.path == tmp_path / DB_FILENAME
        await backend.atomic([], [Put("a", b""), Delete("b")])
    finally:
        await backend.close()


@pytest.mark.parametrize(
    ("data_dir", "kind", "options", "message"),
    [
        (None, "sqlite", {}, "needs a data directory"),
        (Path("/unused"), "oracle", {}, "unknown backend kind 'oracle'"),
        (None, "memory", {"colour": "blue"}, "bad option for the memory backend"),
    ],
)
def test_open_backend_refuses_bad_arguments(
    data_dir: Path | None, kind: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadParameter, match=message):
        open_backend(data_dir, kind=kind, **options)
