"""The ``Backend`` contract (``limen.backend.base``), run against every implementation:
``MemoryBackend``, ``SQLiteBackend`` on a fresh file under ``tmp_path`` and ``PostgresBackend``
on the test PostgreSQL (one database for the module, emptied before each test).

Expiry uses an injected clock instead of sleeping; watchers are read with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pg_backend_db import backend_database, reset_backend

from dbservers import PostgresServer
from limen.backend.base import Backend, Condition, Delete, Event, EventType, Item, Put
from limen.backend.factory import open_backend
from limen.errors import AlreadyExists, BadParameter, CompareFailed, ConnectionProblem, NotFound

KINDS = ["memory", "sqlite", "postgres"]
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeBackend = Callable[..., Backend]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:
    return backend_database(postgres_server, "limen_backend_contract")


@pytest.fixture(params=KINDS)
async def make_backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[MakeBackend]:
    """Opens backends of the parametrised kind (all on one file for sqlite, one database for
    postgres); closes them all."""
    opened: list[Backend] = []
    dsn = ""
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        reset_backend(dsn)

    def make(**options: Any) -> Backend:
        options.setdefault("clock", clock)
        options.setdefault("sweep_interval", None)
        if request.param == "sqlite":
            options.setdefault("poll_interval", 0.02)
            options.setdefault("compact_interval", None)
        if request.param == "postgres":
            options.setdefault("compact_interval", None)
            options["dsn"] = dsn
        backend = open_backend(tmp_path, kind=request.param, **options)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        await backend.close()


@pytest.fixture
def backend(make_backend: MakeBackend) -> Backend:
    return make_backend()


async def take(events: AsyncIterator[Event], count: int, within: float = 5.0) -> list[Event]:
    """The next ``count`` events, failing if they do not all arrive ``within`` seconds."""
    out: list[Event] = []
    async with asyncio.timeout(within):
        while len(out) < count:
            out.append(await anext(events))
    return out


async def take_until(events: AsyncIterator[Event], key: str, within: float = 5.0) -> list[Event]:
    """Every event up to and excluding the first one for ``key``."""
    out: list[Event] = []
    async with asyncio.timeout(within):
        while (event := await anext(events)).key != key:
            out.append(event)
    return out


def summary(events: list[Event]) -> list[tuple[str, str, int, bytes]]:
    return [(e.type.value, e.key, e.revision, e.value) for e in events]


# -- reads and single-key writes ---------------------------------------------------------------


async def test_satisfies_the_protocol_and_starts_empty_at_revision_zero(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert await backend.current_revision() == 0
    assert await backend.get("missing") is None
    assert await backend.list("") == []


async def test_put_returns_the_item_and_get_reads_it_back(backend: Backend) -> None:
    item = await backend.put("roles/dev", b"spec", expires=T0 + 60)
    assert item == Item("roles/dev", b"spec", 1, T0 + 60)
    assert await backend.get("roles/dev") == item


async def test_every_write_takes_the_next_revision(backend: Backend) -> None:
    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: backend.put("a", b"1"),
        lambda: backend.put("a", b"2"),
        lambda: backend.create("b", b"1"),
        lambda: backend.compare_and_swap("b", 3, b"2"),
        lambda: backend.delete("a"),
        lambda: backend.atomic([], [Put("c", b"1"), Put("d", b"1")]),
    ]
    for expected, write in enumerate(writes, start=1):
        await write()
        assert await backend.current_revision() == expected
    assert (await backend.get("b")) == Item("b", b"2", 4)
    assert [i.revision for i in await backend.list("")] == [4, 6, 6]


async def test_list_filters_by_prefix_and_sorts_by_key(backend: Backend) -> None:
    keys = ["a/2", "a/1", "a0", "b/1", "a/", "a/\u00e9", "a/z", "a"]
    for key in keys:
        await backend.put(key, key.encode())
    listed = await backend.list("a/")
    expected = ["a/", "a/1", "a/2", "a/z", "a/\u00e9"]
    assert [i.key for i in listed] == expected
    assert [i.value for i in listed] == [k.encode() for k in expected]
    assert [i.key for i in await backend.list("")] == sorted(keys)
    assert await backend.list("c") == []


async def test_create_refuses_an_existing_key_and_changes_nothing(backend: Backend) -> None:
    first = await backend.create("users/ana", b"v1")
    with pytest.raises(AlreadyExists, match="users/ana"):
        await backend.create("users/ana", b"v2")
    assert await backend.get("users/ana") == first
    assert await backend.current_revision() == first.revision


async def test_create_succeeds_again_after_delete(backend: Backend) -> None:
    await backend.create("k", b"1")
    await backend.delete("k")
    assert (await backend.create("k", b"2")) == Item("k", b"2", 3)


async def test_compare_and_swap_with_the_current_revision_replaces(backend: Backend) -> None:
    first = await backend.put("k", b"1")
    second = await backend.compare_and_swap("k", first.revision, b"2")
    assert second == Item("k", b"2", first.revision + 1)
    assert await backend.get("k") == second


async def test_compare_and_swap_with_a_stale_revision_fails(backend: Backend) -> None:
    first = await backend.put("k", b"1")
    await backend.put("k", b"2")
    with pytest.raises(CompareFailed, match="'k' is revision 2, expected revision 1"):
        await backend.compare_and_swap("k", first.revision, b"3")
    assert (await backend.get("k")) == Item("k", b"2", 2)
    assert await backend.current_revision() == 2


async def test_compare_and_swap_with_zero_means_absent(backend: Backend) -> None:
    created = await backend.compare_and_swap("k", 0, b"1")
    assert created == Item("k", b"1", 1)
    with pytest.raises(CompareFailed):
        await backend.compare_and_swap("k", 0, b"2")
    assert (await backend.get("k")) == created


async def test_delete_refuses_a_missing_key(backend: Backend) -> None:
    with pytest.raises(NotFound, match="'ghost'"):
        await backend.delete("ghost")
    assert await backend.current_revision() == 0


async def test_delete_with_a_stale_revision_fails_and_keeps_the_item(backend: Backend) -> None:
    item = await backend.put("k", b"1")
    with pytest.raises(CompareFailed):
        await backend.delete("k", expected_revision=item.revision + 7)
    assert await backend.get("k") == item


async def test_delete_with_the_current_revision_removes_and_takes_a_revision(
    backend: Backend,
) -> None:
    item = await backend.put("k", b"1")
    await backend.delete("k", expected_revision=item.revision)
    assert await backend.get("k") is None
    assert await backend.current_revision() == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.put("", b"x"),
        lambda b: b.put("k", "text"),
        lambda b: b.put("k", b"x", expires=float("nan")),
        lambda b: b.compare_and_swap("k", -1, b"x"),
        lambda b: b.atomic([Condition("k", -2)], [Put("k", b"x")]),
        lambda b: b.atomic([], [Put("k", b"x"), Delete("k")]),
        lambda b: b.atomic([], ["not an op"]),
    ],
    ids=["empty-key", "str-value", "nan-expiry", "negative-cas", "negative-condition",
         "duplicate-key", "bad-op"],
)
async def test_bad_input_is_refused_and_changes_nothing(
    backend: Backend, call: Callable[[Backend], Awaitable[object]]
) -> None:
    with pytest.raises(BadParameter):
        await call(backend)
    assert await backend.current_revision() == 0
    assert await backend.list("") == []


# -- atomic -------------------------------------------------------------------------------------


async def test_atomic_applies_every_op_under_one_revision(backend: Backend) -> None:
    old = await backend.put("old", b"x")
    keep = await backend.put("keep", b"x")
    revision = await backend.atomic(
        [Condition("old", old.revision), Condition("keep", None), Condition("new1", 0)],
        [Put("new1", b"1"), Put("new2", b"2", expires=T0 + 5), Delete("old")],
    )
    assert revision == 3 == await backend.current_revision()
    assert await backend.list("") == [
        keep, Item("new1", b"1", 3), Item("new2", b"2", 3, T0 + 5)
    ]


@pytest.mark.parametrize(
    "condition",
    [Condition("a", 99), Condition("a", 0), Condition("missing", None), Condition("missing", 4)],
    ids=["wrong-revision", "must-be-absent", "must-exist", "revision-of-absent"],
)
async def test_atomic_with_a_failing_condition_changes_nothing(
    backend: Backend, condition: Condition
) -> None:
    a = await backend.put("a", b"1")
    with pytest.raises(CompareFailed):
        await backend.atomic(
            [Condition("a", a.revision), condition], [Put("a", b"2"), Put("b", b"2")]
        )
    assert await backend.list("") == [a]
    assert await backend.current_revision() == 1


async def test_atomic_skips_a_delete_of_an_absent_key(backend: Backend) -> None:
    async with contextlib.aclosing(backend.watch("", after=0)) as events:
        revision = await backend.atomic([], [Delete("ghost"), Put("real", b"1")])
        await backend.put("end", b"")
        assert summary(await take_until(events, "end")) == [("put", "real", revision, b"1")]
    assert revision == 1


async def test_atomic_without_ops_only_checks_conditions(backend: Backend) -> None:
    a = await backend.put("a", b"1")
    assert await backend.atomic([Condition("a", a.revision)], []) == 1
    with pytest.raises(CompareFailed):
        await backend.atomic([Condition("a", 0)], [])
    assert await backend.current_revision() == 1


async def test_atomic_with_ten_thousand_puts_is_one_transaction(backend: Backend) -> None:
    ops = [Put(f"objects/{i:05d}", b"x" * 64) for i in range(10_000)]
    revision = await backend.atomic([], ops)
    items = await backend.list("objects/")
    assert len(items) == 10_000
    assert {i.revision for i in items} == {revision}
    async with contextlib.aclosing(backend.watch("objects/", after=0)) as events:
        replay = await take(events, 10_000, within=30)
    assert [e.key for e in replay] == [op.key for op in ops]
    assert {e.revision for e in replay} == {revision}


# -- expiry -------------------------------------------------------------------------------------


async def test_expired_items_are_invisible(backend: Backend, clock: FakeClock) -> None:
    await backend.put("session/1", b"s", expires=T0 + 10)
    await backend.put("session/2", b"s", expires=T0 + 100)
    await backend.put("forever", b"f")
    clock.advance(10)  # expires == now counts as expired
    assert await backend.get("session/1") is None
    assert [i.key for i in await backend.list("")] == ["forever", "session/2"]


async def test_expired_keys_count_as_absent_for_writes(backend: Backend, clock: FakeClock) -> None:
    item = await backend.put("lock", b"a", expires=T0 + 10)
    clock.advance(11)
    with pytest.raises(CompareFailed):
        await backend.compare_and_swap("lock", item.revision, b"b")
    with pytest.raises(NotFound):
        await backend.delete("lock")
    with pytest.raises(CompareFailed):
        await backend.atomic([Condition("lock", None)], [Put("x", b"")])
    created = await backend.create("lock", b"c")
    assert await backend.get("lock") == created


async def test_sweep_reports_expired_items_as_deletes(backend: Backend, clock: FakeClock) -> None:
    async with contextlib.aclosing(backend.watch("", after=0)) as events:
        await backend.put("t/1", b"x", expires=T0 + 10)
        await backend.put("t/2", b"x", expires=T0 + 10)
        clock.advance(10)
        assert await backend.sweep() == 2  # type: ignore[attr-defined]
        assert await backend.sweep() == 0  # type: ignore[attr-defined]
        assert summary(await take(events, 4)) == [
            ("put", "t/1", 1, b"x"),
            ("put", "t/2", 2, b"x"),
            ("delete", "t/1", 3, b""),
            ("delete", "t/2", 3, b""),
        ]
    assert await backend.current_revision() == 3


async def test_a_write_sweeps_expired_items_first(backend: Backend, clock: FakeClock) -> None:
    async with contextlib.aclosing(backend.watch("")) as events:
        await backend.put("k", b"old", expires=T0 + 1)
        clock.advance(2)
        new = await backend.create("k", b"new")
        assert summary(await take(events, 3)) == [
            ("put", "k", 1, b"old"),
            ("delete", "k", 2, b""),
            ("put", "k", 3, b"new"),
        ]
    assert new.revision == 3


async def test_a_failing_write_does_not_even_sweep(backend: Backend, clock: FakeClock) -> None:
    await backend.put("k", b"old", expires=T0 + 1)
    clock.advance(2)
    with pytest.raises(CompareFailed):
        await backend.compare_and_swap("other", 5, b"")
    with pytest.raises(NotFound):
        await backend.delete("k")
    assert await backend.atomic([Condition("other", 0)], []) == 1
    assert await backend.current_revision() == 1


# -- watch --------------------------------------------------------------------------------------


async def test_watch_replays_history_then_follows_live(backend: Backend) -> None:
    await backend.put("a", b"1")
    await backend.put("b", b"1")
    await backend.delete("a")
    async with contextlib.aclosing(backend.watch("", after=0)) as events:
        assert summary(await take(events, 3)) == [
            ("put", "a", 1, b"1"), ("put", "b", 1 + 1, b"1"), ("delete", "a", 3, b"")
        ]
        await backend.put("c", b"live")
        assert summary(await take(events, 1)) == [("put", "c", 4, b"live")]


async def test_watch_after_a_revision_skips_older_events(backend: Backend) -> None:
    for i in range(5):
        await backend.put(f"k{i}", b"")
    async with contextlib.aclosing(backend.watch("", after=3)) as events:
        assert [e.revision for e in await take(events, 2)] == [4, 5]


async def test_watch_without_after_starts_from_the_call(backend: Backend) -> None:
    await backend.put("before", b"")
    events = backend.watch("")
    await backend.put("after", b"")
    async with contextlib.aclosing(events):
        assert summary(await take(events, 1)) == [("put", "after", 2, b"")]


async def test_watch_filters_by_prefix(backend: Backend) -> None:
    async with contextlib.aclosing(backend.watch("roles/")) as events:
        await backend.put("roles/a", b"1")
        await backend.put("roles", b"no")
        await backend.put("users/a", b"no")
        await backend.atomic([], [Put("users/b", b"no"), Put("roles/b", b"2")])
        await backend.delete("roles/a")
        await backend.put("roles/end", b"")
        assert summary(await take_until(events, "roles/end")) == [
            ("put", "roles/a", 1, b"1"), ("put", "roles/b", 4, b"2"), ("delete", "roles/a", 5, b"")
        ]


async def test_atomic_events_share_a_revision_in_op_order(backend: Backend) -> None:
    await backend.put("z", b"")
    async with contextlib.aclosing(backend.watch("", after=1)) as events:
        await backend.atomic([], [Put("y", b"1"), Delete("z"), Put("x", b"2")])
        assert summary(await take(events, 3)) == [
            ("put", "y", 2, b"1"), ("delete", "z", 2, b""), ("put", "x", 2, b"2")
        ]


async def test_two_watchers_each_see_every_event(backend: Backend) -> None:
    first, second = backend.watch(""), backend.watch("")
    async with contextlib.aclosing(first), contextlib.aclosing(second):
        await backend.put("a", b"")
        await backend.put("b", b"")
        got = await asyncio.gather(take(first, 2), take(second, 2))
    assert summary(got[0]) == summary(got[1]) == [("put", "a", 1, b""), ("put", "b", 2, b"")]


async def test_watch_refuses_a_negative_revision(backend: Backend) -> None:
    with pytest.raises(BadParameter):
        backend.watch("", after=-1)


async def test_compacted_history_cannot_be_replayed(make_backend: MakeBackend) -> None:
    backend = make_backend(history_min_events=2, history_min_age=0)
    for i in range(5):
        await backend.put(f"k{i}", b"")
    assert await backend.compact() == 3  # type: ignore[attr-defined]
    with pytest.raises(BadParameter, match="revision 0 has been compacted; re-list"):
        await anext(backend.watch("", after=0))
    async with contextlib.aclosing(backend.watch("", after=3)) as events:
        assert [e.revision for e in await take(events, 2)] == [4, 5]


async def test_compaction_keeps_recent_events(make_backend: MakeBackend, clock: FakeClock) -> None:
    backend = make_backend(history_min_events=1, history_min_age=60)
    await backend.put("old1", b"")
    await backend.atomic([], [Put("old2", b""), Put("old3", b"")])
    clock.advance(61)
    await backend.put("new1", b"")
    await backend.put("new2", b"")
    assert await backend.compact() == 2  # type: ignore[attr-defined]
    async with contextlib.aclosing(backend.watch("", after=2)) as events:
        assert [e.key for e in await take(events, 2)] == ["new1", "new2"]


# -- close --------------------------------------------------------------------------------------


async def test_close_ends_watchers_and_refuses_later_calls(backend: Backend) -> None:
    events = backend.watch("")
    waiting = asyncio.create_task(anext(events, None))
    await backend.put("a", b"")
    assert await asyncio.wait_for(waiting, 5) == Event(EventType.PUT, "a", 1, b"")
    waiting = asyncio.create_task(anext(events, None))
    await backend.close()
    assert await asyncio.wait_for(waiting, 5) is None
    with pytest.raises(ConnectionProblem, match="closed"):
        await backend.get("a")
    with pytest.raises(ConnectionProblem):
        await backend.put("a", b"")
    with pytest.raises(ConnectionProblem):
        backend.watch("")
    await backend.close()  # closing twice is harmless
