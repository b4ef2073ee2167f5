"""Auth's readiness probe, ``GET /v1/ready`` on the join listener
(``limen.auth.http.readiness``): 200 while the backend answers with this cluster's name, 503
when it fails, is too slow or holds another cluster; the answer says nothing more; checks are
serialized and cached, so callers cannot make the database do more than one read a second;
the reason is logged once per change. Served by the join listener of a real AuthServer (no
client certificate there), next to ``/v1/join``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from limen.auth.core import AuthServer
from limen.auth.http.join_listener import build_join_app
from limen.auth.http.readiness import READY_PATH, BackendReadiness
from limen.auth.store_keys import CLUSTER_NAME_KEY
from limen.backend.base import Item
from limen.backend.memory import MemoryBackend
from limen.config import ClusterSettings
from limen.errors import ConnectionProblem
from limen.events.emitter import MemoryEmitter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FailingBackend(MemoryBackend):
    """A backend whose reads fail (``ConnectionProblem``) or hang while told to."""

    def __init__(self) -> None:
        super().__init__(sweep_interval=None)
        self.failing = False
        self.hanging = False

    async def get(self, key: str) -> Item | None:
        if self.hanging:
            await asyncio.Event().wait()
        if self.failing:
            raise ConnectionProblem("PostgreSQL database 'limen' on db.internal is unreachable")
        return await super().get(key)


@pytest.fixture
async def backend() -> AsyncIterator[FailingBackend]:
    made = FailingBackend()
    await made.put(CLUSTER_NAME_KEY, b"prod")
    yield made
    await made.close()


async def test_ready_while_the_backend_answers_with_this_cluster(
        backend: FailingBackend) -> None:
    clock = Clock()
    readiness = BackendReadiness(backend, lambda: "prod", cache_seconds=1.0, clock=clock)
    assert await readiness.check() is True
    backend.failing = True
    assert await readiness.check() is True  # the cached answer, within the second
    clock.now += 1.0
    assert await readiness.check() is False
    backend.failing = False
    clock.now += 1.0
    assert await readiness.check() is True
    assert await BackendReadiness(backend, lambda: "other").check() is False
    await backend.delete(CLUSTER_NAME_KEY)
    assert await BackendReadiness(backend, lambda: "prod").check() is False


async def test_a_hung_backend_is_not_ready_within_the_timeout(backend: FailingBackend) -> None:
    backend.hanging = True
    readiness = BackendReadiness(backend, lambda: "prod", timeout=0.2)
    async with asyncio.timeout(5):
        assert await readiness.check() is False


async def test_concurrent_probes_make_one_read(backend: FailingBackend) -> None:
    readiness = BackendReadiness(backend, lambda: "prod", cache_seconds=60.0)
    answers = await asyncio.gather(*(readiness.check() for _ in range(50)))
    assert answers == [True] * 50
    assert readiness.checks == 1


async def test_the_reason_is_logged_once_per_change(backend: FailingBackend,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    readiness = BackendReadiness(backend, lambda: "prod", cache_seconds=0.0, clock=clock)
    backend.failing = True
    with caplog.at_level(logging.INFO, logger="limen.auth.http.readiness"):
        for _ in range(3):
            assert await readiness.check() is False
        backend.failing = False
        assert await readiness.check() is True
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["not ready: the backend cannot be read: PostgreSQL database 'limen' "
                        "on db.internal is unreachable", "the backend answers again: ready"]


async def test_the_join_listener_serves_the_probe_and_says_nothing_more(
        backend: FailingBackend) -> None:
    server = AuthServer(backend, ClusterSettings(name="prod"), MemoryEmitter())
    await server.start()
    client = TestClient(TestServer(build_join_app(server)))
    await client.start_server()
    try:
        answer = await client.get(READY_PATH)
        assert (answer.status, await answer.json()) == (200, {"ready": True})
        backend.failing = True
        deadline = asyncio.get_running_loop().time() + 5
        while (answer := await client.get(READY_PATH)).status == 200:  # the cache expires
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert (answer.status, await answer.json()) == (503, {"ready": False})
        assert (await client.get("/v1/join")).status == 200  # liveness: no backend needed
        assert (await client.post(READY_PATH)).status == 405
        assert (await client.get(READY_PATH + "/x")).status == 404
    finally:
        await client.close()
