"""Attacks on the app agent's data connections, which it answers only for the proxy and only for
a user its own checks admit (whatever the proxy decided).

* A node's host certificate (a compromised node of the cluster) dials the agent with alice's
  real app certificate: nothing is answered, nothing reaches the app.
* The proxy forwards alice's login certificate (not an app certificate): refused (403) and
  audited as a failed ``app.session.start`` under alice's name; the app sees no connection.
* The proxy forwards an app certificate of carol's, whose roles have no ``app_labels`` (a
  certificate minted before her roles changed): refused (403) and audited.
* Control: the proxy with alice's app certificate is answered ``ok`` and the bytes reach the
  app and come back.

In-process: the demo cluster's auth signs every certificate; a connected socket pair stands for
the tunnel's data connection (``AppService._serve`` is the handler the tunnel agent hands each
dial to); the app is a plain asyncio server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import replace
from datetime import timedelta

from cryptography.hazmat.primitives.serialization import Encoding

from limen.agents.app.app_service import AppService
from limen.agents.app.catalog import AppCatalog, static_apps
from limen.api.resources import Kind
from limen.auth import presence
from limen.auth.app_access import issue_app_cert
from limen.auth.core import AuthServer
from limen.ca.authority import CertAuthorityType, tls_trust_map
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.x509_certs import sign_client_cert, verify_client_cert
from limen.events.emitter import MemoryEmitter
from limen.tunnel.app_wire import AppConnect, decode_answer, encode, frame_length
from limen.tunnel.protocol import KIND_APP, MODE_TLS, DialRequest

TIMEOUT = 10.0
REQUEST = b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"


def _credentials(auth: AuthServer, host_id: str, role: SystemRole) -> HostCredentials:
    key = generate_private_key()
    certs = auth.issue_host_certs(host_id, host_id, role,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    return HostCredentials(cluster=auth.cluster_name, host_id=host_id, role=role.value,
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())


async def _login(auth: AuthServer, user: str) -> tuple[Identity, bytes]:
    """The user's login identity and login certificate (PEM)."""
    key = generate_private_key()
    login = await auth.issue_for_user(await auth.store.get(Kind.USER, user),
                                      public_key_to_openssh(key.public_key()),
                                      timedelta(hours=1))
    trust = tls_trust_map([auth.authorities.get(CertAuthorityType.TLS)])
    return verify_client_cert(login.tls_cert, trust, auth.now()), login.tls_cert


class App:
    """The upstream: counts connections, answers ``ok``."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def _dial(service: AppService, peer: HostCredentials, user_cert: bytes) -> bytes:
    """Everything the agent sends back to ``peer`` dialling it with ``user_cert``."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    served = asyncio.create_task(service._serve(theirs, DialRequest(
        kind=KIND_APP, target="grafana", mode=MODE_TLS)))
    context = peer.client_ssl(check_hostname=False, server_role=SystemRole.APP)
    reader, writer = await asyncio.open_connection(sock=ours, ssl=context,
                                                   server_hostname="app")
    try:
        writer.write(encode(AppConnect("grafana", user_cert.decode(), "192.0.2.7:1", "s-1"))
                     + REQUEST)
        await writer.drain()
        async with asyncio.timeout(TIMEOUT):
            answer = await reader.read()
    except (ssl.SSLError, ConnectionResetError):
        answer = b""
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    await asyncio.wait_for(served, TIMEOUT)
    return answer


def _answer(data: bytes) -> tuple[bool, int, bytes]:
    size = frame_length(data[:4])
    answer = decode_answer(data[4:4 + size])
    return answer.ok, answer.status, data[4 + size:]


async def test_the_agent_serves_only_the_proxy_and_users_it_admits(auth: AuthServer) -> None:
    app = App()
    port = await app.start()
    emitter = MemoryEmitter()
    served = static_apps([{"name": "grafana", "labels": {"env": "dev"},
                           "uri": f"http://127.0.0.1:{port}"}])
    service = AppService(_credentials(auth, "app-1", SystemRole.APP),
                         AppCatalog(served, [], None), auth, emitter, lambda: "127.0.0.1:1")
    proxy = _credentials(auth, "proxy-1", SystemRole.PROXY)
    alice, alice_login = await _login(auth, "alice")
    key = generate_private_key()
    await presence.heartbeat(auth, served[0].to_document(with_status=False), "app-1",
                             "proxy-1", auth.cluster_name, role="app")
    alice_app, _ = await issue_app_cert(auth, alice, key.public_key(), "grafana")
    carol, _ = await _login(auth, "carol")
    carol_app = sign_client_cert(
        auth.authorities.get(CertAuthorityType.TLS), key.public_key(),
        replace(carol, route_to_app="grafana", usage=("app",), not_before=None,
                not_after=None), timedelta(minutes=5), now=auth.now())
    carol_pem = carol_app.public_bytes(Encoding.PEM)
    try:
        node = _credentials(auth, "node-1", SystemRole.NODE)
        assert await _dial(service, node, alice_app) == b""
        assert app.connections == 0
        for who, cert in (("alice", alice_login), ("carol", carol_pem)):
            ok, status, rest = _answer(await _dial(service, proxy, cert))
            assert (ok, status, rest) == (False, 403, b"")
            refused = [e for e in emitter.events
                       if e.type == "app.session.start" and e.user == who]
            assert refused, who
            assert refused[-1].code == "L3300W"
        assert app.connections == 0
        # control: the proxy with alice's app certificate reaches the app
        ok, status, rest = _answer(await _dial(service, proxy, alice_app))
        assert ok
        assert rest.endswith(b"\r\n\r\nok")
        assert app.connections == 1
    finally:
        await service.stop()
        await app.stop()
