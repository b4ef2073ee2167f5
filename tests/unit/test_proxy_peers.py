"""A proxy in the proxy set (limen.proxy.proxy_peers): the tunnel address it announces, auth's
answer turned into the set (malformed records skipped, itself always in), and the set reaching
a connected agent in ``welcome`` and again, in a ``proxies`` message, when it changes."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any, cast

import pytest

from limen.auth import proxy_presence
from limen.auth.client import AuthClient
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem
from limen.ca.ssh_certs import sign_host_cert
from limen.config import ClusterSettings
from limen.errors import ConnectionProblem
from limen.events.emitter import MemoryEmitter
from limen.proxy.proxy_peers import ProxyAnnouncer, announced_tunnel_address, proxy_entries
from limen.tunnel.agent import TunnelAgent
from limen.tunnel.protocol import DialRequest, ProxyEntry
from limen.tunnel.server import TunnelServer

CLUSTER = "unit"


@pytest.mark.parametrize(("public", "listener", "expected"), [
    ("", "127.0.0.1:3024", "127.0.0.1:3024"),
    ("proxy1.example.com:443", "0.0.0.0:3024", "proxy1.example.com:3024"),
    ("proxy1.example.com", "10.0.0.5:3024", "proxy1.example.com:3024"),
    ("[fd00::5]:3080", "[::]:3024", "[fd00::5]:3024"),
    ("", "[fd00::7]:3024", "[fd00::7]:3024"),
])
def test_the_announced_address_is_the_tunnel_port_on_the_public_host(
        public: str, listener: str, expected: str) -> None:
    assert announced_tunnel_address(public, listener) == expected


@pytest.mark.parametrize(("tunnel_host", "expected"), [
    ("10.244.1.7", "10.244.1.7:3024"),  # a pod's IP (LIMEN_TUNNEL_HOST from status.podIP)
    ("fd00::9", "[fd00::9]:3024"),
])
def test_the_tunnel_host_wins_over_the_public_address_a_balancer_may_front(
        tunnel_host: str, expected: str) -> None:
    assert announced_tunnel_address("limen.example.com:443", "0.0.0.0:3024",
                                    tunnel_host) == expected


def test_a_wildcard_listener_without_public_address_is_announced_by_name() -> None:
    assert announced_tunnel_address("", "0.0.0.0:3024") == f"{socket.getfqdn()}:3024"


def test_malformed_records_of_auth_are_skipped() -> None:
    items: list[object] = [
        {"host_id": "a", "tunnel_address": "a:3024", "cluster": CLUSTER},
        {"host_id": "b", "tunnel_address": "b:3024", "cluster": "other"},
        {"host_id": "c", "tunnel_address": "no port", "cluster": CLUSTER},
        {"host_id": 4, "tunnel_address": "d:3024", "cluster": CLUSTER},
        {"host_id": "", "tunnel_address": "e:3024", "cluster": CLUSTER},
        {"host_id": "f" * 301, "tunnel_address": "f:3024", "cluster": CLUSTER},
        "g", None,
    ]
    assert proxy_entries(items, CLUSTER) == [ProxyEntry("a", "a:3024")]


def _creds(ca: CertAuthority, host_id: str, role: SystemRole) -> HostCredentials:
    key = generate_private_key()
    return HostCredentials(
        cluster=CLUSTER, host_id=host_id, role=role.value, hostname=host_id,
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=b"", tls_ca_pem=b"",
        ssh_cert=sign_host_cert(ca, key.public_key(), host_id, host_id, [],
                                timedelta(hours=1), role),
        host_ca_keys=tuple(ca.ssh_public_keys()))


class AuthAsProxy:
    """The auth API as one proxy calls it (POST /v1/presence/proxies), or down."""

    def __init__(self, auth: AuthServer, host_id: str) -> None:
        self.auth = auth
        self.identity = Identity(username=host_id, cluster=CLUSTER,
                                 system_role=SystemRole.PROXY, host_id=host_id)
        self.down = False

    async def call(self, method: str, path: str, body: dict[str, Any]) -> Any:
        assert (method, path) == ("POST", "/v1/presence/proxies")
        if self.down:
            raise ConnectionProblem("auth is down")
        await proxy_presence.announce(self.auth, self.identity, body["tunnel_address"])
        return {"items": await proxy_presence.proxies(self.auth)}


async def test_the_set_from_auth_reaches_a_connected_agent() -> None:
    ca = CertAuthority.generate(CLUSTER, CertAuthorityType.HOST)
    auth = AuthServer(MemoryBackend(sweep_interval=None), ClusterSettings(name=CLUSTER),
                      MemoryEmitter())
    await auth.start()
    server = TunnelServer(_creds(ca, "proxy-a", SystemRole.PROXY))
    address = await server.start("127.0.0.1:0")
    api = AuthAsProxy(auth, "proxy-a")
    announcer = ProxyAnnouncer(cast(AuthClient, api), server, address, interval=3600)

    async def handler(sock: socket.socket, request: DialRequest) -> None:
        sock.close()

    agent = TunnelAgent(address, _creds(ca, "node-1", SystemRole.NODE), handler, dict)
    try:
        await announcer.start()  # the first announcement runs at once
        await agent.start()
        me = ProxyEntry("proxy-a", address)
        await agent.wait_for(lambda a: a.proxies == (me,), 10)
        assert announcer.announced == 1
        await proxy_presence.announce(auth, Identity(
            username="proxy-b", cluster=CLUSTER, system_role=SystemRole.PROXY,
            host_id="proxy-b"), "10.9.9.9:3024")
        await announcer.announce_once()
        other = ProxyEntry("proxy-b", "10.9.9.9:3024")
        await agent.wait_for(lambda a: a.proxies == (me, other), 10)
        assert agent.connections == 1  # told on the same connection
        api.down = True  # auth unreachable: the last set stays
        with pytest.raises(ConnectionProblem):
            await announcer.announce_once()
        assert server.proxies == (me, other)
    finally:
        await agent.stop()
        await announcer.stop()
        await server.stop()


async def test_this_proxy_is_in_its_set_even_before_auth_answers() -> None:
    ca = CertAuthority.generate(CLUSTER, CertAuthorityType.HOST)
    server = TunnelServer(_creds(ca, "proxy-a", SystemRole.PROXY))

    class Down:
        async def call(self, *_args: object) -> Any:
            raise ConnectionProblem("auth is down")

    announcer = ProxyAnnouncer(cast(AuthClient, Down()), server, "p:3024", interval=3600)
    await announcer.start()
    try:
        assert server.proxies == (ProxyEntry("proxy-a", "p:3024"),)
    finally:
        await announcer.stop()
