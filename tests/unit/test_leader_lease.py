"""The leader lease in the backend (``limen.backend.lease``) and leadership over it
(``limen.services.leadership``): one holder at a time, taken over once it expires or is
released, renewal refused to a holder whose lease was taken, fenced writes that never land
for a holder that lost the lease; and the Git sync behind it writes nothing once deposed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gitops_git import WorkTree, bare, role
from limen.api.resources import Kind
from limen.auth.core import AuthServer
from limen.auth.store_keys import GITOPS_STATUS_KEY
from limen.backend.base import Condition, Put
from limen.backend.lease import Lease, LeaseLost
from limen.backend.memory import MemoryBackend
from limen.config import ClusterSettings, GitOpsSettings, Settings
from limen.errors import BadParameter, CompareFailed
from limen.events.emitter import MemoryEmitter
from limen.gitops.sync import GitOpsSync, Outcome
from limen.services.leadership import Leadership

KEY = "/leases/test"
TTL = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend(clock: Clock) -> MemoryBackend:
    return MemoryBackend(clock=clock, sweep_interval=None)


def lease(backend: MemoryBackend, clock: Clock, holder: str) -> Lease:
    return Lease(backend, KEY, holder, ttl=TTL, clock=clock)


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate()`` until true, or fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 (a revision in the backend; no event to await)
            await asyncio.sleep(0.01)


# -- the lease -------------------------------------------------------------------------------


async def test_one_holder_at_a_time_until_it_expires(backend: MemoryBackend, clock: Clock) -> None:
    a, b = lease(backend, clock, "a"), lease(backend, clock, "b")
    assert await a.acquire()
    assert a.held
    assert not await b.acquire()
    assert not b.held
    assert await a.current_holder() == "a"
    clock.now += TTL - 1
    assert await a.renew()  # renewed: a whole ttl again from now
    clock.now += TTL - 1
    assert not await b.acquire()
    clock.now += 2  # a stopped renewing: expired
    assert not a.held
    assert await b.acquire()
    assert await b.current_holder() == "b"
    assert not await a.renew()
    assert a.revision is None
    assert not await a.acquire()


async def test_of_many_contenders_exactly_one_wins(backend: MemoryBackend, clock: Clock) -> None:
    contenders = [lease(backend, clock, f"r{n}") for n in range(8)]
    won = await asyncio.gather(*(c.acquire() for c in contenders))
    assert sum(won) == 1
    winner = contenders[won.index(True)]
    assert await winner.current_holder() == winner.holder


async def test_a_released_lease_is_taken_at_once(backend: MemoryBackend, clock: Clock) -> None:
    a, b = lease(backend, clock, "a"), lease(backend, clock, "b")
    assert await a.acquire()
    await a.release()
    assert not a.held
    assert await a.current_holder() is None
    assert await b.acquire()
    await a.release()  # nothing of a's left: b keeps it
    assert await b.current_holder() == "b"


async def test_a_fenced_write_never_lands_after_a_takeover(backend: MemoryBackend,
                                                           clock: Clock) -> None:
    a, b = lease(backend, clock, "a"), lease(backend, clock, "b")
    assert await a.acquire()
    fence = a.fence()
    await backend.atomic([fence], [Put("/work", b"a while it leads")])
    clock.now += TTL + 1  # a paused (GC, network) past its lease; b took over
    with pytest.raises(CompareFailed):  # expired: the condition fails even before b writes
        await backend.atomic([fence], [Put("/work", b"a, too late")])
    assert await b.acquire()
    with pytest.raises(CompareFailed):
        await backend.atomic([fence], [Put("/work", b"a, too late")])
    assert not await a.still_held()
    with pytest.raises(LeaseLost):
        a.fence()
    item = await backend.get("/work")
    assert item is not None
    assert item.value == b"a while it leads"


async def test_the_record_names_its_holder_and_expires(backend: MemoryBackend,
                                                       clock: Clock) -> None:
    a = lease(backend, clock, "auth-1/abcd")
    assert await a.acquire()
    item = await backend.get(KEY)
    assert item is not None
    assert item.expires == clock.now + TTL
    assert json.loads(item.value)["holder"] == "auth-1/abcd"
    with pytest.raises(BadParameter):
        Lease(backend, KEY, "x", ttl=0)


# -- leadership ------------------------------------------------------------------------------


def leadership(backend: MemoryBackend, holder: str, ttl: float = 0.6) -> Leadership:
    return Leadership(Lease(backend, KEY, holder, ttl=ttl), renew_every=ttl / 4,
                      retry_every=0.05, name=holder)


@pytest.fixture
async def real_backend() -> AsyncIterator[MemoryBackend]:
    backend = MemoryBackend(sweep_interval=None)
    yield backend
    await backend.close()


async def test_a_follower_takes_over_when_the_leader_stops_renewing(
        real_backend: MemoryBackend) -> None:
    a, b = leadership(real_backend, "a"), leadership(real_backend, "b")
    assert await a.start()
    assert not await b.start()
    await wait_until(lambda: a.lease.revision is not None and a.lease.revision > 1)
    assert a.leading
    assert not b.leading
    assert a._task is not None
    a._task.cancel()  # a hangs: no more renewals, nothing released
    loop = asyncio.get_running_loop()
    hung = loop.time()
    await asyncio.wait_for(b.wait_until(True), 3.0)
    assert loop.time() - hung <= 0.6 + 0.15 + 1.0  # within ttl + renewal (and a margin)
    async with b.fenced() as fence:
        await real_backend.atomic(fence, [Put("/work", b"b")])
    with pytest.raises(LeaseLost):  # a still believes it leads: its fenced write is refused
        async with a.fenced() as fence:
            await real_backend.atomic(fence, [Put("/work", b"a")])
    assert not a.leading
    await b.stop()
    await a.stop()
    item = await real_backend.get("/work")
    assert item is not None
    assert item.value == b"b"


async def test_a_clean_stop_hands_over_at_the_next_try(real_backend: MemoryBackend) -> None:
    a, b = leadership(real_backend, "a", ttl=30.0), leadership(real_backend, "b", ttl=30.0)
    assert await a.start()
    assert not await b.start()
    await a.stop()
    await asyncio.wait_for(b.wait_until(True), 2.0)  # long before a's 30 s would end
    await b.stop()


async def test_a_write_refused_for_another_reason_is_not_a_lost_lease(
        real_backend: MemoryBackend) -> None:
    a = leadership(real_backend, "a")
    assert await a.start()
    with pytest.raises(CompareFailed) as caught:
        async with a.fenced() as fence:
            await real_backend.atomic([*fence, Condition("/absent", None)], [Put("/x", b"")])
    assert not isinstance(caught.value, LeaseLost)
    assert a.leading
    await a.stop()


# -- the Git sync behind a lease ------------------------------------------------------------


async def test_a_deposed_git_sync_writes_nothing(tmp_path: Path,
                                                 real_backend: MemoryBackend) -> None:
    remote = bare(tmp_path / "access.git")
    work = WorkTree(tmp_path / "work", remote)
    auth = AuthServer(real_backend, ClusterSettings(name="unit"), MemoryEmitter())
    await auth.start()
    a = leadership(real_backend, "a", ttl=30.0)
    assert await a.start()
    settings = Settings(data_dir=tmp_path / "data",
                        gitops=GitOpsSettings(source=str(remote), interval_seconds=60))
    sync = GitOpsSync(settings, auth, env={}, fence=a.fenced, leader="a")
    work.write("roles/dev.yaml", role("dev", "alice"))
    work.commit()
    assert (await sync.sync_once()).outcome is Outcome.APPLIED
    status = await real_backend.get(GITOPS_STATUS_KEY)
    assert status is not None
    assert json.loads(status.value)["leader"] == "a"

    await real_backend.delete(KEY)  # the lease is gone (expired and taken, say)
    assert await Lease(real_backend, KEY, "b", ttl=30.0).acquire()
    work.write("roles/ops.yaml", role("ops", "bob"))
    work.commit()
    before = await real_backend.current_revision()
    report = await sync.sync_once()
    assert report.outcome is Outcome.STANDBY
    assert await real_backend.current_revision() == before  # no object, no status, no event
    assert await auth.store.find(Kind.ROLE, "ops") is None
    await sync.stop()
    await a.stop()


async def test_a_pause_cancelled_as_its_sync_ends_stays_cancelled(tmp_path: Path) -> None:
    """The replica's leadership follower pauses the sync when it loses the lease, and is
    cancelled when the replica stops. A cancellation arriving as the paused sync finished was
    swallowed (``asyncio.wait_for`` on Python 3.11): the follower went on waiting to lead
    again and the replica's stop() waited forever. Each offset puts the cancellation at
    another step of the sync task ending."""
    remote = bare(tmp_path / "access.git")
    settings = Settings(data_dir=tmp_path / "data",
                        gitops=GitOpsSettings(source=str(remote), interval_seconds=60))
    sync = GitOpsSync(settings, AuthServer(MemoryBackend(), ClusterSettings(name="unit"),
                                           MemoryEmitter()), env={})
    cancelled = 0
    for steps in range(8):
        finish = asyncio.Event()
        sync._task = asyncio.create_task(finish.wait())
        pausing = asyncio.create_task(sync.pause())
        await wait_until(lambda: sync._task is None)  # pause() took the task and waits on it
        finish.set()
        for _ in range(steps):
            await asyncio.sleep(0)  # one event-loop step each: not a wait on anything
        if pausing.cancel():  # False: pause() had returned already, nothing to cancel
            with pytest.raises(asyncio.CancelledError):
                await pausing
            cancelled += 1
    assert cancelled >= 3  # the offsets did reach pause() before it returned
