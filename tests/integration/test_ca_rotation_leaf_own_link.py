"""A leaf's own CA update over a real cluster link, in process, and the attacks on it.

Real parts on 127.0.0.1: the root proxy's ``TunnelServer`` (admitting leaves ``leaf`` and
``other`` with the host CAs the root's auth stores for them), the leaf proxy's ``TunnelAgent``
cluster link fed by the real ``LeafCAPublisher``, and the root's ``AuthServer`` applying what
the link brings with ``apply_leaf_cas`` under the LINK's cluster name, as the root proxy's
relay and ``POST /v1/trust/leaves/{leaf}/cas`` do. The run with real processes and OpenSSH is
``test_ca_rotation_leaf_own``.

* a key the leaf adds reaches the root's store over the link, audited ``leaf_to_root``;
* the leaf proxy's ``LeafLinks`` present its renewed host certificate on the link's next
  connection, which the root verifies with the leaf's new host key only (after standby);
* attacks, each refused and audited at the root with nothing stored: leaf sending an update of
  ``other`` (signed by other's own proxy) through its link; a replay of an older update; an
  update signed for the root → leaf direction; an update signed by a proxy of a CA the root
  does not trust for the leaf; an empty CA set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from limen.aio.backoff import Backoff
from limen.aio.changed import Changed
from limen.api.resources import Kind, Resource
from limen.auth.authorities import ca_resource_name
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.ca_update import Direction, make_update
from limen.auth.trusted_clusters.cas_apply import EVENT
from limen.auth.trusted_clusters.leaf_roots import TRUST_TRUSTED_CLUSTER, TRUSTED_CLUSTER_LABEL
from limen.auth.trusted_clusters.root_leaf_cas import apply_leaf_cas
from limen.auth.trusted_clusters.wire import CLUSTER_LABEL, TRUST_LABEL, TRUST_REMOTE, CASet
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import (
    generate_private_key,
    load_private_key,
    private_key_to_pem,
    public_key_to_openssh,
)
from limen.ca.ssh_certs import sign_host_cert
from limen.config import ClusterSettings
from limen.errors import AccessDenied, LimenError
from limen.events.emitter import MemoryEmitter
from limen.proxy.trust_leaf_links import LeafLinks
from limen.proxy.trust_leaf_own_cas import LeafCAPublisher
from limen.trust.cache import TrustCache
from limen.tunnel import TunnelAgent, TunnelAgentSettings, TunnelServer
from limen.tunnel.protocol import DialRequest, LeafCAs

DEADLINE = 10.0
TYPES = (CertAuthorityType.USER, CertAuthorityType.HOST, CertAuthorityType.TLS)


def _creds(server: AuthServer, role: SystemRole, host_id: str) -> HostCredentials:
    """Host credentials of ``role`` issued by ``server`` (as at a join)."""
    key, ssh_key = generate_private_key("ecdsa-p256"), generate_private_key()
    certs = server.issue_host_certs(host_id, host_id, role,
                                    public_key_to_openssh(key.public_key()), ["127.0.0.1"],
                                    ssh_public_key=public_key_to_openssh(ssh_key.public_key()))
    return HostCredentials(
        cluster=server.cluster_name, host_id=host_id, role=role.value,
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=certs.tls_cert,
        tls_ca_pem=certs.tls_cas.encode(), ssh_cert=certs.ssh_cert,
        ssh_key_pem=private_key_to_pem(ssh_key).encode())


def _cas(server: AuthServer, extra_host: CertAuthority | None = None) -> CASet:
    """``server``'s public CAs; with ``extra_host``, its key trusted too (a rotation's init)."""
    cas = {t: server.authorities.get(t).public_only() for t in TYPES}
    if extra_host is not None:
        host = cas[CertAuthorityType.HOST]
        cas[CertAuthorityType.HOST] = CertAuthority(
            host.cluster, host.type, host.active, (extra_host.public_only().active,))
    return CASet.of(cas)


async def _never(request: DialRequest) -> Any:
    raise AccessDenied("this test's leaf serves nothing")


async def _server(name: str, emitter: MemoryEmitter | None = None) -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name=name),
                        emitter or MemoryEmitter())
    await server.start()
    return server


@dataclass
class World:
    root: AuthServer
    leaf: AuthServer
    other: AuthServer
    events: MemoryEmitter
    server: TunnelServer
    address: str
    applied: list[tuple[str, Any]] = field(default_factory=list)
    """What the root's auth made of each update a link brought: (link cluster, result)."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    agents: list[TunnelAgent] = field(default_factory=list)
    progress: Changed = field(default_factory=Changed)
    """Notified after each update applied (or refused)."""

    async def until(self, done: Callable[[], Awaitable[bool]]) -> None:
        """Wait (within DEADLINE) until ``done()``, looking after each update applied."""
        async with asyncio.timeout(DEADLINE):
            while True:
                event = self.progress.event
                if await done():
                    return
                await event.wait()

    def take(self, cluster: str, update: Mapping[str, Any]) -> None:
        """The root proxy's sink: auth applies the update under the link's cluster."""
        async def apply() -> None:
            try:
                result: Any = await apply_leaf_cas(self.root, cluster, update,
                                                   relayed_by="root-proxy")
            except LimenError as err:
                result = err
            self.applied.append((cluster, result))
            self.progress.notify()
        task = asyncio.create_task(apply())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def link(self) -> TunnelAgent:
        """The leaf proxy's cluster link as ``LeafLinks`` opens it."""
        agent = TunnelAgent(self.address, _creds(self.leaf, SystemRole.PROXY, "leaf-proxy"),
                            None, lambda: {"nodes": []}, prepare=_never,
                            settings=TunnelAgentSettings(
                                peer_trust={"root": self.root.authorities.get(
                                    CertAuthorityType.HOST).trusted_public_keys()},
                                peer_cluster="root", heartbeat_interval=0.5))
        self.agents.append(agent)
        await agent.start()
        await agent.wait_for(lambda a: a.connected.is_set(), DEADLINE)
        assert agent.takes_leaf_cas  # the root's welcome said so
        return agent

    async def sent(self, agent: TunnelAgent, update: dict[str, Any]) -> Any:
        """Send ``update`` over ``agent``'s link; what the root's auth made of it."""
        before = len(self.applied)
        assert agent.send(LeafCAs(update=update))

        async def answered() -> bool:
            return len(self.applied) > before
        await self.until(answered)
        cluster, result = self.applied[-1]
        assert cluster == "leaf"  # the link's verified cluster, whatever the update says
        return result

    async def stored(self, leaf: str = "leaf") -> dict[str, Any]:
        return {t.value: CertAuthority.from_dict((await self.root.store.get(
            Kind.CERT_AUTHORITY, ca_resource_name(t, leaf))).spec).ssh_public_keys()
            if t is not CertAuthorityType.TLS else None for t in TYPES}

    def audited(self, success: bool) -> list[Mapping[str, Any]]:
        return [e.to_dict() for e in self.events.events
                if e.type == EVENT and e.success is success]


async def _admit(root: AuthServer, leaf: AuthServer) -> None:
    """What the root stores at the trusted-cluster handshake of ``leaf``."""
    name = leaf.cluster_name
    await root.store.create(Resource(Kind.REMOTE_CLUSTER, name, spec={"connection": "offline"}))
    for ca in (leaf.authorities.get(t).public_only() for t in TYPES):
        await root.store.create(Resource(
            Kind.CERT_AUTHORITY, ca_resource_name(ca.type, name), spec=ca.to_dict(),
            labels={CLUSTER_LABEL: name, TRUST_LABEL: TRUST_REMOTE}))


@pytest.fixture
async def world() -> AsyncIterator[World]:
    events = MemoryEmitter()
    root = await _server("root", events)
    leaf, other = await _server("leaf"), await _server("other")
    await _admit(root, leaf)
    await _admit(root, other)

    async def remote_trust(cluster: str) -> tuple[Any, ...]:  # RemoteClusters.host_ca_keys
        res = await root.store.find(Kind.CERT_AUTHORITY,
                                    ca_resource_name(CertAuthorityType.HOST, cluster))
        if res is None:
            raise AccessDenied(f"no trusted cluster named {cluster!r} was admitted here")
        return CertAuthority.from_dict(res.spec).trusted_public_keys()

    world: World
    server = TunnelServer(_creds(root, SystemRole.PROXY, "root-proxy"), emitter=events,
                          remote_trust=remote_trust, hello_timeout=5.0,
                          on_cluster_cas=lambda cluster, update: world.take(cluster, update))
    address = await server.start("127.0.0.1:0")
    world = World(root, leaf, other, events, server, address)
    try:
        yield world
    finally:
        for agent in world.agents:
            await agent.stop()
        await server.stop()
        await asyncio.gather(*world.tasks, return_exceptions=True)


async def test_the_leafs_publisher_sends_a_new_host_key_over_the_link(world: World) -> None:
    agent = await world.link()
    new = CertAuthority.generate("leaf", CertAuthorityType.HOST)
    own = [(_cas(world.leaf), agent.credentials)]
    publisher = LeafCAPublisher(lambda: own[0], lambda: {"root": agent}, interval=0.05)
    await publisher.start()
    try:
        async def first() -> bool:
            return bool(world.applied)

        async def added() -> bool:
            return new.active.ssh_public_key in (await world.stored())["host"]

        await world.until(first)  # sent when the link is up: the same set, nothing changed
        assert world.applied == [("leaf", False)]
        own[0] = (_cas(world.leaf, new), agent.credentials)  # init of a rotation at the leaf
        await world.until(added)
    finally:
        await publisher.stop()
    [event] = world.audited(True)
    assert event["leaf_cluster"] == "leaf"
    assert event["direction"] == "leaf_to_root"
    assert event["signer"] == "leaf-proxy"
    assert event["proxy"] == "root-proxy"
    assert world.audited(False) == []


async def test_a_leaf_cannot_update_another_leaf_through_its_link(world: World) -> None:
    agent = await world.link()
    before = await world.stored("other")
    other_proxy = _creds(world.other, SystemRole.PROXY, "other-proxy")
    new = CertAuthority.generate("other", CertAuthorityType.HOST)
    update = make_update(other_proxy, _cas(world.other, new), world.other.now(),
                         Direction.LEAF_TO_ROOT)  # genuinely signed by other's proxy
    result = await world.sent(agent, update)
    assert isinstance(result, AccessDenied)
    assert "naming cluster 'other' came by the link of leaf cluster 'leaf'" in str(result)
    assert await world.stored("other") == before
    [refused] = world.audited(False)
    assert refused["leaf_cluster"] == "leaf"
    assert refused["code"] == "L6005W"


async def test_replays_the_other_direction_untrusted_signers_and_empty_sets_are_refused(
        world: World) -> None:
    agent = await world.link()
    proxy = agent.credentials
    new = CertAuthority.generate("leaf", CertAuthorityType.HOST)
    now = world.leaf.now()
    older = make_update(proxy, _cas(world.leaf, new), now, Direction.LEAF_TO_ROOT)
    newer = make_update(proxy, _cas(world.leaf), now + timedelta(seconds=1),
                        Direction.LEAF_TO_ROOT)
    assert await world.sent(agent, older) is True
    assert await world.sent(agent, newer) is True  # the extra key dropped again
    stored = await world.stored()
    attacks = {
        "replay": older,
        "signature does not verify": make_update(
            proxy, _cas(world.leaf, new), now + timedelta(seconds=2), Direction.ROOT_TO_LEAF),
        "untrusted CA": make_update(
            _creds(await _server("leaf"), SystemRole.PROXY, "leaf-proxy"),  # another "leaf"
            _cas(world.leaf, new), now + timedelta(seconds=3), Direction.LEAF_TO_ROOT),
        "zero host CA keys": make_update(
            proxy, CASet(user=_cas(world.leaf).user, host=(), tls=_cas(world.leaf).tls),
            now + timedelta(seconds=4), Direction.LEAF_TO_ROOT),
    }
    for words, update in attacks.items():
        result = await world.sent(agent, update)
        assert isinstance(result, LimenError), (words, result)
        assert words in str(result)
        assert await world.stored() == stored
        refused = world.audited(False)[-1]
        assert refused["leaf_cluster"] == "leaf"
        assert words in refused["reason"]
        assert refused["direction"] == "leaf_to_root"
    assert len(world.audited(False)) == len(attacks)
    assert agent.connected.is_set()  # refusals are the auth's; the link stays


async def test_a_link_presents_the_renewed_certificate_the_root_verifies_with_the_new_key(
        world: World) -> None:
    """The leaf proxy's ``LeafLinks``: after ``update_servers`` renewed this proxy's host
    certificate with the leaf's new host key and ``standby`` left the root only that key, the
    running link's next connection presents the renewed certificate and the root verifies it.
    """
    name = world.root.cluster_name
    await world.leaf.store.create(Resource(Kind.TRUSTED_CLUSTER, name, spec={
        "enabled": True, "proxy_address": "root.example:3080", "tunnel_address": world.address,
        "token_secret_ref": {"file": "root.token"}}))
    for ca in (world.root.authorities.get(t).public_only() for t in TYPES):
        await world.leaf.store.create(Resource(
            Kind.CERT_AUTHORITY, ca_resource_name(ca.type, name), spec=ca.to_dict(),
            labels={CLUSTER_LABEL: name, TRUST_LABEL: TRUST_TRUSTED_CLUSTER,
                    TRUSTED_CLUSTER_LABEL: name}))
    cache = TrustCache(world.leaf.store, lambda: "leaf")
    await cache.refresh()
    old = _creds(world.leaf, SystemRole.PROXY, "leaf-proxy")
    new_host = CertAuthority.generate("leaf", CertAuthorityType.HOST)
    renewed = replace(old, ssh_cert=sign_host_cert(
        new_host, public_key_to_openssh(load_private_key(old.ssh_key_pem).public_key()),
        "leaf-proxy", "leaf-proxy",
        ["127.0.0.1"], timedelta(hours=1), SystemRole.PROXY))

    async def nodes(_registry: Any) -> list[Any]:
        return []

    proxy = SimpleNamespace(credentials=old, view=SimpleNamespace(nodes=nodes),
                            tunnel=SimpleNamespace(registry=None),
                            root_cas=SimpleNamespace(cas=None))
    links = LeafLinks(cache, lambda: proxy, MemoryEmitter(),  # type: ignore[arg-type,return-value]
                      backoff=lambda: Backoff(0.05, 0.1))
    await links.sync()
    try:
        agent = links.links[name].agent
        await agent.wait_for(lambda a: a.connected.is_set(), DEADLINE)
        first = world.server._by_cluster["leaf"]
        await world.root.store.update((await world.root.store.get(  # standby at the root
            Kind.CERT_AUTHORITY, "host.leaf")).replace(spec=new_host.public_only().to_dict()))
        proxy.credentials = renewed  # update_servers at the leaf
        await links.sync()
        assert agent.credentials is renewed
        first.close()  # the link's connection ends: it reconnects
        await world.server.clusters.wait_for(
            lambda r: "leaf" in r and world.server._by_cluster["leaf"] is not first, DEADLINE)
        assert world.server._by_cluster["leaf"].identity is not None
        assert not [e for e in world.events.events if e.type == "auth" and e.success is False]
    finally:
        await links.stop()
