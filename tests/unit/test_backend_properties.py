"""Property-based tests of the two ``Backend`` guarantees everything else leans on, for every
implementation (``limen.backend.memory``, ``limen.backend.sqlite``, ``limen.backend.postgres``
on the test PostgreSQL, one database for the module emptied before each example):

(a) compare-and-swap never loses an update: concurrent read -> CAS -> retry loops (asyncio
    tasks; for SQLite also OS threads, each with its own backend on the same file; for
    PostgreSQL several backends, each with its own connections) end with the counter equal to
    the number of increments, every successful CAS at its own revision;
(b) a watcher sees every revision in order: a random run of puts, creates, CAS, deletes,
    atomic transactions, clock jumps and sweeps is replayed against a model; watchers started
    before, started mid-way (live) and opened afterwards with ``after=`` the mid-way revision
    each receive exactly the model's events under their prefix, in revision order.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pg_backend_db import backend_database, reset_backend

from dbservers import PostgresServer
from limen.backend.base import Backend, Condition, Delete, Event, Put
from limen.backend.factory import open_backend
from limen.errors import AlreadyExists, CompareFailed, NotFound

T0 = 1_700_000_000.0
KEYS = ["a/1", "a/2", "a/3", "b/1", "b/2"]


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def data_dir(kind: str) -> Iterator[Path | None]:
    if kind == "memory":
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def open_kind(kind: str, where: Path | None, **options: Any) -> Backend:
    options.setdefault("sweep_interval", None)
    if kind == "sqlite":
        options.setdefault("compact_interval", None)
        options.setdefault("poll_interval", 0.01)
    if kind == "postgres":
        options.setdefault("compact_interval", None)
    return open_backend(where, kind=kind, **options)


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:
    return backend_database(postgres_server, "limen_backend_properties")


# -- (a) compare-and-swap under contention --------------------------------------------------------


async def increment(
    backend: Backend, times: int, revisions: list[int], *, interleave: bool
) -> None:
    """Add 1 to ``counter`` ``times`` times by read -> CAS -> retry, recording each revision."""
    for _ in range(times):
        while True:
            item = await backend.get("counter")
            if interleave:
                await asyncio.sleep(0)  # let the other tasks read the same revision
            expected = item.revision if item else 0
            value = str(int(item.value) + 1 if item else 1).encode()
            try:
                done = await backend.compare_and_swap("counter", expected, value)
            except CompareFailed:
                continue
            revisions.append(done.revision)
            break


def check_counter(value: bytes, revisions: list[int], total: int) -> None:
    assert int(value) == total
    assert len(revisions) == total
    assert len(set(revisions)) == total


@settings(max_examples=100, deadline=None)
@given(tasks=st.lists(st.tuples(st.integers(1, 6), st.booleans()), min_size=2, max_size=6))
def test_memory_cas_loses_no_increment(tasks: list[tuple[int, bool]]) -> None:
    async def main() -> tuple[bytes, list[int]]:
        backend = open_kind("memory", None)
        revisions: list[int] = []
        await asyncio.gather(
            *(increment(backend, n, revisions, interleave=i) for n, i in tasks)
        )
        item = await backend.get("counter")
        await backend.close()
        assert item is not None
        return item.value, revisions

    value, revisions = asyncio.run(main())
    check_counter(value, revisions, sum(n for n, _ in tasks))


@settings(max_examples=20, deadline=None)
@given(
    tasks=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    threads=st.lists(st.integers(1, 4), min_size=1, max_size=2),
)
def test_sqlite_cas_loses_no_increment_across_tasks_and_threads(
    tasks: list[int], threads: list[int]
) -> None:
    revisions: list[int] = []  # list.append is atomic; the threads share it
    failures: list[BaseException] = []

    def in_thread(where: Path, times: int) -> None:
        async def run() -> None:
            backend = open_kind("sqlite", where)
            try:
                await increment(backend, times, revisions, interleave=False)
            finally:
                await backend.close()

        try:
            asyncio.run(run())
        except BaseException as err:  # reported by the main thread below
            failures.append(err)

    async def main(where: Path) -> bytes:
        backend = open_kind("sqlite", where)
        workers = [threading.Thread(target=in_thread, args=(where, n)) for n in threads]
        for worker in workers:
            worker.start()
        await asyncio.gather(*(increment(backend, n, revisions, interleave=True) for n in tasks))
        for worker in workers:
            await asyncio.to_thread(worker.join, 60)
            assert not worker.is_alive()
        item = await backend.get("counter")
        await backend.close()
        assert item is not None
        return item.value

    with data_dir("sqlite") as where:
        assert where is not None
        value = asyncio.run(main(where))
    assert failures == []
    check_counter(value, revisions, sum(tasks) + sum(threads))


@settings(max_examples=15, deadline=None)
@given(
    tasks=st.lists(st.tuples(st.integers(1, 4), st.booleans()), min_size=2, max_size=4),
    instances=st.integers(1, 3),
)
def test_postgres_cas_loses_no_increment_across_connections(
    pg_dsn: str, tasks: list[tuple[int, bool]], instances: int
) -> None:
    reset_backend(pg_dsn)

    async def main() -> tuple[bytes, list[int]]:
        backends = [open_kind("postgres", None, dsn=pg_dsn) for _ in range(instances)]
        revisions: list[int] = []
        try:
            await asyncio.gather(*(
                increment(backends[i % instances], n, revisions, interleave=interleave)
                for i, (n, interleave) in enumerate(tasks)
            ))
            item = await backends[-1].get("counter")
        finally:
            for backend in backends:
                await backend.close()
        assert item is not None
        return item.value, revisions

    value, revisions = asyncio.run(main())
    check_counter(value, revisions, sum(n for n, _ in tasks))


# -- (b) watchers against a model -----------------------------------------------------------------

Summary = tuple[str, str, int, bytes]


@dataclass
class Model:
    """What the backend should hold and which events it should have emitted."""

    now: float = T0
    revision: int = 0
    items: dict[str, tuple[bytes, int, float | None]] = field(default_factory=dict)
    events: list[Summary] = field(default_factory=list)

    def live(self, key: str) -> int | None:
        item = self.items.get(key)
        if item is None or (item[2] is not None and item[2] <= self.now):
            return None
        return item[1]

    def sweep(self) -> int:
        expired = sorted(k for k, i in self.items.items() if i[2] is not None and i[2] <= self.now)
        if expired:
            self.revision += 1
            for key in expired:
                del self.items[key]
                self.events.append(("delete", key, self.revision, b""))
        return len(expired)

    def write(self, ops: list[tuple[str, bytes | None, float | None]]) -> int:
        """Apply (key, value or None to delete, expires) under one revision, after a sweep."""
        self.sweep()
        self.revision += 1
        for key, value, expires in ops:
            if value is not None:
                self.items[key] = (value, self.revision, expires)
                self.events.append(("put", key, self.revision, value))
            elif self.items.pop(key, None) is not None:
                self.events.append(("delete", key, self.revision, b""))
        return self.revision


keys = st.sampled_from(KEYS)
values = st.binary(max_size=6)
ttls = st.none() | st.integers(1, 3)
operations = st.one_of(
    st.tuples(st.just("put"), keys, values, ttls),
    st.tuples(st.just("create"), keys, values),
    st.tuples(st.just("cas"), keys, values, st.booleans()),
    st.tuples(st.just("delete"), keys),
    st.tuples(
        st.just("atomic"),
        st.none() | st.tuples(keys, st.booleans()),
        st.lists(st.tuples(keys, st.none() | values, ttls), max_size=4, unique_by=lambda o: o[0]),
    ),
    st.tuples(st.just("advance"), st.integers(1, 3)),
    st.tuples(st.just("sweep")),
)


async def apply(backend: Backend, model: Model, clock: FakeClock, op: tuple[Any, ...]) -> None:
    """Run ``op`` on the backend and the model; assert they agree on the outcome."""
    name = op[0]
    if name == "put":
        _, key, value, ttl = op
        expires = None if ttl is None else model.now + ttl
        item = await backend.put(key, value, expires=expires)
        assert item.revision == model.write([(key, value, expires)])
    elif name == "create":
        _, key, value = op
        if model.live(key) is not None:
            with pytest.raises(AlreadyExists):
                await backend.create(key, value)
        else:
            assert (await backend.create(key, value)).revision == model.write([(key, value, None)])
    elif name == "cas":
        _, key, value, right = op
        expected = (model.live(key) or 0) + (0 if right else 1000)
        if right:
            item = await backend.compare_and_swap(key, expected, value)
            assert item.revision == model.write([(key, value, None)])
        else:
            with pytest.raises(CompareFailed):
                await backend.compare_and_swap(key, expected, value)
    elif name == "delete":
        _, key = op
        if model.live(key) is None:
            with pytest.raises(NotFound):
                await backend.delete(key)
        else:
            await backend.delete(key)
            model.write([(key, None, None)])
    elif name == "atomic":
        await apply_atomic(backend, model, op[1], op[2])
    elif name == "advance":
        clock.now += op[1]
        model.now += op[1]
    else:
        assert await backend.sweep() == model.sweep()  # type: ignore[attr-defined]


async def apply_atomic(
    backend: Backend,
    model: Model,
    condition: tuple[str, bool] | None,
    ops: list[tuple[str, bytes | None, int | None]],
) -> None:
    conditions = []
    holds = True
    if condition is not None:
        key, holds = condition
        conditions.append(Condition(key, (model.live(key) or 0) + (0 if holds else 1000)))
    writes = [(k, v, None if t is None else model.now + t) for k, v, t in ops]
    request = [Delete(k) if v is None else Put(k, v, expires=e) for k, v, e in writes]
    if not holds:
        with pytest.raises(CompareFailed):
            await backend.atomic(conditions, request)
        return
    revision = await backend.atomic(conditions, request)
    assert revision == (model.write(writes) if writes else model.revision)


async def take_until(events: AsyncIterator[Event], key: str) -> list[Summary]:
    out: list[Summary] = []
    async with asyncio.timeout(10):
        while (event := await anext(events)).key != key:
            out.append((event.type.value, event.key, event.revision, event.value))
    return out


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@settings(max_examples=80, deadline=None)
@given(
    ops=st.lists(operations, min_size=1, max_size=25),
    prefix=st.sampled_from(["", "a/"]),
    split=st.integers(0, 25),
)
def test_watchers_see_every_event_in_revision_order(
    kind: str, ops: list[tuple[Any, ...]], prefix: str, split: int
) -> None:
    with data_dir(kind) as where:
        asyncio.run(watch_scenario(kind, where, {}, ops, prefix, split))


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(operations, min_size=1, max_size=25),
    prefix=st.sampled_from(["", "a/"]),
    split=st.integers(0, 25),
)
def test_postgres_watchers_see_every_event_in_revision_order(
    pg_dsn: str, ops: list[tuple[Any, ...]], prefix: str, split: int
) -> None:
    reset_backend(pg_dsn)
    asyncio.run(watch_scenario("postgres", None, {"dsn": pg_dsn}, ops, prefix, split))


async def watch_scenario(
    kind: str, where: Path | None, options: dict[str, Any], ops: list[tuple[Any, ...]],
    prefix: str, split: int,
) -> None:
    """Apply ``ops`` to a backend and to the model; watchers started before, in the middle
    (live) and afterwards (``after=`` the middle revision) see exactly the model's events."""
    clock = FakeClock()
    model = Model()
    backend = open_kind(kind, where, clock=clock, **options)
    marker = prefix + "~end"
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(backend.close)
        early = await stack.enter_async_context(contextlib.aclosing(backend.watch(prefix)))
        for op in ops[:split]:
            await apply(backend, model, clock, op)
        middle = model.revision
        live = await stack.enter_async_context(contextlib.aclosing(backend.watch(prefix)))
        for op in ops[split:]:
            await apply(backend, model, clock, op)
        replay = await stack.enter_async_context(
            contextlib.aclosing(backend.watch(prefix, after=middle))
        )
        await apply(backend, model, clock, ("put", marker, b"", None))

        expected = [e for e in model.events if e[1].startswith(prefix) and e[1] != marker]
        seen_early = await take_until(early, marker)
        assert seen_early == expected
        assert [e[2] for e in seen_early] == sorted(e[2] for e in seen_early)
        after_middle = [e for e in expected if e[2] > middle]
        assert await take_until(live, marker) == after_middle
        assert await take_until(replay, marker) == after_middle
        listed = {i.key: (i.value, i.revision) for i in await backend.list("")}
        assert listed == {
            k: (v, r) for k, (v, r, _) in model.items.items() if model.live(k) is not None
        }
