"""The lock view (limen.services.locks): matching, expiry, a stale view under strict, the store
feed and the long poll of GET /v1/locks as an agent apart from auth reads it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from limen.api.lock import Lock, lock_problems, parse_expires
from limen.api.resources import Kind, Resource
from limen.backend.memory import MemoryBackend
from limen.ca.identity import Identity
from limen.errors import BadParameter
from limen.services.locks import Locked, LocksUnknown, LockView, StoreLockFeed, lock_fields
from limen.services.resource_store import ResourceStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BOB = Identity(username="bob", cluster="c", roles=("dev", "ops"))
ALICE = Identity(username="alice", cluster="c", roles=("dev",))


def _lock(name: str, expires: datetime | None = None, message: str = "", **target: str
          ) -> Resource:
    spec: dict[str, object] = {"target": target, "message": message}
    if expires is not None:
        spec["expires"] = expires.isoformat().replace("+00:00", "Z")
    return Resource(Kind.LOCK, name, spec=spec)


class Clock:
    def __init__(self) -> None:
        self.mono = 100.0
        self.now = NOW


def _view(*locks: Resource, clock: Clock | None = None, max_staleness: float | None = 30.0
          ) -> LockView:
    clock = clock or Clock()
    view = LockView(max_staleness=max_staleness, clock=lambda: clock.mono,
                    now=lambda: clock.now)
    view.replace(locks, 1)
    return view


def _name(lock: Lock | None) -> str | None:
    return None if lock is None else lock.name


def test_every_target_field_given_must_match() -> None:
    view = _view(_lock("bob-on-web1", user="bob", node="web1"), _lock("ops", role="ops"),
                 _lock("root", login="root"))
    assert _name(view.is_locked(BOB)) == "ops"  # the role lock
    assert view.is_locked(ALICE) is None
    assert view.is_locked(ALICE, node="web1") is None  # bob's lock is bob's only
    assert _name(view.is_locked(ALICE, node=["id-1", "web1"], login="root")) == "root"
    only_bob = _view(_lock("bob-on-web1", user="bob", node="web1"))
    assert only_bob.is_locked(BOB) is None  # no node given: a node lock does not apply
    assert only_bob.is_locked(BOB, node="web2") is None
    assert _name(only_bob.is_locked(BOB, node=("host-id", "web1"))) == "bob-on-web1"
    assert only_bob.is_locked(BOB, roles=["x"], node="web1") is not None  # user still matches


def test_mapped_roles_are_matched_instead_of_the_certificate_roles() -> None:
    view = _view(_lock("visitors", role="visitor"))
    assert view.is_locked(BOB) is None
    assert view.is_locked(BOB, roles=["visitor"]) is not None


def test_expired_locks_are_ignored_and_expiry_lifts_a_lock_by_itself() -> None:
    clock = Clock()
    view = _view(_lock("soon", NOW + timedelta(seconds=5), user="bob"),
                 _lock("old", NOW - timedelta(seconds=1), user="alice"), clock=clock)
    assert [lock.name for lock in view.current()] == ["soon"]
    assert view.is_locked(ALICE) is None
    assert view.is_locked(BOB) is not None
    clock.now = NOW + timedelta(seconds=5)
    assert view.is_locked(BOB) is None
    assert view.current() == []


def test_check_raises_locked_with_the_message_and_audit_fields() -> None:
    view = _view(_lock("inc-7", message="incident 7", user="bob", login="root"))
    view.check(BOB, login="ubuntu")
    with pytest.raises(Locked) as caught:
        view.check(BOB, login="root")
    assert str(caught.value) == "locked: incident 7"
    assert lock_fields(caught.value) == {"lock": "inc-7", "lock_target": "user=bob,login=root"}
    assert lock_fields(ValueError("x")) == {}
    no_message = _view(_lock("quiet", user="bob"))
    with pytest.raises(Locked, match=r"^locked: lock quiet on user=bob$"):
        no_message.check(BOB)


def test_a_stale_view_refuses_strict_and_keeps_enforcing_what_it_knew() -> None:
    clock = Clock()
    view = _view(_lock("bob", user="bob"), clock=clock, max_staleness=30.0)
    view.check(ALICE, strict=True)
    clock.mono += 31.0
    assert view.stale
    with pytest.raises(LocksUnknown, match="cannot verify locks: auth unreachable"):
        view.check(ALICE, strict=True)
    view.check(ALICE)  # best_effort: the last known locks, none on alice
    with pytest.raises(Locked):
        view.check(BOB)  # still enforced while cut off
    view.mark_fresh()
    view.check(ALICE, strict=True)


def test_a_view_never_loaded_is_stale_unless_fed_locally() -> None:
    assert LockView().stale
    assert not LockView(max_staleness=None).stale


async def test_changes_wake_waiters_only_when_the_locks_change() -> None:
    view = _view()
    waiter = asyncio.ensure_future(view.changed.wait(5.0))
    await asyncio.sleep(0)
    view.replace([], 2)  # same (empty) set: no wake
    view.put(_lock("a", user="bob"), 3)
    assert await waiter is True
    waiter = asyncio.ensure_future(view.changed.wait(0.05))
    await asyncio.sleep(0)
    view.put(_lock("a", user="bob"), 4)  # unchanged
    assert await waiter is False
    view.remove("a", 5)
    assert view.current() == []
    assert view.revision == 5


def test_a_malformed_stored_lock_is_skipped() -> None:
    view = _view(Resource(Kind.LOCK, "empty", spec={"target": {}}), _lock("ok", user="bob"))
    assert [lock.name for lock in view.current()] == ["ok"]


def test_lock_documents_round_trip_and_bad_ones_are_explained() -> None:
    lock = Lock.from_resource(_lock("x", NOW, "m", user="bob", node="n"))
    assert lock.to_resource().spec == {"target": {"user": "bob", "node": "n"}, "message": "m",
                                       "expires": "2026-03-01T12:00:00Z"}
    assert parse_expires("2026-03-01T13:00:00+01:00") == NOW
    with pytest.raises(BadParameter, match="no time zone"):
        parse_expires("2026-03-01T12:00:00")
    with pytest.raises(BadParameter):
        Lock.from_resource(Resource(Kind.ROLE, "x"))
    assert [path for path, _ in lock_problems({"target": {"user": ""}, "expires": "soon"})] == [
        ("spec", "expires"), ("spec", "target")]


async def test_the_store_feed_follows_creates_and_deletes() -> None:
    store = ResourceStore(MemoryBackend())
    await store.put(_lock("first", user="bob"))
    view = LockView(max_staleness=None)
    feed = StoreLockFeed(store, view)
    await feed.load()
    assert [lock.name for lock in view.current()] == ["first"]
    feed.start()
    try:
        changed = view.changed.event
        await store.put(_lock("second", role="ops"))
        await asyncio.wait_for(changed.wait(), 5.0)
        assert [lock.name for lock in view.current()] == ["first", "second"]
        changed = view.changed.event
        await store.delete(Kind.LOCK, "first")
        await asyncio.wait_for(changed.wait(), 5.0)
        assert [lock.name for lock in view.current()] == ["second"]
    finally:
        await feed.stop()
