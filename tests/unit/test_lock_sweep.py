"""The sweep of expired locks (``limen.services.lock_sweep``) on a real resource store (memory
backend): an expired lock made by ``lmctl`` is deleted and audited as ``lock.deleted`` with
``reason: expired``; one in force, and an expired one owned by Git or Kubernetes, stay; two
auth replicas sweeping the same store delete and audit each lock once; ``lmctl get locks``
marks a kept expired lock ``(expired)``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from limen.api.resources import Kind, Origin, Resource
from limen.backend.memory import MemoryBackend
from limen.cli.lmctl_locks import lock_rows
from limen.services.lock_sweep import LockSweep
from limen.services.resource_store import ResourceStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PAST, FUTURE = "2026-03-01T11:59:59Z", "2026-03-01T12:00:01Z"


def _lock(name: str, expires: str | None, origin: Origin) -> Resource:
    spec: dict[str, Any] = {"target": {"user": "bob"}, "message": "INC-1"}
    if expires is not None:
        spec["expires"] = expires
    return Resource(Kind.LOCK, name, spec=spec).with_origin(origin)


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.emitted = asyncio.Event()

    async def emit(self, event_type: str, **fields: Any) -> None:
        self.events.append((event_type, fields))
        self.emitted.set()


async def _store(*locks: Resource) -> ResourceStore:
    store = ResourceStore(MemoryBackend())
    for lock in locks:
        await store.put(lock)
    return store


async def test_expired_api_locks_are_deleted_and_audited_others_stay() -> None:
    store = await _store(_lock("gone", PAST, Origin.API), _lock("live", FUTURE, Origin.API),
                         _lock("forever", None, Origin.API), _lock("git", PAST, Origin.GIT),
                         _lock("cr", PAST, Origin.KUBERNETES))
    audit = Audit()
    assert await LockSweep(store, audit.emit, now=lambda: NOW).sweep() == ["gone"]
    assert {r.name for r in await store.list(Kind.LOCK)} == {"live", "forever", "git", "cr"}
    assert audit.events == [("lock.deleted", {
        "name": "gone", "kind": "Lock", "reason": "expired",
        "expires": "2026-03-01T11:59:59+00:00", "lock": "gone", "lock_target": "user=bob",
        "origin": "api"})]


async def test_two_replicas_delete_and_audit_each_lock_once() -> None:
    store = await _store(*(_lock(f"l{n}", PAST, Origin.API) for n in range(5)))
    audit = Audit()
    one, two = (LockSweep(store, audit.emit, now=lambda: NOW) for _ in range(2))
    first, second = await asyncio.gather(one.sweep(), two.sweep())
    assert sorted(first + second) == [f"l{n}" for n in range(5)]
    assert sorted(f["name"] for _t, f in audit.events) == [f"l{n}" for n in range(5)]
    assert await store.list(Kind.LOCK) == []


async def test_a_lock_changed_after_the_list_is_not_deleted() -> None:
    store = await _store(_lock("moved", PAST, Origin.API))
    audit = Audit()
    sweep = LockSweep(store, audit.emit, now=lambda: NOW)
    listed = store.list

    async def list_then_extend(kind: Kind | None = None) -> list[Resource]:
        answer = await listed(kind)
        await store.put(_lock("moved", FUTURE, Origin.API))  # lmctl lock --ttl again
        return answer

    store.list = list_then_extend  # type: ignore[method-assign]
    assert await sweep.sweep() == []
    assert audit.events == []
    assert [r.name for r in await listed(Kind.LOCK)] == ["moved"]


async def test_the_sweep_runs_until_stopped() -> None:
    store = await _store(_lock("gone", PAST, Origin.API))
    audit = Audit()
    sweep = LockSweep(store, audit.emit, interval=60.0, now=lambda: NOW)
    sweep.start()
    try:
        async with asyncio.timeout(5.0):
            await audit.emitted.wait()
    finally:
        await sweep.stop()
    assert audit.events[0][1]["name"] == "gone"


def test_lmctl_get_locks_shows_a_kept_expired_lock_as_expired() -> None:
    rows = lock_rows([_lock("git", PAST, Origin.GIT).to_document(),
                      _lock("live", FUTURE, Origin.API).to_document(),
                      _lock("forever", None, Origin.API).to_document()], NOW)
    assert [(r[0], r[3], r[4]) for r in rows] == [
        ("git", f"{PAST} (expired)", "git"), ("live", FUTURE, "api"),
        ("forever", "never", "api")]
