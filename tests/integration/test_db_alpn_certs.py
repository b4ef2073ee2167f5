"""The web port's database routes (ALPN ``limen-postgres`` / ``limen-mysql``) and the client
certificate, in one process with the real parts: the TLS router with the proxy's web context,
:class:`DBTLSRoutes`, the PostgreSQL and MySQL fronts and their :class:`DBRouter`, real
certificates of a cluster CA made here (no db agent: every connection here is refused before
one would be dialled).

- an expired database certificate is refused by OpenSSL in the web port's handshake: no
  route sees the connection (nothing to audit there);
- the route's own check behind it: the same certificate, valid for OpenSSL, with the
  router's clock past its expiry, is refused in the protocol (PostgreSQL ErrorResponse,
  MySQL ERR at sequence 2) and audited as a failed ``db.session.start`` naming the expiry;
- the user's login certificate (not a database certificate) is refused and audited under
  the user's name;
- stopping the routes ends a connection that is still in its startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, RouteToDatabase, SystemRole
from limen.ca.keys import KeyType, generate_private_key, private_key_to_pem
from limen.ca.x509_certs import certificate_to_pem, sign_client_cert, sign_server_cert
from limen.dbproto import mysql as my
from limen.dbproto import postgres as pg
from limen.dbproto.alpn import ALPN_MYSQL, ALPN_POSTGRES
from limen.events.emitter import MemoryEmitter
from limen.events.event import AuditEvent
from limen.net.streams import close_writer
from limen.proxy.db.cancel_keys import CancelKeys
from limen.proxy.db.db_route import DBRouter
from limen.proxy.db.db_tls_route import DBTLSRoutes
from limen.proxy.db.mysql_front import MySQLFront
from limen.proxy.db.postgres_front import PostgresFront
from limen.proxy.routing import ClusterView
from limen.proxy.tls_router import TLSRouter
from limen.tunnel.server import TunnelServer

CLUSTER = "alpncerts"
HOUR = timedelta(hours=1)
DEADLINE = 10.0


class Site:
    """The proxy's web port with the two database routes, and a cluster CA for clients."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca = CertAuthority.generate(CLUSTER, CertAuthorityType.TLS)
        key = generate_private_key(KeyType.ECDSA_P256)
        cert = sign_server_cert(self.ca, key.public_key(), ["localhost"], ["127.0.0.1"], HOUR,
                                Identity.for_host(CLUSTER, "proxy-1", "proxy", SystemRole.PROXY))
        self.creds = HostCredentials(
            cluster=CLUSTER, host_id="proxy-1", role="proxy",
            private_key_pem=private_key_to_pem(key).encode(),
            tls_cert_pem=certificate_to_pem(cert).encode(),
            tls_ca_pem=self.ca.pem_bundle().encode())
        self.emitter = MemoryEmitter()
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        # identify() and the refusals read neither the tunnel nor the cluster view
        self.router = DBRouter(self.creds, cast(TunnelServer, None), cast(ClusterView, None),
                               self.emitter, now=lambda: self.now())
        tls = self.creds.server_ssl(client_cas=self.creds.tls_cas())
        tls.verify_mode = ssl.CERT_OPTIONAL
        self.routes = DBTLSRoutes(
            PostgresFront(self.router, tls, CancelKeys()).handle_routed,
            MySQLFront(self.router, tls).handle_routed)
        self.web = TLSRouter(self.creds.server_ssl(client_cas=self.creds.tls_cas(),
                                                   require_client_cert=False),
                             asyncio.Protocol, self.routes.routes())
        self.port = 0

    async def start(self) -> None:
        sock = socket.create_server(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await self.web.start(sock)

    def client_cert(self, name: str, identity: Identity, *, ttl: timedelta = HOUR,
                    now: datetime | None = None) -> Path:
        key = generate_private_key(KeyType.ECDSA_P256)
        cert = sign_client_cert(self.ca, key.public_key(), identity, ttl, now=now)
        path = self.tmp / f"{name}.pem"
        path.write_text(certificate_to_pem(cert) + private_key_to_pem(key))
        return path

    async def connect(self, alpn: str, cert: Path
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context = ssl.create_default_context(cadata=self.ca.pem_bundle())
        context.load_cert_chain(cert)
        context.set_alpn_protocols([alpn])
        return await asyncio.open_connection("127.0.0.1", self.port, ssl=context,
                                             server_hostname="localhost")

    async def refusal(self, protocol: str) -> AuditEvent:
        return await self.emitter.wait_for(
            lambda e: e.type.value == "db.session.start" and not e.success
            and e.fields.get("db_protocol") == protocol, timeout=DEADLINE)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    site = Site(tmp_path)
    await site.start()
    try:
        yield site
    finally:
        site.web.stop()
        await site.routes.stop()


def _database_user(route: str = "orders") -> Identity:
    return Identity(username="alice", cluster=CLUSTER, usage=("db",),
                    route_to_db=RouteToDatabase(route, "app", "orders"))


async def _pg_error(reader: asyncio.StreamReader) -> dict[str, str]:
    async with asyncio.timeout(DEADLINE):
        header = await reader.readexactly(5)
        assert header[:1] == b"E", header
        body = await reader.readexactly(int.from_bytes(header[1:], "big") - 4)
    return pg.decode_error_fields(body)


async def _my_packet(reader: asyncio.StreamReader) -> my.Packet:
    async with asyncio.timeout(DEADLINE):
        header = await reader.readexactly(4)
        return my.Packet(header[3], await reader.readexactly(
            int.from_bytes(header[:3], "little")))


def _hello() -> bytes:
    caps = my.CLIENT_PROTOCOL_41 | my.CLIENT_SECURE_CONNECTION | my.CLIENT_CONNECT_WITH_DB
    return my.encode_packet(1, my.encode_handshake_response(my.HandshakeResponse(
        caps, 1 << 24, 45, "app", b"", "orders", None, {})))


async def test_an_expired_certificate_is_refused_in_the_web_port_handshake(site: Site) -> None:
    expired = site.client_cert("expired", _database_user(), ttl=timedelta(minutes=5),
                               now=datetime.now(UTC) - timedelta(hours=2))
    answer = b""
    with contextlib.suppress(ssl.SSLError, ConnectionResetError):
        reader, writer = await site.connect(ALPN_POSTGRES, expired)
        try:
            writer.write(pg.encode_startup({"user": "app", "database": "orders"}))
            async with asyncio.timeout(DEADLINE):
                answer = await reader.read(65536)  # TLS 1.3: the alert comes after Finished
        finally:
            await close_writer(writer)
    assert answer == b""
    assert len(site.routes) == 0
    assert site.emitter.events == []


async def test_the_routes_refuse_a_certificate_past_its_expiry_and_audit_it(
        site: Site) -> None:
    cert = site.client_cert("alice", _database_user())
    site.now = lambda: datetime.now(UTC) + 2 * HOUR  # the route's clock, past the expiry
    reader, writer = await site.connect(ALPN_POSTGRES, cert)
    try:
        writer.write(pg.encode_startup({"user": "app", "database": "orders"}))
        error = await _pg_error(reader)
    finally:
        await close_writer(writer)
    assert "expired" in error["M"], error
    event = await site.refusal("postgres")
    assert "expired" in event.fields["reason"]

    reader, writer = await site.connect(ALPN_MYSQL, cert)
    try:
        greeting = my.decode_handshake((await _my_packet(reader)).payload)
        assert not greeting.capabilities & my.CLIENT_SSL
        writer.write(_hello())
        answer = await _my_packet(reader)
    finally:
        await close_writer(writer)
    assert answer.seq == 2
    assert "expired" in my.decode_err(answer.payload).message
    event = await site.refusal("mysql")
    assert "expired" in event.fields["reason"]


async def test_the_login_certificate_is_not_a_database_certificate_on_the_route(
        site: Site) -> None:
    login = site.client_cert("login", Identity(username="alice", cluster=CLUSTER,
                                               roles=("dev",)))
    reader, writer = await site.connect(ALPN_POSTGRES, login)
    try:
        writer.write(pg.encode_startup({"user": "app", "database": "orders"}))
        error = await _pg_error(reader)
    finally:
        await close_writer(writer)
    assert "not for a database" in error["M"], error
    event = await site.refusal("postgres")
    assert event.user == "alice"
    assert "not for a database" in event.fields["reason"]


async def test_stopping_the_routes_ends_a_connection_in_its_startup(site: Site) -> None:
    reader, writer = await site.connect(ALPN_POSTGRES, site.client_cert("a", _database_user()))
    try:
        # a GSSENCRequest answered N: the route's connection is running
        writer.write(struct.pack("!II", 8, pg.GSSENC_REQUEST_CODE))
        async with asyncio.timeout(DEADLINE):
            assert await reader.readexactly(1) == b"N"
        assert len(site.routes) == 1
        await site.routes.stop()
        async with asyncio.timeout(DEADLINE):
            assert await reader.read(65536) == b""
    finally:
        await close_writer(writer)
    assert len(site.routes) == 0
