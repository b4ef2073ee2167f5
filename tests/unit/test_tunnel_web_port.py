"""The reverse tunnel through the proxy's web port (issue #20, TLS routing): a real
``TLSRouter`` whose ALPN route ``limen-tunnel`` is the ``TunnelServer``'s protocol (the server
started without a tunnel listener), and real ``TunnelAgent``s given a ``tls://`` address.

The agent's control connection is welcomed and registered, a dial reaches its handler over a
data connection through the web port, its route to auth works the same way, and it connects
again to a proxy restarted on the same port; an agent pool keeps a tunnel to a one-port
proxy (``tls://``) and to one with a tunnel listener, as each announces, and gets each one's
trust push; garbage on the
ALPN is dropped while the web port keeps answering HTTP; an agent whose host certificate is
another CA's is refused inside the TLS stream and audited as on the tunnel port; a proxy
whose web certificate is not a proxy's of the cluster, or that does not route the ALPN, is
refused by the agent before any SSH.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from limen.auth import proxy_presence
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.ssh_peer import trust_map
from limen.config import ClusterSettings, load_settings
from limen.errors import BadParameter
from limen.events.emitter import MemoryEmitter
from limen.net.address import bind_tcp
from limen.net.tunnel_address import ALPN_TUNNEL, parse_tunnel_address
from limen.proxy.proxy_peers import announced_web_tunnel_address, proxy_entries
from limen.proxy.tls_router import ProtocolFactory, TLSRouter
from limen.proxy.trust_leaf_links import tunnel_address_from_ping
from limen.tunnel.agent import TunnelAgent
from limen.tunnel.agent_pool import TunnelAgentPool
from limen.tunnel.agent_settings import TunnelAgentSettings
from limen.tunnel.protocol import KIND_NODE, MODE_RAW, DialRequest, ProxyEntry, TrustPush
from limen.tunnel.server import TunnelServer

CLUSTER = "unit"
WITHIN = 10.0


async def _auth() -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name=CLUSTER), MemoryEmitter())
    await server.start()
    return server


def _creds(auth: AuthServer, role: SystemRole, host_id: str) -> HostCredentials:
    key = generate_private_key()
    certs = auth.issue_host_certs(host_id, host_id, role,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    return HostCredentials(
        cluster=auth.cluster_name, host_id=host_id, role=role.value, hostname=host_id,
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=certs.tls_cert,
        tls_ca_pem=certs.tls_cas.encode(), ssh_cert=certs.ssh_cert,
        user_ca_keys=tuple(certs.user_ca_keys), host_ca_keys=tuple(certs.host_ca_keys))


async def _echo(sock: socket.socket, _request: DialRequest) -> None:
    """The node's dial handler: echoes the data connection's bytes once, then closes."""
    loop = asyncio.get_running_loop()
    with sock:
        sock.setblocking(False)
        data = await loop.sock_recv(sock, 1024)
        await loop.sock_sendall(sock, b"echo:" + data)


async def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WITHIN
    while not predicate():  # registry state: no event to await
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WITHIN} s")
        await asyncio.sleep(0.02)


@dataclass
class Proxy:
    auth: AuthServer
    tunnel: TunnelServer
    port: int
    audit: MemoryEmitter
    stack: AsyncExitStack

    @property
    def address(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    async def agent(self, creds: HostCredentials,
                    settings: TunnelAgentSettings | None = None) -> TunnelAgent:
        agent = TunnelAgent(self.address, creds, _echo, lambda: {"kind": "node"},
                            settings=settings or TunnelAgentSettings(
                                connect_timeout=3.0, sleep=lambda _s: asyncio.sleep(0.05)))
        self.stack.push_async_callback(agent.stop)
        await agent.start()
        return agent

    async def tls(self, alpn: list[str]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context = ssl.create_default_context(cadata=self.tunnel.credentials.tls_ca_pem.decode())
        context.check_hostname = False
        context.set_alpn_protocols(alpn)
        return await asyncio.open_connection("127.0.0.1", self.port, ssl=context)


async def _hello(_request: web.BaseRequest) -> web.Response:
    return web.Response(text="web")


async def _proxy(stack: AsyncExitStack, *, route_tunnel: bool = True,
                 auth_address: str | None = None, auth: AuthServer | None = None,
                 port: int = 0, host_id: str = "proxy-1") -> Proxy:
    auth = auth or await _auth()
    proxy = _creds(auth, SystemRole.PROXY, host_id)
    audit = MemoryEmitter()
    tunnel = TunnelServer(proxy, emitter=audit, auth_address=auth_address, hello_timeout=3.0)
    stack.push_async_callback(tunnel.stop)
    assert await tunnel.start("") == ""
    http = web.Server(_hello)
    stack.push_async_callback(http.shutdown)
    factories: dict[str, ProtocolFactory] = {ALPN_TUNNEL: tunnel.protocol} if route_tunnel \
        else {}
    context = proxy.server_ssl(client_cas=proxy.tls_cas(), require_client_cert=False)
    router = TLSRouter(context, http, factories)
    sock = bind_tcp(f"127.0.0.1:{port}")
    port = sock.getsockname()[1]
    await router.start(sock)
    stack.callback(router.stop)
    return Proxy(auth, tunnel, port, audit, stack)


@pytest.fixture
async def env() -> AsyncIterator[Proxy]:
    async with AsyncExitStack() as stack:
        yield await _proxy(stack)


def test_the_address_says_which_way_the_tunnel_goes() -> None:
    assert parse_tunnel_address("proxy:3024").tls is False
    plain = parse_tunnel_address("tls://proxy.example:443")
    assert (plain.host, plain.port, plain.tls) == ("proxy.example", 443, True)
    assert str(parse_tunnel_address("tls://[fd00::1]:3080")) == "tls://[fd00::1]:3080"


def test_an_empty_address_turns_the_tunnel_listener_off(tmp_path: Path) -> None:
    config = tmp_path / "limen.yaml"
    config.write_text('listeners: {tunnel: ""}\n')
    for random_ports in (False, True):
        listeners = load_settings(config, env={}, random_ports=random_ports).listeners
        assert listeners.tunnel == ""
        assert listeners.web.endswith(":0" if random_ports else ":3080")


@pytest.mark.parametrize(("public", "web", "tunnel_host", "expected"), [
    ("", "127.0.0.1:3080", "", "tls://127.0.0.1:3080"),
    ("proxy.example.com", "0.0.0.0:3080", "", "tls://proxy.example.com:443"),
    ("proxy.example.com:8443", "0.0.0.0:3080", "", "tls://proxy.example.com:8443"),
    ("proxy.example.com", "0.0.0.0:3080", "10.244.1.7", "tls://10.244.1.7:3080"),
])
def test_a_proxy_without_a_tunnel_listener_announces_its_web_port(
        public: str, web: str, tunnel_host: str, expected: str) -> None:
    assert announced_web_tunnel_address(public, web, tunnel_host) == expected


def test_the_proxy_set_carries_each_proxys_mode() -> None:
    items: list[object] = [
        {"host_id": "a", "tunnel_address": "a:3024", "cluster": CLUSTER},
        {"host_id": "b", "tunnel_address": "tls://b:443", "cluster": CLUSTER},
        {"host_id": "c", "tunnel_address": "https://c:443", "cluster": CLUSTER},
        {"host_id": "d", "tunnel_address": "tls://d", "cluster": CLUSTER},
    ]
    assert proxy_entries(items, CLUSTER) == [ProxyEntry("a", "a:3024"),
                                             ProxyEntry("b", "tls://b:443")]


def test_a_leaf_links_to_a_one_port_root_through_the_address_it_was_given() -> None:
    ping = {"cluster": "root", "tunnel": "tls://0.0.0.0:3080"}
    assert tunnel_address_from_ping("root.example.com:443", ping) == \
        "tls://root.example.com:443"
    assert tunnel_address_from_ping("root.example.com:443", {"tunnel": "0.0.0.0:3024"}) == \
        "root.example.com:3024"


async def test_auth_records_a_web_port_announcement() -> None:
    auth = await _auth()
    identity = Identity(username="proxy-1", cluster=CLUSTER, system_role=SystemRole.PROXY,
                        host_id="proxy-1")
    record = await proxy_presence.announce(auth, identity, "tls://proxy.example.com:443")
    assert record["tunnel_address"] == "tls://proxy.example.com:443"
    with pytest.raises(BadParameter):
        await proxy_presence.announce(auth, identity, "ftp://proxy.example.com:443")


async def test_an_agent_tunnels_through_the_web_port_and_serves_a_dial(env: Proxy) -> None:
    node = _creds(env.auth, SystemRole.NODE, "node-1")
    agent = await env.agent(node)
    await agent.wait_for(lambda a: a.connected.is_set(), WITHIN)
    assert agent.proxy_id == "proxy-1"
    await _until(lambda: env.tunnel.registry.get("node-1") is not None, "registered")
    conn = await env.tunnel.dial("node-1", DialRequest(kind=KIND_NODE, mode=MODE_RAW,
                                                       target="node-1"))
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class _Client(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.WriteTransport) or hasattr(transport, "write")
            transport.write(b"ping")  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            received.put_nowait(data)

    conn.attach(_Client())
    try:
        async with asyncio.timeout(WITHIN):
            assert await received.get() == b"echo:ping"
    finally:
        conn.transport.close()


async def test_the_agent_reconnects_through_the_web_port_after_a_proxy_restart() -> None:
    async with AsyncExitStack() as stack:
        async with AsyncExitStack() as first_stack:
            first = await _proxy(first_stack)
            agent = TunnelAgent(first.address, _creds(first.auth, SystemRole.NODE, "node-1"),
                                _echo, dict, settings=TunnelAgentSettings(
                                    connect_timeout=3.0, sleep=lambda _s: asyncio.sleep(0.05)))
            stack.push_async_callback(agent.stop)
            await agent.start()
            await agent.wait_for(lambda a: a.connected.is_set(), WITHIN)
        await agent.wait_for(lambda a: not a.connected.is_set(), WITHIN)  # the proxy stopped
        second = await _proxy(stack, auth=first.auth, port=first.port)
        await agent.wait_for(lambda a: a.connected.is_set(), WITHIN)
        await _until(lambda: second.tunnel.registry.get("node-1") is not None, "registered")
        assert agent.connections == 2


async def test_a_pool_tunnels_to_each_proxy_the_way_it_publishes_and_gets_trust_pushed(
        env: Proxy) -> None:
    plain_creds = _creds(env.auth, SystemRole.PROXY, "proxy-2")
    plain = TunnelServer(plain_creds)
    env.stack.push_async_callback(plain.stop)
    plain_address = await plain.start("127.0.0.1:0")
    proxies = [ProxyEntry("proxy-1", env.address), ProxyEntry("proxy-2", plain_address)]
    for server in (env.tunnel, plain):
        server.set_proxies(proxies)
        server.keep_trust(TrustPush({"revision": server.credentials.host_id}))
    pushed: list[tuple[str, object]] = []
    pool = TunnelAgentPool(env.address, _creds(env.auth, SystemRole.NODE, "node-1"), _echo,
                           dict, settings=TunnelAgentSettings(
                               connect_timeout=3.0, sleep=lambda _s: asyncio.sleep(0.05),
                               on_trust=lambda m, proxy: pushed.append((proxy, m.doc))))
    env.stack.push_async_callback(pool.stop)
    await pool.start()
    await _until(lambda: all(s.registry.get("node-1") is not None
                             for s in (env.tunnel, plain)), "a tunnel to each proxy")
    assert sorted(pool.agents) == sorted([env.address, plain_address])
    assert pool.agents[env.address].tls is not None
    assert pool.agents[plain_address].tls is None
    await _until(lambda: len(pushed) == 2, "the trust answer from each proxy")
    assert sorted(pushed) == [("proxy-1", {"revision": "proxy-1"}),
                              ("proxy-2", {"revision": "proxy-2"})]


async def test_the_route_to_auth_goes_through_the_web_port() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"auth:" + await reader.read(100))
        await writer.drain()
        writer.close()

    fake_auth = await asyncio.start_server(answer, "127.0.0.1", 0)
    host, port = fake_auth.sockets[0].getsockname()[:2]
    try:
        async with AsyncExitStack() as stack:
            env = await _proxy(stack, auth_address=f"{host}:{port}")
            agent = await env.agent(_creds(env.auth, SystemRole.NODE, "node-1"))
            listener = await agent.local_auth_listener()
            lhost, lport = listener.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(lhost, int(lport))
            try:
                writer.write(b"hello")
                async with asyncio.timeout(WITHIN):
                    assert await reader.read(100) == b"auth:hello"
            finally:
                writer.close()
                await writer.wait_closed()
    finally:
        fake_auth.close()
        await fake_auth.wait_closed()


async def test_garbage_on_the_tunnel_alpn_is_dropped_and_the_web_port_answers(
        env: Proxy) -> None:
    reader, writer = await env.tls([ALPN_TUNNEL])
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(WITHIN):
            assert await reader.read(100) == b""  # dropped: neither SSH nor a data preamble
    finally:
        writer.close()
    reader, writer = await env.tls([ALPN_TUNNEL])
    try:  # a data preamble with a nonce the proxy never issued
        writer.write(b"LIMEN-DATA " + b"0" * 32 + b"\n")
        async with asyncio.timeout(WITHIN):
            assert await reader.read(100) == b""
    finally:
        writer.close()
    reader, writer = await env.tls(["http/1.1"])
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(WITHIN):
            assert (await reader.read()).endswith(b"web")
    finally:
        writer.close()


async def test_an_agent_of_another_ca_is_refused_inside_the_tls_stream(env: Proxy) -> None:
    other = await _auth()  # same cluster name, another CA: its host certificate is forged here
    intruder = _creds(other, SystemRole.NODE, "node-evil")
    ours = _creds(env.auth, SystemRole.NODE, "node-1")
    agent = await env.agent(intruder, TunnelAgentSettings(
        peer_trust=trust_map(ours), peer_tls_cas=ours.tls_cas(), connect_timeout=3.0,
        sleep=lambda _s: asyncio.sleep(0.2)))
    await _until(lambda: agent.failures >= 1, "the agent refused")
    assert not agent.connected.is_set()
    assert env.tunnel.registry.get("node-evil") is None
    event = await env.audit.wait_for(lambda e: e.fields.get("listener") == "tunnel",
                                     timeout=WITHIN)
    assert event.success is False
    assert "untrusted CA" in event.fields["reason"]


async def test_a_web_certificate_of_another_cluster_is_refused_by_the_agent(env: Proxy) -> None:
    other = await _auth()
    stranger = _creds(other, SystemRole.NODE, "node-2")  # trusts the other CA only
    agent = await env.agent(stranger)
    await _until(lambda: agent.failures >= 1, "the agent refused")
    assert "certificate" in agent.last_error
    assert env.tunnel.registry.get("node-2") is None


async def test_a_proxy_that_does_not_route_the_alpn_is_named_in_the_error() -> None:
    async with AsyncExitStack() as stack:
        env = await _proxy(stack, route_tunnel=False)
        agent = await env.agent(_creds(env.auth, SystemRole.NODE, "node-1"))
        await _until(lambda: agent.failures >= 1, "the agent refused")
        assert ALPN_TUNNEL in agent.last_error

