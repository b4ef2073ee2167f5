"""Heartbeats in batches: the proxy's relay (``limen.proxy.heartbeat_relay``) gathers its
agents' heartbeats and sends them once a second to auth's ``POST /v1/presence/heartbeats``
(``limen.auth.presence.heartbeats``), which writes a record again only when it changed or half
of its relay's time to live has passed.

A real ``AuthService`` on 127.0.0.1 (mutual TLS, memory backend); the relay holds a proxy host
certificate auth issued. Attacks: a crafted Resource in a batch (refused alone, the rest
stored), a node's certificate posting a batch (refused), an oversized batch (refused)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from limen.auth import presence
from limen.auth.auth_service import AuthService
from limen.auth.client import AuthClient
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.config import ClusterSettings, Listeners, Settings
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter
from limen.proxy.heartbeat_relay import HeartbeatRelay
from limen.tunnel.registry import AgentRecord

CLUSTER = "unit"


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def _doc(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
            "metadata": {"name": name, "labels": {"env": "dev"}},
            "spec": {"kind": "ssh", **spec}}


DB: dict[str, Any] = {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
                      "metadata": {"name": "orders"},
                      "spec": {"kind": "db", "protocol": "postgres", "address": "10.0.0.9:5432"}}


def _agent(host_id: str, role: str = "node") -> AgentRecord:
    return AgentRecord(host_id=host_id, hostname=host_id, cluster=CLUSTER, role=role,
                       address="127.0.0.1:1", connected_at=datetime.now(UTC))


# -- auth: the batch and the writes it spares ---------------------------------------------------

@pytest.fixture
async def auth_and_clock() -> tuple[AuthServer, Clock]:
    clock = Clock()
    server = AuthServer(MemoryBackend(clock=clock, sweep_interval=None),
                        ClusterSettings(name=CLUSTER), MemoryEmitter(), clock=clock)
    await server.start()
    return server, clock


async def test_a_crafted_item_is_refused_alone(auth_and_clock: tuple[AuthServer, Clock]
                                               ) -> None:
    auth, _clock = auth_and_clock
    items = [
        {"resource": _doc("web1"), "host_id": "h-1", "cluster": CLUSTER, "role": "node"},
        {"resource": DB, "host_id": "h-2",  # not a node's kind
         "cluster": CLUSTER, "role": "node"},
        {"resource": _doc("web3"), "host_id": "../h-3", "cluster": CLUSTER, "role": "node"},
        {"resource": "not a document", "host_id": "h-4", "cluster": CLUSTER},
        {"resource": _doc("web5"), "host_id": "h-5", "cluster": "another", "role": "node"},
        {"resource": _doc("web6"), "host_id": "h-6", "cluster": CLUSTER, "role": "node"},
    ]
    errors = await presence.heartbeats(auth, "proxy-1", items)
    assert errors[0] is None
    assert errors[5] is None
    assert all(errors[1:5]), errors
    assert "spec.kind" in str(errors[1])
    assert "host id" in str(errors[2])
    assert sorted(r["host_id"] for r in await presence.presence(auth)) == ["h-1", "h-6"]


async def test_too_many_items_in_one_batch_are_refused(
        auth_and_clock: tuple[AuthServer, Clock]) -> None:
    auth, _clock = auth_and_clock
    item = {"resource": _doc("web1"), "host_id": "h-1", "cluster": CLUSTER, "role": "node"}
    with pytest.raises(BadParameter, match="at most"):
        await presence.heartbeats(auth, "proxy-1", [item] * (presence.MAX_BATCH + 1))
    assert await presence.presence(auth) == []


async def test_an_unchanged_record_is_written_every_other_heartbeat(
        auth_and_clock: tuple[AuthServer, Clock]) -> None:
    auth, clock = auth_and_clock
    backend = auth.backend

    async def beat(doc: dict[str, Any], tunnel: str = "proxy-1") -> int:
        await presence.heartbeat(auth, doc, "h-1", tunnel, CLUSTER)
        return await backend.current_revision()

    first = await beat(_doc("web1"))
    clock.now += 10
    assert await beat(_doc("web1")) == first  # 25 s of 35 left: nothing written
    clock.now += 10
    second = await beat(_doc("web1"))  # 15 s left: renewed
    assert second > first
    (listed,) = await presence.presence(auth)
    assert listed["expires"] == clock.now + presence.PRESENCE_TTL
    clock.now += 1
    changed = await beat(_doc("web1", address="10.0.0.7:3022"))  # a new Resource: at once
    assert changed > second
    assert await beat(_doc("web1"), tunnel="proxy-2") > changed  # a new relay: at once
    (listed,) = await presence.presence(auth)
    assert listed["tunnels"] == ["proxy-1", "proxy-2"]
    assert listed["resource"]["spec"] == {"kind": "ssh"}
    for _ in range(10):  # beating every 10 s, the record never expires
        clock.now += 10
        await beat(_doc("web1"))
        assert [r["host_id"] for r in await presence.presence(auth)] == ["h-1"]


async def test_a_batch_is_one_transaction(auth_and_clock: tuple[AuthServer, Clock]) -> None:
    auth, _clock = auth_and_clock
    before = await auth.backend.current_revision()
    items = [{"resource": _doc(f"web{n}"), "host_id": f"h-{n}", "cluster": CLUSTER}
             for n in range(50)]
    assert await presence.heartbeats(auth, "proxy-1", items) == [None] * 50
    assert await auth.backend.current_revision() == before + 1
    assert len(await presence.presence(auth)) == 50


class RacingBackend(MemoryBackend):
    """Another proxy relays h-1's heartbeat between the batch's reads and its write."""

    auth: AuthServer | None = None

    async def atomic(self, conditions: Any, ops: Any) -> int:
        if self.auth is not None:
            auth, self.auth = self.auth, None
            await presence.heartbeat(auth, _doc("web1"), "h-1", "proxy-2", CLUSTER)
        return await super().atomic(conditions, ops)


async def test_a_batch_racing_another_proxy_keeps_both_relays() -> None:
    clock = Clock()
    backend = RacingBackend(clock=clock, sweep_interval=None)
    auth = AuthServer(backend, ClusterSettings(name=CLUSTER), MemoryEmitter(), clock=clock)
    await auth.start()
    backend.auth = auth
    items = [{"resource": _doc(f"web{n}"), "host_id": f"h-{n}", "cluster": CLUSTER}
             for n in (1, 2)]
    assert await presence.heartbeats(auth, "proxy-1", items) == [None, None]
    records = {r["host_id"]: r for r in await presence.presence(auth)}
    assert records["h-1"]["tunnels"] == ["proxy-1", "proxy-2"]
    assert records["h-2"]["tunnels"] == ["proxy-1"]


# -- the proxy's relay against a real auth --------------------------------------------------------

@pytest.fixture
async def auth_service(tmp_path: Path) -> AsyncIterator[AuthService]:
    settings = Settings(data_dir=tmp_path / "data", cluster=ClusterSettings(name=CLUSTER),
                        listeners=Listeners(auth="127.0.0.1:0"))
    settings.data_dir.mkdir(mode=0o700)
    auth = AuthService(settings, MemoryBackend(), MemoryEmitter())
    await auth.start()
    try:
        yield auth
    finally:
        await auth.stop()


@pytest.fixture
async def clients(auth_service: AuthService) -> AsyncIterator[list[AuthClient]]:
    made: list[AuthClient] = []
    yield made
    for client in made:
        await client.close()


def _client(auth: AuthService, made: list[AuthClient], host_id: str,
            role: SystemRole) -> AuthClient:
    key = generate_private_key()
    certs = auth.server.issue_host_certs(host_id, host_id, role,
                                         public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    client = AuthClient(auth.address, HostCredentials(
        cluster=CLUSTER, host_id=host_id, role=role.value, hostname=host_id,
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=certs.tls_cert,
        tls_ca_pem=certs.tls_cas.encode(), ssh_cert=certs.ssh_cert), timeout=10.0)
    made.append(client)
    return client


async def test_the_relay_sends_each_agents_latest_heartbeat_in_one_request(
        auth_service: AuthService, clients: list[AuthClient]) -> None:
    relay = HeartbeatRelay(_client(auth_service, clients, "proxy-1", SystemRole.PROXY),
                           "proxy-1", batch=2)
    for n in range(5):
        relay.submit(_agent(f"node-{n}"), _doc(f"web{n}", address="10.0.0.1:1"))
    relay.submit(_agent("node-0"), _doc("web0", address="10.0.0.9:3022"))  # replaces the first
    relay.submit(_agent("node-9"), DB)  # crafted
    await relay.flush()
    assert relay.sent == 5
    records = {r["host_id"]: r for r in await presence.presence(auth_service.server)}
    assert sorted(records) == [f"node-{n}" for n in range(5)]
    assert records["node-0"]["resource"]["spec"]["address"] == "10.0.0.9:3022"
    assert {r["tunnel"] for r in records.values()} == {"proxy-1"}


async def test_a_batch_auth_could_not_take_is_sent_again(
        auth_service: AuthService, clients: list[AuthClient]) -> None:
    proxy = _client(auth_service, clients, "proxy-1", SystemRole.PROXY)
    relay = HeartbeatRelay(AuthClient("127.0.0.1:1", proxy.credentials, timeout=2.0),
                           "proxy-1")
    clients.append(relay.auth)
    relay.submit(_agent("node-1"), _doc("web1"))
    await relay.flush()  # nobody listens on port 1
    assert relay.sent == 0
    relay.submit(_agent("node-2"), _doc("web2"))
    relay.auth = proxy  # auth is reachable again
    await relay.flush()
    assert relay.sent == 2
    assert sorted(r["host_id"] for r in await presence.presence(auth_service.server)) == \
        ["node-1", "node-2"]


async def test_only_a_proxy_may_post_heartbeats(auth_service: AuthService,
                                                clients: list[AuthClient]) -> None:
    node = _client(auth_service, clients, "node-1", SystemRole.NODE)
    item = {"resource": _doc("web1"), "host_id": "node-2", "cluster": CLUSTER, "role": "node"}
    with pytest.raises(AccessDenied):
        await node.call("POST", "/v1/presence/heartbeats", {"tunnel": "node-1", "items": [item]})
    proxy = _client(auth_service, clients, "proxy-1", SystemRole.PROXY)
    with pytest.raises(BadParameter, match="items"):
        await proxy.call("POST", "/v1/presence/heartbeats", {"tunnel": "proxy-1",
                                                             "items": "all of them"})
    assert await presence.presence(auth_service.server) == []


async def test_an_auth_without_the_batch_route_gets_them_one_by_one(
        auth_service: AuthService, clients: list[AuthClient]) -> None:
    """An older auth during an upgrade answers 404 to the batch route (here: a path this auth
    does not serve either)."""
    proxy = _client(auth_service, clients, "proxy-1", SystemRole.PROXY)
    relay = HeartbeatRelay(proxy, "proxy-1")
    relay.batch_path = "/v1/presence/heartbeats-of-a-later-version"
    relay.submit(_agent("node-1"), _doc("web1"))
    relay.submit(_agent("node-2"), DB)
    await relay.flush()
    assert relay.sent == 1
    assert [r["host_id"] for r in await presence.presence(auth_service.server)] == ["node-1"]
