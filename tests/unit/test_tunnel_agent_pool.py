"""The agent pool (limen.tunnel.agent_pool) against real tunnel servers on 127.0.0.1: it dials
every proxy the proxies announce, a proxy that appears is dialled and one gone from the set is
forgotten, the same proxy reached at two addresses keeps one tunnel (``held`` in the hello:
the proxy welcomes a redundant connection without registering it), dials arrive through every
proxy, and the route to auth uses the proxies in turn. A dial whose tunnel is replaced is sent
over the new one; one whose tunnel closes fails at once, not after the dial timeout."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from limen.aio.backoff import Backoff
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem
from limen.ca.ssh_certs import sign_host_cert
from limen.errors import ConnectionProblem, NotFound
from limen.net.address import parse_address
from limen.tunnel.agent import TunnelAgent
from limen.tunnel.agent_pool import TunnelAgentPool
from limen.tunnel.agent_settings import TunnelAgentSettings
from limen.tunnel.control import AgentLink
from limen.tunnel.protocol import KIND_NODE, DialRequest, ProxyEntry
from limen.tunnel.registry import AgentRecord
from limen.tunnel.server import DataConnection, TunnelServer

CLUSTER = "unit"
NODE = "node-1"
DEADLINE = 10.0


def _creds(ca: CertAuthority, host_id: str, role: SystemRole) -> HostCredentials:
    key = generate_private_key()
    return HostCredentials(
        cluster=CLUSTER, host_id=host_id, role=role.value, hostname=host_id,
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=b"", tls_ca_pem=b"",
        ssh_cert=sign_host_cert(ca, key.public_key(), host_id, host_id, [],
                                timedelta(hours=1), role),
        host_ca_keys=tuple(ca.ssh_public_keys()))


class CountingServer(TunnelServer):
    """A tunnel server that counts the control connections it saw and registered."""

    opened = 0
    registrations = 0

    def link_opened(self, link: AgentLink) -> None:
        self.opened += 1
        super().link_opened(link)

    def register(self, link: AgentLink, record: AgentRecord) -> None:
        self.registrations += 1
        super().register(link, record)


@dataclass
class Env:
    ca: CertAuthority
    node: HostCredentials
    proxies: dict[str, CountingServer] = field(default_factory=dict)
    dials: list[tuple[str, DialRequest]] = field(default_factory=list)
    pools: list[TunnelAgentPool] = field(default_factory=list)

    async def proxy(self, name: str, address: str = "127.0.0.1:0", *,
                    auth_address: str | None = None) -> CountingServer:
        server = CountingServer(_creds(self.ca, name, SystemRole.PROXY),
                              auth_address=auth_address)
        await server.start(address)
        self.proxies[name] = server
        return server

    def announce(self, *entries: ProxyEntry) -> None:
        """Every running proxy tells the same set (as auth's answer would)."""
        for server in self.proxies.values():
            if server.address and server._server is not None:
                server.set_proxies(entries)

    def pool(self, seed: str, *, forget_after: float = 60.0,
             connect_timeout: float = 10.0) -> TunnelAgentPool:
        async def handler(sock: socket.socket, request: DialRequest) -> None:
            self.dials.append((request.target, request))
            sock.close()

        pool = TunnelAgentPool(seed, self.node, handler, dict, settings=TunnelAgentSettings(
            backoff=lambda: Backoff(base=0.05, cap=0.2), forget_after=forget_after,
            connect_timeout=connect_timeout))
        self.pools.append(pool)
        return pool


def entry(server: TunnelServer, address: str | None = None) -> ProxyEntry:
    return ProxyEntry(server.credentials.host_id, address or server.address)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    ca = CertAuthority.generate(CLUSTER, CertAuthorityType.HOST)
    state = Env(ca, _creds(ca, NODE, SystemRole.NODE))
    try:
        yield state
    finally:
        for pool in state.pools:
            await pool.stop()
        for server in state.proxies.values():
            await server.stop()


async def registered(server: TunnelServer) -> None:
    await server.registry.wait_for(lambda r: NODE in r, DEADLINE)


async def test_the_pool_keeps_a_tunnel_to_every_announced_proxy(env: Env) -> None:
    a, b = await env.proxy("proxy-a"), await env.proxy("proxy-b")
    env.announce(entry(a), entry(b))
    pool = env.pool(a.address)
    await pool.start()
    await pool.wait_for(lambda p: p.proxy_ids == {"proxy-a", "proxy-b"}, DEADLINE)
    await registered(a)
    await registered(b)
    assert set(pool.agents) == {a.address, b.address}
    assert pool.connected.is_set()
    assert (a.registrations, b.registrations) == (1, 1)  # no tunnel replaced another
    for server, target in ((a, "via-a"), (b, "via-b")):
        conn = await server.dial(NODE, DialRequest(kind=KIND_NODE, target=target))
        conn.close()
    assert [target for target, _ in env.dials] == ["via-a", "via-b"]


async def test_a_proxy_that_appears_is_dialled(env: Env) -> None:
    a = await env.proxy("proxy-a")
    env.announce(entry(a))
    pool = env.pool(a.address)
    await pool.start()
    await pool.wait_for(lambda p: p.proxy_ids == {"proxy-a"}, DEADLINE)
    assert set(pool.agents) == {a.address}
    c = await env.proxy("proxy-c")
    env.announce(entry(a), entry(c))
    await pool.wait_for(lambda p: p.proxy_ids == {"proxy-a", "proxy-c"}, DEADLINE)
    await registered(c)


async def test_a_proxy_gone_from_the_set_is_forgotten_after_a_while(env: Env) -> None:
    a, b = await env.proxy("proxy-a"), await env.proxy("proxy-b")
    env.announce(entry(a), entry(b))
    pool = env.pool(a.address, forget_after=0.3)
    await pool.start()
    await pool.wait_for(lambda p: p.proxy_ids == {"proxy-a", "proxy-b"}, DEADLINE)
    b_address = b.address
    await b.stop()
    del env.proxies["proxy-b"]
    await pool.wait_for(lambda p: p.proxy_ids == {"proxy-a"}, DEADLINE)
    assert b_address in pool.agents  # still announced: the tunnel keeps trying
    env.announce(entry(a))
    await pool.wait_for(lambda p: set(p.agents) == {a.address}, DEADLINE)
    assert pool.proxy_ids == {"proxy-a"}
    assert [p.host_id for p in pool.known] == ["proxy-a"]


async def test_the_seed_is_never_forgotten(env: Env) -> None:
    a, b = await env.proxy("proxy-a"), await env.proxy("proxy-b")
    env.announce(entry(b))  # a does not list itself: its address is the seed all the same
    pool = env.pool(a.address, forget_after=0.1)
    await pool.start()
    await pool.wait_for(lambda p: p.proxy_ids == {"proxy-a", "proxy-b"}, DEADLINE)
    a_address = a.address
    await a.stop()
    del env.proxies["proxy-a"]
    await pool.wait_for(lambda p: p.proxy_ids == {"proxy-b"}, DEADLINE)
    assert a_address in pool.agents
    assert pool.seed.address == a_address


async def test_a_hello_naming_the_proxy_is_welcomed_but_not_registered(env: Env) -> None:
    a = await env.proxy("proxy-a")
    env.announce(entry(a))
    slept: list[float] = []
    redundant = asyncio.Event()

    class HeldElsewhere:
        def held_elsewhere(self, agent: TunnelAgent) -> Collection[str]:
            return {"proxy-a"}

        def changed(self, agent: TunnelAgent) -> None:
            if agent.redundant_for:
                redundant.set()

    waiting = asyncio.Event()

    async def sleep(delay: float) -> None:
        slept.append(delay)
        waiting.set()
        await asyncio.Event().wait()  # one attempt is enough

    async def handler(sock: socket.socket, request: DialRequest) -> None:
        raise AssertionError("a redundant tunnel serves nothing")

    agent = TunnelAgent(a.address, env.node, handler, dict, observer=HeldElsewhere(),
                        settings=TunnelAgentSettings(redundant_retry=42.0, sleep=sleep))
    await agent.start()
    try:
        async with asyncio.timeout(DEADLINE):
            await redundant.wait()
            await waiting.wait()
    finally:
        await agent.stop()
    assert agent.redundant_for == "proxy-a"
    assert agent.proxies == (entry(a),)  # the welcome's set is still heard
    assert agent.connections == 0
    assert not agent.connected.is_set()
    assert slept == [42.0]
    assert (a.opened, a.registrations) == (1, 0)
    assert NODE not in a.registry


async def test_the_same_proxy_at_two_addresses_keeps_one_tunnel(env: Env) -> None:
    a = await env.proxy("proxy-a")
    port = parse_address(a.address)[1]
    seed, announced = f"127.0.0.1:{port}", f"localhost:{port}"
    env.announce(entry(a, announced))
    pool = env.pool(seed)
    await pool.start()
    await pool.wait_for(lambda p: p.proxy_ids == {"proxy-a"} and bool(p.known), DEADLINE)
    assert set(pool.agents) == {seed}  # proxy-a is held: its other address is not dialled
    first = a.registry[NODE].connected_at
    for link in list(a.links):  # the proxy drops the tunnel: both addresses race back
        link.close()

    def settled(p: TunnelAgentPool) -> bool:
        up = [x for x in p.agents.values() if x.connected.is_set()]
        quiet = [x for x in p.agents.values() if not x.connected.is_set()]
        return len(up) == 1 and all(x is p.seed and p.seed.redundant_for for x in quiet)

    # registered again first: until the pool has seen the drop, its old state looks settled
    await a.registry.wait_for(lambda r: NODE in r and r[NODE].connected_at != first, DEADLINE)
    await pool.wait_for(settled, DEADLINE)
    registered_links = [link for link in a.links
                        if link.host_id == NODE and not link.redundant and not link.replaced]
    assert len(registered_links) == 1
    conn = await a.dial(NODE, DialRequest(kind=KIND_NODE, target="after"))
    conn.close()
    assert env.dials[-1][0] == "after"


class HeldFirstDial:
    """A dial preparer that holds the first dial it gets (its tunnel never answers it) and
    serves every later one: records the targets served."""

    def __init__(self) -> None:
        self.first_seen = asyncio.Event()
        self.release = asyncio.Event()
        self.served: list[str] = []

    async def __call__(self, request: DialRequest) -> HeldFirstDial.Prepared:
        if not self.first_seen.is_set():
            self.first_seen.set()
            await self.release.wait()
        return self.Prepared(self, request.target)

    @dataclass
    class Prepared:
        owner: HeldFirstDial
        target: str

        async def serve(self, sock: socket.socket) -> None:
            self.owner.served.append(self.target)
            sock.close()

        def cancel(self) -> None:
            pass


def lone_agent(env: Env, proxy: TunnelServer, prepare: HeldFirstDial) -> TunnelAgent:
    """A tunnel agent of the node that, once its tunnel is closed, stays away for the test."""
    return TunnelAgent(proxy.address, env.node, None, dict, prepare=prepare,
                       settings=TunnelAgentSettings(backoff=lambda: Backoff(base=60, cap=60)))


async def held_dial(agent: TunnelAgent, proxy: TunnelServer, prepare: HeldFirstDial,
                    target: str) -> asyncio.Task[DataConnection]:
    """Start ``agent`` and dial it through ``proxy`` (whose dial timeout is made too long to
    matter); the dial once the agent holds it unanswered."""
    proxy.dial_timeout = 60.0
    await agent.start()
    await registered(proxy)
    dial = asyncio.create_task(proxy.dial(NODE, DialRequest(kind=KIND_NODE, target=target)))
    async with asyncio.timeout(DEADLINE):
        await prepare.first_seen.wait()
    return dial


async def test_a_dial_whose_tunnel_is_replaced_is_sent_over_the_new_one(env: Env) -> None:
    a = await env.proxy("proxy-a")
    prepare = HeldFirstDial()
    first, second = lone_agent(env, a, prepare), lone_agent(env, a, prepare)
    try:
        dial = await held_dial(first, a, prepare, "moved")
        await second.start()  # registers, replacing the tunnel the dial went over
        async with asyncio.timeout(DEADLINE):
            conn = await dial
        conn.close()
        assert prepare.served == ["moved"]
        assert a.registrations == 2
    finally:
        await first.stop()
        await second.stop()


async def test_a_dial_whose_tunnel_closes_fails_at_once(env: Env) -> None:
    a = await env.proxy("proxy-a")
    prepare = HeldFirstDial()
    agent = lone_agent(env, a, prepare)
    try:
        dial = await held_dial(agent, a, prepare, "lost")
        for link in list(a.links):
            link.close()
        with pytest.raises(NotFound, match="no agent with host id node-1"):
            async with asyncio.timeout(DEADLINE):
                await dial
        assert prepare.served == []
    finally:
        await agent.stop()


async def test_the_auth_route_takes_the_proxies_in_turn(env: Env) -> None:
    async def stand_in(name: bytes) -> tuple[asyncio.Server, str]:
        async def answer(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(name)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    auth_a, address_a = await stand_in(b"auth seen by a")
    auth_b, address_b = await stand_in(b"auth seen by b")
    try:
        a = await env.proxy("proxy-a", auth_address=address_a)
        b = await env.proxy("proxy-b", auth_address=address_b)
        env.announce(entry(a), entry(b))
        pool = env.pool(a.address)
        listener = await pool.local_auth_listener()
        await pool.start()
        await pool.wait_for(lambda p: len(p.proxy_ids) == 2, DEADLINE)
        host, port = parse_address(listener)

        async def through() -> bytes:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                async with asyncio.timeout(DEADLINE):
                    return await reader.read()
            finally:
                writer.close()

        assert {await through(), await through()} == {b"auth seen by a", b"auth seen by b"}
        await b.stop()
        del env.proxies["proxy-b"]
        await pool.wait_for(lambda p: p.proxy_ids == {"proxy-a"}, DEADLINE)
        assert {await through(), await through()} == {b"auth seen by a"}
    finally:
        auth_a.close()
        auth_b.close()


async def test_the_auth_route_without_any_tunnel_is_a_connection_problem(env: Env) -> None:
    pool = env.pool("127.0.0.1:1", connect_timeout=0.2)  # nothing listens there
    await pool.start()
    with pytest.raises(ConnectionProblem, match="no tunnel to any proxy"):
        await pool.request_auth_ticket()
