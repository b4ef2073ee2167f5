"""What only ``PostgresBackend`` promises (the contract itself runs in
``test_backend_contract``): the schema as an ordinary role, several processes and replicas on
one database (watchers across processes and across a PostgreSQL restart, compare-and-swap and
``atomic`` under concurrent writers, concurrent first opens, sweeps by two replicas at once,
NOTIFY wake-ups), clean errors (malformed DSN, unreachable or busy database, keys PostgreSQL
cannot store) that never show the DSN; where the DSN comes from; ``lmctl backend migrate``.

The database (one for the module, emptied before each test) lives on the session's PostgreSQL
(``tests/dbservers.py``), which one test stops and starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from click.testing import CliRunner
from pg_backend_db import ROLE, backend_database, reset_backend

from dbservers import PostgresServer
from limen.backend.base import Condition, Delete, Event, EventType, Item, Put
from limen.backend.factory import open_backend
from limen.backend.postgres import PostgresBackend
from limen.backend.postgres_dsn import (
    DSN_ENV,
    backend_options,
    conninfo_with_defaults,
    describe,
    read_dsn,
)
from limen.backend.sqlite import DB_FILENAME, SQLiteBackend
from limen.cli.datadir_lock import hold_data_dir
from limen.cli.lmctl import cli
from limen.config import BackendSettings
from limen.errors import BadParameter, CompareFailed, ConnectionProblem

T0 = 1_700_000_000.0

WATCHER = """
import asyncio, json, sys
from limen.backend.factory import open_backend

async def main(dsn, after, stop):
    backend = open_backend(None, kind="postgres", dsn=dsn, sweep_interval=None,
                           compact_interval=None, poll_interval=0.2)
    try:
        async for event in backend.watch("", after=int(after)):
            print(json.dumps([event.type.value, event.key, event.revision, event.value.hex()]),
                  flush=True)
            if event.key == stop:
                break
    finally:
        await backend.close()

asyncio.run(main(*sys.argv[1:]))
"""

COUNTER = """
import asyncio, json, sys
from limen.backend.factory import open_backend
from limen.errors import CompareFailed

async def main(dsn, key, times):
    backend = open_backend(None, kind="postgres", dsn=dsn, sweep_interval=None,
                           compact_interval=None)
    revisions = []
    try:
        for _ in range(int(times)):
            while True:
                item = await backend.get(key)
                expected = item.revision if item else 0
                value = str(int(item.value) + 1 if item else 1).encode()
                try:
                    done = await backend.compare_and_swap(key, expected, value)
                except CompareFailed:
                    continue
                revisions.append(done.revision)
                break
    finally:
        await backend.close()
    print(json.dumps(revisions))

asyncio.run(main(*sys.argv[1:]))
"""

Summary = tuple[str, str, int, bytes]


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:
    return backend_database(postgres_server, "limen_backend_postgres")


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    reset_backend(pg_dsn)
    return pg_dsn


@pytest.fixture
async def opened(dsn: str) -> AsyncIterator[Callable[..., PostgresBackend]]:
    """Opens backends on the module's database (periodic tasks off unless asked for) and
    closes them after the test."""
    backends: list[PostgresBackend] = []

    def make(**options: Any) -> PostgresBackend:
        options.setdefault("sweep_interval", None)
        options.setdefault("compact_interval", None)
        backend = PostgresBackend(dsn, **options)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        await backend.close()


def raw(dsn: str) -> psycopg.Connection[Any]:
    """A plain connection to the backend's database, as another program would have."""
    return psycopg.connect(dsn, autocommit=True)


def watching(
    backend: PostgresBackend, prefix: str = "", after: int | None = None
) -> contextlib.aclosing[AsyncGenerator[Event, None]]:
    """``backend.watch`` closed at the end of the ``async with``."""
    return contextlib.aclosing(
        cast(AsyncGenerator[Event, None], backend.watch(prefix, after=after))
    )


async def next_event(events: AsyncIterator[Event]) -> Event:
    return await anext(events)


def summary(events: list[Event]) -> list[Summary]:
    return [(e.type.value, e.key, e.revision, e.value) for e in events]


async def take_until(events: AsyncIterator[Event], key: str, within: float = 10) -> list[Event]:
    """Every event up to and including the first one for ``key``."""
    out: list[Event] = []
    async with asyncio.timeout(within):
        while True:
            out.append(await anext(events))
            if out[-1].key == key:
                return out


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
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 (state in the database; no event to await)
            await asyncio.sleep(0.02)


class Recorder:
    """Writes through a backend and remembers the events they must produce."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend
        self.events: list[Summary] = []

    async def put(self, key: str, value: bytes) -> None:
        item = await self.backend.put(key, value)
        self.events.append(("put", key, item.revision, value))

    async def delete(self, key: str) -> None:
        await self.backend.delete(key)
        self.events.append(("delete", key, await self.backend.current_revision(), b""))

    async def atomic(self, puts: dict[str, bytes]) -> None:
        revision = await self.backend.atomic([], [Put(k, v) for k, v in puts.items()])
        self.events += [("put", k, revision, v) for k, v in puts.items()]


# -- the schema ---------------------------------------------------------------------------------


async def test_creates_the_documented_tables_as_an_ordinary_role(
    dsn: str, opened: Callable[..., PostgresBackend]
) -> None:
    backend = opened()
    await backend.put("k", b"v", expires=T0 * 2)
    with raw(dsn) as conn:
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert superuser.fetchone() == (False,)
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, collation_name"
            " FROM information_schema.columns WHERE table_name LIKE 'limen_backend_%'"
            " ORDER BY table_name, ordinal_position"
        ).fetchall()
        meta = dict(conn.execute("SELECT name, value FROM limen_backend_meta").fetchall())
    assert columns == [
        ("limen_backend_events", "revision", "bigint", None),
        ("limen_backend_events", "seq", "integer", None),
        ("limen_backend_events", "key", "text", "C"),
        ("limen_backend_events", "type", "text", None),
        ("limen_backend_events", "value", "bytea", None),
        ("limen_backend_events", "created", "double precision", None),
        ("limen_backend_items", "key", "text", "C"),
        ("limen_backend_items", "value", "bytea", None),
        ("limen_backend_items", "revision", "bigint", None),
        ("limen_backend_items", "expires", "double precision", None),
        ("limen_backend_meta", "name", "text", None),
        ("limen_backend_meta", "value", "bigint", None),
    ]
    assert meta == {"schema": 1, "revision": 1, "compacted": 0}


def test_replicas_opening_an_empty_database_at_once_all_succeed(
    postgres_server: PostgresServer,
) -> None:
    fresh = backend_database(postgres_server, "limen_backend_open_race")
    start = threading.Barrier(6)
    revisions: list[int] = []
    failures: list[BaseException] = []

    def open_one() -> None:
        start.wait()
        try:
            backend = PostgresBackend(fresh, sweep_interval=None, compact_interval=None)
            revisions.append(asyncio.run(_revision_and_close(backend)))
        except BaseException as err:  # reported below
            failures.append(err)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert revisions == [0] * 6
    with raw(fresh) as conn:
        assert conn.execute("SELECT count(*) FROM limen_backend_meta").fetchone() == (3,)


async def _revision_and_close(backend: PostgresBackend) -> int:
    try:
        return await backend.current_revision()
    finally:
        await backend.close()


async def test_a_newer_schema_is_refused(dsn: str, opened: Callable[..., PostgresBackend]) -> None:
    await opened().close()
    with raw(dsn) as conn:
        conn.execute("UPDATE limen_backend_meta SET value = 2 WHERE name = 'schema'")
    try:
        with pytest.raises(BadParameter, match="schema version 2; this Limen reads version 1"):
            PostgresBackend(dsn)
    finally:
        with raw(dsn) as conn:
            conn.execute("UPDATE limen_backend_meta SET value = 1 WHERE name = 'schema'")


# -- several processes and replicas ------------------------------------------------------------


async def test_a_watcher_in_another_process_sees_every_change_in_order_across_a_restart(
    dsn: str, opened: Callable[..., PostgresBackend], postgres_server: PostgresServer
) -> None:
    writer = Recorder(opened())
    seen: list[Summary] = []
    async with contextlib.AsyncExitStack() as stack:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WATCHER, dsn, "0", "end",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        stack.push_async_callback(_reap, proc)
        # A watcher in this process too (another backend), following through the restart.
        here = await stack.enter_async_context(watching(opened(), after=0))
        local = asyncio.create_task(take_until(here, "end", within=60))
        stack.callback(local.cancel)

        async def read_until(key: str) -> None:
            assert proc.stdout is not None
            async with asyncio.timeout(20):
                while not seen or seen[-1][1] != key:
                    line = await proc.stdout.readline()
                    assert line, "the watcher process ended early"
                    kind, name, revision, value = json.loads(line)
                    seen.append((kind, name, revision, bytes.fromhex(value)))

        await writer.put("a", b"1")
        await writer.atomic({"b": b"2", "c": b"3"})
        await writer.delete("a")
        await writer.put("before-restart", b"")
        await read_until("before-restart")  # the other process is following live

        probe = opened()
        assert await probe.get("b") == Item("b", b"2", 2)
        port = postgres_server.port
        await asyncio.to_thread(postgres_server.stop)
        with pytest.raises(ConnectionProblem, match="unreachable"):
            await probe.put("lost", b"")
        with pytest.raises(ConnectionProblem, match="unreachable"):
            await probe.get("b")
        await asyncio.to_thread(postgres_server.start)
        assert postgres_server.port == port

        # The writer's pooled connection died with the server: its first write after the
        # restart must not fail because of it.
        await writer.put("b", b"after")
        assert await probe.get("b") == Item("b", b"after", 5)
        await writer.atomic({"d": b"4", "e": b"5"})
        await writer.delete("c")
        await writer.put("end", b"")
        await read_until("end")
        assert summary(await local) == writer.events
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    assert seen == writer.events
    assert [e[2] for e in seen] == sorted(e[2] for e in seen)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_atomic_from_two_replicas_on_one_condition_never_both_succeed(
    opened: Callable[..., PostgresBackend],
) -> None:
    first, second = opened(), opened()
    for round_ in range(30):
        key = f"leases/{round_}"
        outcomes = await asyncio.gather(
            first.atomic([Condition(key, 0)], [Put(key, b"first"), Put(f"{key}/by", b"1")]),
            second.atomic([Condition(key, 0)], [Put(key, b"second"), Put(f"{key}/by", b"2")]),
            return_exceptions=True,
        )
        won = [o for o in outcomes if isinstance(o, int)]
        lost = [o for o in outcomes if isinstance(o, CompareFailed)]
        assert len(won) == 1, outcomes
        assert len(lost) == 1, outcomes
        winner = b"first" if isinstance(outcomes[0], int) else b"second"
        stored = await second.get(key)
        assert stored == Item(key, winner, won[0])
        by = await first.get(f"{key}/by")
        assert by is not None
        assert by.value == (b"1" if winner == b"first" else b"2")


async def test_processes_incrementing_one_counter_lose_no_update(
    dsn: str, opened: Callable[..., PostgresBackend]
) -> None:
    backend = opened()
    outputs = await asyncio.gather(*(run_python(COUNTER, dsn, "counter", "10") for _ in range(3)))
    revisions = [r for out in outputs for r in json.loads(out)]
    item = await backend.get("counter")
    assert item is not None
    assert int(item.value) == 30
    assert len(revisions) == len(set(revisions)) == 30
    assert item.revision == max(revisions) == await backend.current_revision()


async def test_a_write_by_another_replica_wakes_a_watcher_through_notify(
    dsn: str, opened: Callable[..., PostgresBackend]
) -> None:
    name = "limen-notify-test"

    def listening() -> bool:
        with raw(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                " AND query = 'LISTEN limen_backend' AND state = 'idle'", (name,)
            ).fetchone()
        return row == (1,)

    reader = PostgresBackend(f"{dsn} application_name={name}", poll_interval=60,
                             sweep_interval=None, compact_interval=None)
    writing = opened(poll_interval=60)
    try:
        async with watching(reader) as events:
            first = asyncio.create_task(next_event(events))
            await eventually(listening)
            # Caught up and listening: a 60 s poll wait that only a notification can end.
            await writing.put("from/other-replica", b"hi")
            assert await asyncio.wait_for(first, 5) == Event(
                EventType.PUT, "from/other-replica", 1, b"hi"
            )
    finally:
        await reader.close()


async def test_two_replicas_sweeping_at_once_report_each_expiry_once(
    opened: Callable[..., PostgresBackend],
) -> None:
    now = [T0]
    first, second = opened(clock=lambda: now[0]), opened(clock=lambda: now[0])
    await first.atomic([], [Put(f"sessions/{i}", b"", expires=T0 + 1) for i in range(20)])
    now[0] += 2
    swept = await asyncio.gather(first.sweep(), second.sweep(), first.sweep(), second.sweep())
    assert sum(swept) == 20
    async with watching(first, after=1) as events:
        await first.put("end", b"")
        deletes = (await take_until(events, "end"))[:-1]
    assert sorted(e.key for e in deletes) == sorted(f"sessions/{i}" for i in range(20))
    assert {e.type for e in deletes} == {EventType.DELETE}
    assert await second.list("sessions/") == []


async def test_periodic_sweep_reports_expired_items(
    dsn: str, opened: Callable[..., PostgresBackend]
) -> None:
    now = [T0]
    backend = opened(clock=lambda: now[0], sweep_interval=0.02)
    await backend.put("session", b"s", expires=T0 + 1)
    async with watching(backend, after=1) as events:
        now[0] += 2
        async with asyncio.timeout(5):
            assert await anext(events) == Event(EventType.DELETE, "session", 2, b"")
    with raw(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM limen_backend_items").fetchone() == (0,)


# -- failures -----------------------------------------------------------------------------------


async def test_a_busy_database_gives_connection_problem_and_reads_go_on(
    dsn: str, opened: Callable[..., PostgresBackend]
) -> None:
    backend = opened(operation_timeout=0.3)
    await backend.put("k", b"1")
    with raw(dsn) as conn, conn.transaction():
        conn.execute("SELECT * FROM limen_backend_meta WHERE name = 'revision' FOR UPDATE")
        with pytest.raises(ConnectionProblem, match=r"did not answer within 0\.3 seconds"):
            await backend.put("k", b"2")
        assert await backend.get("k") == Item("k", b"1", 1)
    assert (await backend.put("k", b"3")).revision == 2


@pytest.mark.parametrize(
    "dsn_text",
    ["host=/nowhere password=sec ret", "postgresql://user:sec ret@[bad", "   "],
    ids=["conninfo", "uri", "blank"],
)
def test_a_malformed_dsn_is_refused_without_quoting_it(dsn_text: str) -> None:
    with pytest.raises(BadParameter, match="DSN") as caught:
        PostgresBackend(dsn_text)
    assert "sec" not in str(caught.value)
    assert '"ret"' not in str(caught.value)


def test_an_unreachable_database_gives_connection_problem_without_the_password() -> None:
    with pytest.raises(ConnectionProblem, match="unreachable") as caught:
        PostgresBackend("host=127.0.0.1 port=1 dbname=limen user=limen password=hunter2",
                        connect_timeout=2)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("key", ["nul\x00key", "surrogate\ud800"], ids=["nul", "surrogate"])
async def test_keys_postgresql_cannot_store_are_bad_parameters(
    opened: Callable[..., PostgresBackend], key: str
) -> None:
    backend = opened()
    for call in (
        lambda: backend.put(key, b""),
        lambda: backend.get(key),
        lambda: backend.atomic([Condition(key, 0)], [Put("fine", b"")]),
        lambda: backend.atomic([], [Put("fine", b""), Delete(key)]),
        lambda: backend.list(key),
    ):
        with pytest.raises(BadParameter, match="key"):
            await call()
    with pytest.raises(BadParameter):
        backend.watch(key)
    assert await backend.current_revision() == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [({}, "needs a dsn"), ({"dsn": "x", "colour": "blue"}, "bad option for the postgres")],
)
def test_open_backend_refuses_bad_postgres_arguments(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadParameter, match=message):
        open_backend(None, kind="postgres", **options)


# -- where the DSN comes from -------------------------------------------------------------------


def test_the_dsn_comes_from_the_file_else_the_environment(tmp_path: Path) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text("  host=db dbname=limen password=s3cret\n")
    env = {DSN_ENV: "host=env dbname=other"}
    assert read_dsn(dsn_file, env) == "host=db dbname=limen password=s3cret"
    assert read_dsn(None, env) == "host=env dbname=other"
    assert backend_options(BackendSettings(type="postgres", dsn_file=str(dsn_file)), {}) == {
        "kind": "postgres", "dsn": "host=db dbname=limen password=s3cret",
    }
    assert backend_options(BackendSettings(type="postgres"), env) == {
        "kind": "postgres", "dsn": "host=env dbname=other",
    }
    assert backend_options(BackendSettings(), env) == {"kind": "sqlite"}


def test_a_missing_or_empty_dsn_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(BadParameter, match="is empty"):
        read_dsn(tmp_path / "empty", {})
    with pytest.raises(BadParameter, match="cannot read the PostgreSQL DSN file"):
        read_dsn(tmp_path / "missing", {DSN_ENV: "host=ignored"})
    with pytest.raises(BadParameter, match=f"backend.dsn_file in the config or {DSN_ENV}"):
        backend_options(BackendSettings(type="postgres"), {})


def test_descriptions_name_the_database_never_the_password() -> None:
    conninfo = conninfo_with_defaults(
        "postgresql://limen:s3cret@db.example:5432/limen_state", connect_timeout=5
    )
    assert "connect_timeout=5" in conninfo
    assert describe(conninfo) == "PostgreSQL database 'limen_state' on db.example"
    assert "connect_timeout=9" in conninfo_with_defaults("host=x connect_timeout=9",
                                                         connect_timeout=5)


# -- lmctl backend migrate ----------------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Path:
    """A data directory whose SQLite store holds a few keys: one expiring, one expired."""
    data_dir = tmp_path / "data"

    async def fill() -> None:
        backend = SQLiteBackend(data_dir / DB_FILENAME, sweep_interval=None,
                                compact_interval=None)
        try:
            await backend.put("roles/dev", b"spec")
            await backend.atomic([], [Put("users/ana", b"\x00\xffbinary"),
                                      Put("sessions/1", b"s", expires=time.time() + 3600)])
            await backend.put("sessions/old", b"s", expires=time.time() - 1)
            await backend.put("roles/dev", b"spec v2")
        finally:
            await backend.close()

    asyncio.run(fill())
    return data_dir


@contextlib.contextmanager
def dsn_file(tmp_path: Path, dsn: str) -> Iterator[Path]:
    path = tmp_path / "backend.dsn"
    path.write_text(dsn + "\n")
    path.chmod(0o600)
    yield path


async def _items(dsn: str) -> list[Item]:
    backend = PostgresBackend(dsn, sweep_interval=None, compact_interval=None)
    try:
        return await backend.list("")
    finally:
        await backend.close()


def test_migrate_copies_every_live_key_with_its_expiry_into_an_empty_database(
    dsn: str, sqlite_store: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    with dsn_file(tmp_path, dsn) as path:
        result = runner.invoke(cli, ["backend", "migrate", "--from", f"sqlite:{sqlite_store}",
                                     "--to", f"postgres:{path}"])
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"copied 3 keys (1 with an expiry, 16 bytes of values) from sqlite:{sqlite_store} to "
        f"postgres:{path}; the target is at revision 1\n"
    )
    assert ROLE not in result.output  # nothing of the DSN itself
    copied = asyncio.run(_items(dsn))
    assert [(i.key, i.value, i.revision) for i in copied] == [
        ("roles/dev", b"spec v2", 1), ("sessions/1", b"s", 1), ("users/ana", b"\x00\xffbinary", 1),
    ]
    source = asyncio.run(_sqlite_items(sqlite_store))
    assert [(i.key, i.expires) for i in copied] == [(i.key, i.expires) for i in source]

    again = runner.invoke(cli, ["backend", "migrate", "--from", f"sqlite:{sqlite_store}",
                                "--to", "postgres:"], env={DSN_ENV: dsn})
    assert again.exit_code == 1
    assert "the target backend is not empty (3 keys, revision 1)" in again.output
    assert len(asyncio.run(_items(dsn))) == 3


async def _sqlite_items(data_dir: Path) -> list[Item]:
    backend = SQLiteBackend(data_dir / DB_FILENAME, sweep_interval=None, compact_interval=None)
    try:
        return await backend.list("")
    finally:
        await backend.close()


def test_migrate_refuses_a_data_dir_a_cluster_runs_from(
    dsn: str, sqlite_store: Path, tmp_path: Path
) -> None:
    with dsn_file(tmp_path, dsn) as path, hold_data_dir(sqlite_store):
        result = CliRunner().invoke(cli, ["backend", "migrate", "--from",
                                          f"sqlite:{sqlite_store}", "--to", f"postgres:{path}"])
    assert result.exit_code == 1
    assert f"another limen process (pid {os.getpid()}) is using {sqlite_store}" in result.output
    assert asyncio.run(_items(dsn)) == []


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("mysql:/x", "postgres:", "names no backend"),
        ("sqlite:", "postgres:", "needs the data directory"),
        ("sqlite:{missing}", "postgres:", "holds no backend"),
        ("postgres:", "postgres:", "the same backend"),
    ],
)
def test_migrate_refuses_bad_endpoints(
    tmp_path: Path, source: str, target: str, message: str
) -> None:
    missing = tmp_path / "nothing-here"
    result = CliRunner().invoke(cli, ["backend", "migrate", "--from",
                                      source.format(missing=missing), "--to", target])
    assert result.exit_code == 1
    assert message in result.output
    assert not missing.exists()
