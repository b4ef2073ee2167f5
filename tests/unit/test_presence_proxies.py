"""Presence with several proxies: an agent's record lists every proxy relaying its heartbeats
(``tunnels``, each expiring on its own, merged with compare-and-swap so concurrent relays are
all kept), and the proxies' own records (limen.auth.proxy_presence): a proxy announces only
itself, of this cluster, at a valid address, and drops out after the presence TTL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from limen.auth import presence, proxy_presence
from limen.auth.core import AuthServer
from limen.backend.base import Item
from limen.backend.memory import MemoryBackend
from limen.ca.identity import Identity, SystemRole
from limen.config import ClusterSettings
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def _doc(name: str = "web1") -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
            "metadata": {"name": name}, "spec": {"kind": "ssh"}}


def _proxy(host_id: str, cluster: str = "unit",
           role: SystemRole | None = SystemRole.PROXY) -> Identity:
    return Identity(username=host_id, cluster=cluster, system_role=role, host_id=host_id)


@pytest.fixture
async def auth_and_clock() -> tuple[AuthServer, Clock]:
    clock = Clock()
    server = AuthServer(MemoryBackend(clock=clock, sweep_interval=None),
                        ClusterSettings(name="unit"), MemoryEmitter(), clock=clock)
    await server.start()
    return server, clock


async def test_one_record_per_agent_lists_every_relaying_proxy(
        auth_and_clock: tuple[AuthServer, Clock]) -> None:
    auth, clock = auth_and_clock
    await presence.heartbeat(auth, _doc(), "h-1", "proxy-a", "unit")
    clock.now += 5
    record = await presence.heartbeat(auth, _doc(), "h-1", "proxy-b", "unit")
    assert (record["tunnel"], record["tunnels"]) == ("proxy-b", ["proxy-a", "proxy-b"])
    (listed,) = await presence.presence(auth)
    assert listed["tunnels"] == ["proxy-a", "proxy-b"]
    # proxy-a stops relaying (the agent lost its tunnel there): it drops out after the TTL
    clock.now += presence.PRESENCE_TTL - 10
    await presence.heartbeat(auth, _doc(), "h-1", "proxy-b", "unit")
    clock.now += 10
    (listed,) = await presence.presence(auth)
    assert (listed["tunnel"], listed["tunnels"]) == ("proxy-b", ["proxy-b"])
    assert set(listed["tunnel_expires"]) == {"proxy-b"}


class RacingBackend(MemoryBackend):
    """Every reader of the first round reads before any of them writes."""

    def __init__(self) -> None:
        super().__init__(sweep_interval=None)
        self.barrier: asyncio.Barrier | None = None
        self.conflicts = 0

    async def get(self, key: str) -> Item | None:
        item = await super().get(key)
        if self.barrier is not None:
            barrier = self.barrier
            if await barrier.wait() == 0:
                self.barrier = None
        return item

    async def compare_and_swap(self, key: str, expected_revision: int, value: bytes, *,
                               expires: float | None = None) -> Item:
        try:
            return await super().compare_and_swap(key, expected_revision, value,
                                                  expires=expires)
        except Exception:
            self.conflicts += 1
            raise


async def test_concurrent_relays_are_all_kept() -> None:
    proxies = [f"proxy-{i}" for i in range(6)]
    backend = RacingBackend()
    auth = AuthServer(backend, ClusterSettings(name="unit"), MemoryEmitter())
    await auth.start()
    backend.barrier = asyncio.Barrier(len(proxies))
    async with asyncio.timeout(10):
        await asyncio.gather(*(presence.heartbeat(auth, _doc(), "h-1", p, "unit")
                               for p in proxies))
    (listed,) = await presence.presence(auth)
    assert listed["tunnels"] == proxies
    assert backend.conflicts >= len(proxies) - 1  # they did race


async def test_db_presence_is_merged_the_same_way(
        auth_and_clock: tuple[AuthServer, Clock]) -> None:
    auth, _clock = auth_and_clock
    doc = {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource", "metadata": {"name": "pg"},
           "spec": {"kind": "db", "protocol": "postgres", "address": "db:5432"}}
    for proxy in ("proxy-a", "proxy-b"):
        await presence.heartbeat(auth, doc, "db-1", proxy, "unit", role="db")
    (listed,) = await presence.presence(auth, presence.DB_PRESENCE_PREFIX)
    assert listed["tunnels"] == ["proxy-a", "proxy-b"]


async def test_a_garbled_stored_record_is_replaced(
        auth_and_clock: tuple[AuthServer, Clock]) -> None:
    auth, _clock = auth_and_clock
    await auth.backend.put(presence.PRESENCE_PREFIX + "h-1", b"{not json")
    record = await presence.heartbeat(auth, _doc(), "h-1", "proxy-a", "unit")
    assert record["tunnels"] == ["proxy-a"]


async def test_proxies_announce_themselves_until_the_ttl(
        auth_and_clock: tuple[AuthServer, Clock]) -> None:
    auth, clock = auth_and_clock
    await proxy_presence.announce(auth, _proxy("proxy-b"), "10.0.0.2:3024")
    record = await proxy_presence.announce(auth, _proxy("proxy-a"), "[fd00::1]:3024")
    assert record["expires"] == clock.now + presence.PRESENCE_TTL
    listed = await proxy_presence.proxies(auth)
    assert [(p["host_id"], p["tunnel_address"]) for p in listed] == [
        ("proxy-a", "[fd00::1]:3024"), ("proxy-b", "10.0.0.2:3024")]
    clock.now += presence.PRESENCE_TTL - 1
    await proxy_presence.announce(auth, _proxy("proxy-a"), "10.0.0.1:3024")  # moved
    clock.now += 1
    assert [(p["host_id"], p["tunnel_address"]) for p in await proxy_presence.proxies(auth)] \
        == [("proxy-a", "10.0.0.1:3024")]


@pytest.mark.parametrize(("who", "address", "error"), [
    (_proxy("node-1", role=SystemRole.NODE), "10.0.0.1:3024", AccessDenied),
    (_proxy("someone", role=None), "10.0.0.1:3024", AccessDenied),
    (_proxy("proxy-x", cluster="other"), "10.0.0.1:3024", AccessDenied),
    (_proxy("proxy-a"), "no-port", BadParameter),
    (_proxy("proxy-a"), "host:0", BadParameter),
    (_proxy("proxy-a"), "ho st:3024", BadParameter),
    (_proxy("proxy-a"), "h" * 300 + ":3024", BadParameter),
])
async def test_bad_announcements_are_refused(
        auth_and_clock: tuple[AuthServer, Clock], who: Identity, address: str,
        error: type[Exception]) -> None:
    auth, _clock = auth_and_clock
    with pytest.raises(error):
        await proxy_presence.announce(auth, who, address)
    assert await proxy_presence.proxies(auth) == []
