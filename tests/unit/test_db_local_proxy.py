"""``lmsh proxy db`` (``limen.client.db_local_proxy``) against a fake Limen proxy speaking the
real wire protocols: a plaintext PostgreSQL or MySQL tool on 127.0.0.1 reaches the proxy
over TLS with the user's database certificate; the PostgreSQL SSLRequest is answered N locally
and asked for upstream; the MySQL greeting loses CLIENT_SSL for the tool, the proxy gets an
SSLRequest then the tool's answer as sequence 2 with CLIENT_SSL, and sequence numbers are
shifted until the login ends; a server that is not the cluster's proxy, or a proxy without
TLS, fails with an error in the tool's protocol; a connection from another uid is closed
unanswered.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, RouteToDatabase, SystemRole
from limen.ca.keys import KeyType, generate_private_key, private_key_to_pem
from limen.ca.tls import server_context
from limen.ca.x509_certs import (
    certificate_to_pem,
    identity_from_cert,
    sign_client_cert,
    sign_server_cert,
)
from limen.client.db_local_proxy import LocalDbProxy, Upstream, upstream_context
from limen.client.db_profiles import DbFiles
from limen.dbproto import mysql, postgres

CLUSTER = "main"
HOUR = timedelta(hours=1)
ROUTE = RouteToDatabase("orders", "app", "orders")
DEADLINE = 10.0


@dataclass
class Pki:
    ca: CertAuthority
    files: DbFiles

    def server(self, role: SystemRole = SystemRole.PROXY) -> ssl.SSLContext:
        key = generate_private_key(KeyType.ECDSA_P256)
        identity = Identity.for_host(CLUSTER, "h-proxy", "proxy", role)
        cert = sign_server_cert(self.ca, key.public_key(), ["localhost"], ["127.0.0.1"], HOUR,
                                identity)
        return server_context([cert], key, list(self.ca.trusted_certificates()))

    def upstream(self, port: int) -> Upstream:
        trusted = {CLUSTER: self.ca.pem_bundle().encode()}
        return Upstream("127.0.0.1", port, upstream_context(self.files, trusted))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = CertAuthority.generate(CLUSTER, CertAuthorityType.TLS)
    key = generate_private_key()
    identity = Identity(username="alice", cluster=CLUSTER, route_to_db=ROUTE, usage=("db",))
    files = DbFiles(cert=tmp_path / "orders.crt", key=tmp_path / "orders.key",
                    ca=tmp_path / "ca.pem")
    files.cert.write_text(certificate_to_pem(sign_client_cert(ca, key.public_key(), identity,
                                                              HOUR)))
    files.key.write_text(private_key_to_pem(key))
    return Pki(ca, files)


Handler = Callable[["FakeProxy", socket.socket], Awaitable[None]]


@dataclass
class FakeProxy:
    """A listener running ``handler`` on each accepted socket; what it saw goes to ``seen``.

    Raw sockets, not streams: a MySQL client sends its TLS ClientHello right behind its
    SSLRequest, and a stream would read both into its buffer, out of reach of the TLS
    handshake. The handler reads the clear-text part exactly (:func:`_recv`), then continues
    with streams (:meth:`streams`)."""

    handler: Handler
    seen: dict[str, Any] = field(default_factory=dict)
    port: int = 0
    _listener: socket.socket | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    handled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a connection's handler has returned."""

    async def start(self) -> FakeProxy:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._tasks.add(asyncio.create_task(self._accept(self._listener)))
        return self

    async def _accept(self, listener: socket.socket) -> None:
        while True:
            conn, _ = await asyncio.get_running_loop().sock_accept(listener)
            self._tasks.add(asyncio.create_task(self._run(conn)))

    async def _run(self, conn: socket.socket) -> None:
        try:
            await self.handler(self, conn)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as err:
            self.seen["error"] = err
        finally:
            for writer in self._writers:
                writer.close()
            conn.close()
            self.handled.set()

    async def streams(self, conn: socket.socket, context: ssl.SSLContext | None = None
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Streams over the accepted socket, with server-side TLS when ``context`` is given."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn, ssl=context)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self._writers.append(writer)
        return reader, writer

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self._listener is not None
        self._listener.close()


async def _recv(conn: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes from the socket itself (nothing read ahead)."""
    data = b""
    while len(data) < size:
        chunk = await asyncio.get_running_loop().sock_recv(conn, size - len(data))
        if not chunk:
            raise asyncio.IncompleteReadError(data, size)
        data += chunk
    return data


async def _send(conn: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(conn, data)


@pytest.fixture
async def running() -> AsyncIterator[list[Any]]:
    """Things to close at the end (fake proxies, local proxies, the tools' connections)."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        closed = thing.close()
        if closed is not None:
            await closed


async def _local(running: list[Any], protocol: str, pki: Pki, handler: Handler,
                 **options: Any) -> tuple[FakeProxy, asyncio.StreamReader, asyncio.StreamWriter,
                                          list[str]]:
    fake = await FakeProxy(handler).start()
    running.append(fake)
    reports: list[str] = []
    local = LocalDbProxy(protocol, pki.upstream(fake.port), report=reports.append, **options)
    running.append(local)
    host, port = await local.start()
    assert host == "127.0.0.1"
    reader, writer = await asyncio.open_connection(host, port)
    running.append(writer)
    return fake, reader, writer, reports


async def _within(awaitable: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(awaitable, DEADLINE)


def _peer_identity(writer: asyncio.StreamWriter) -> Identity | None:
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return identity_from_cert(x509.load_der_x509_certificate(der))


# -- PostgreSQL ---------------------------------------------------------------------------------
async def _pg_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    kind = await reader.readexactly(1)
    length = int.from_bytes(await reader.readexactly(4), "big")
    return kind, await reader.readexactly(length - 4)


def _pg_proxy(pki: Pki) -> Handler:
    async def handle(fake: FakeProxy, conn: socket.socket) -> None:
        fake.seen["request"] = await _recv(conn, 8)
        await _send(conn, b"S")
        reader, writer = await fake.streams(conn, pki.server())
        fake.seen["identity"] = _peer_identity(writer)
        header = await reader.readexactly(4)
        packet = header + await reader.readexactly(postgres.startup_length(header) - 4)
        fake.seen["startup"] = postgres.decode_startup(packet)
        writer.write(postgres.encode_authentication_ok() + postgres.encode_ready_for_query())
        kind, body = await _pg_message(reader)
        fake.seen["query"] = (kind, postgres.decode_query(body))
        writer.write(postgres.encode_message(b"C", b"SELECT 1\0")
                     + postgres.encode_ready_for_query())
        await writer.drain()
        fake.seen["after"] = await reader.read()

    return handle


async def test_postgres_plaintext_becomes_tls_with_the_database_certificate(
        pki: Pki, running: list[Any]) -> None:
    fake, reader, writer, reports = await _local(running, "postgres", pki, _pg_proxy(pki))
    seen = fake.seen
    writer.write(postgres.encode_ssl_request())
    assert await _within(reader.readexactly(1)) == b"N"  # no TLS on the local hop
    writer.write(postgres.encode_startup({"user": "app", "database": "orders"}))
    kind, body = await _within(_pg_message(reader))
    assert (kind, postgres.decode_authentication(body)[0]) == (b"R", postgres.AUTH_OK)
    assert await _within(_pg_message(reader)) == (b"Z", b"I")
    writer.write(postgres.encode_query("select 1"))
    assert await _within(_pg_message(reader)) == (b"C", b"SELECT 1\0")
    assert await _within(_pg_message(reader)) == (b"Z", b"I")
    writer.write(postgres.encode_terminate())
    writer.close()

    assert seen["request"] == postgres.encode_ssl_request()
    identity = seen["identity"]
    assert identity is not None
    assert (identity.username, identity.route_to_db) == ("alice", ROUTE)
    startup = seen["startup"]
    assert isinstance(startup, postgres.StartupMessage)
    assert dict(startup.params) == {"user": "app", "database": "orders"}
    assert seen["query"] == (b"Q", "select 1")
    assert reports == []


async def test_postgres_a_server_that_is_not_the_proxy_is_refused(pki: Pki,
                                                                  running: list[Any]) -> None:
    async def node_posing_as_proxy(fake: FakeProxy, conn: socket.socket) -> None:
        await _recv(conn, 8)
        await _send(conn, b"S")
        reader, _writer = await fake.streams(conn, pki.server(SystemRole.NODE))
        fake.seen["startup"] = await reader.read(100)

    fake, reader, writer, reports = await _local(running, "postgres", pki,
                                                 node_posing_as_proxy)
    writer.write(postgres.encode_startup({"user": "app"}))
    kind, body = await _within(_pg_message(reader))
    assert kind == b"E"
    fields = postgres.decode_error_fields(body)
    assert fields["C"] == "08006"
    assert "not a proxy" in fields["M"]
    assert await _within(reader.read()) == b""
    assert "startup" not in fake.seen or fake.seen["startup"] == b""  # nothing forwarded
    assert any("not a proxy" in r for r in reports)


async def test_postgres_a_proxy_without_tls_is_refused(pki: Pki, running: list[Any]) -> None:
    async def no_tls(fake: FakeProxy, conn: socket.socket) -> None:
        await _recv(conn, 8)
        await _send(conn, b"N")
        reader, _writer = await fake.streams(conn)
        fake.seen["after"] = await reader.read()

    fake, reader, writer, _reports = await _local(running, "postgres", pki, no_tls)
    writer.write(postgres.encode_startup({"user": "app"}))
    kind, body = await _within(_pg_message(reader))
    assert kind == b"E"
    assert "not S" in postgres.decode_error_fields(body)["M"]
    assert await _within(reader.read()) == b""
    await _within(fake.handled.wait())
    assert fake.seen["after"] == b""  # the startup message never went out in the clear


async def test_a_connection_from_another_uid_is_closed_unanswered(pki: Pki,
                                                                  running: list[Any]) -> None:
    async def never(fake: FakeProxy, conn: socket.socket) -> None:
        fake.seen["connected"] = True

    fake, reader, _writer, reports = await _local(running, "postgres", pki, never,
                                                 is_allowed=lambda sock: False)
    assert await _within(reader.read()) == b""  # closed before a byte either way
    assert "connected" not in fake.seen
    assert len(reports) == 1
    assert "not yours" in reports[0]


# -- MySQL ----------------------------------------------------------------------------------------
GREETING = mysql.Handshake(
    server_version="10.11.0-Limen", connection_id=7, auth_data=bytes(range(1, 21)),
    capabilities=(mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION
                  | mysql.CLIENT_PLUGIN_AUTH | mysql.CLIENT_SSL | mysql.CLIENT_CONNECT_WITH_DB
                  | mysql.CLIENT_LONG_PASSWORD | mysql.CLIENT_TRANSACTIONS),
    charset=45, status=2, auth_plugin="mysql_native_password")
HELLO = mysql.HandshakeResponse(
    capabilities=(mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION
                  | mysql.CLIENT_PLUGIN_AUTH | mysql.CLIENT_CONNECT_WITH_DB
                  | mysql.CLIENT_LONG_PASSWORD),
    max_packet=1 << 24, charset=45, username="app", auth_response=b"", database="orders",
    auth_plugin="mysql_native_password", attributes={})


async def _packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await reader.readexactly(4)
    return header[3], await reader.readexactly(int.from_bytes(header[:3], "little"))


def _mysql_proxy(pki: Pki) -> Handler:
    async def handle(fake: FakeProxy, conn: socket.socket) -> None:
        await _send(conn, mysql.encode_packet(0, mysql.encode_handshake(GREETING)))
        request = await _recv(conn, 4 + 32)
        fake.seen["ssl_request"] = (request[3], mysql.decode_client_hello(request[4:]))
        reader, writer = await fake.streams(conn, pki.server())
        fake.seen["identity"] = _peer_identity(writer)
        seq, payload = await _packet(reader)
        fake.seen["hello"] = (seq, mysql.decode_client_hello(payload))
        writer.write(mysql.encode_packet(3, b"\x01more"))  # AuthMoreData: the login goes on
        fake.seen["reply"] = await _packet(reader)
        writer.write(mysql.encode_packet(5, mysql.ok_payload()))
        fake.seen["command"] = await _packet(reader)
        writer.write(mysql.encode_packet(1, mysql.ok_payload(affected_rows=3)))
        await writer.drain()
        fake.seen["after"] = await reader.read()

    return handle


async def test_mysql_greeting_without_tls_for_the_tool_and_tls_upstream(
        pki: Pki, running: list[Any]) -> None:
    fake, reader, writer, reports = await _local(running, "mysql", pki, _mysql_proxy(pki))
    seen = fake.seen
    seq, payload = await _within(_packet(reader))
    greeting = mysql.decode_handshake(payload)
    assert seq == 0
    assert not greeting.capabilities & mysql.CLIENT_SSL
    assert greeting == replace(GREETING, capabilities=GREETING.capabilities & ~mysql.CLIENT_SSL)
    writer.write(mysql.encode_packet(1, mysql.encode_handshake_response(HELLO)))
    assert await _within(_packet(reader)) == (2, b"\x01more")  # shifted back: 3 -> 2
    writer.write(mysql.encode_packet(3, b"reply"))
    seq, payload = await _within(_packet(reader))
    assert (seq, mysql.is_ok(payload)) == (4, True)  # 5 -> 4, and the login is over
    writer.write(mysql.encode_packet(0, bytes((mysql.COM_QUERY,)) + b"select 1"))
    assert await _within(_packet(reader)) == (1, mysql.ok_payload(affected_rows=3))
    writer.close()

    ssl_seq, ssl_request = seen["ssl_request"]
    assert ssl_seq == 1
    assert isinstance(ssl_request, mysql.SSLRequest)
    assert ssl_request.capabilities == HELLO.capabilities | mysql.CLIENT_SSL
    identity = seen["identity"]
    assert identity is not None
    assert identity.route_to_db == ROUTE
    assert seen["hello"] == (2, replace(HELLO, capabilities=HELLO.capabilities
                                        | mysql.CLIENT_SSL))
    assert seen["reply"] == (4, b"reply")  # shifted forward: 3 -> 4
    assert seen["command"] == (0, bytes((mysql.COM_QUERY,)) + b"select 1")  # not shifted
    assert reports == []


async def test_mysql_a_tool_asking_for_tls_gets_an_error(pki: Pki, running: list[Any]) -> None:
    async def greet(fake: FakeProxy, conn: socket.socket) -> None:
        await _send(conn, mysql.encode_packet(0, mysql.encode_handshake(GREETING)))
        reader, _writer = await fake.streams(conn)
        fake.seen["after"] = await reader.read()

    fake, reader, writer, reports = await _local(running, "mysql", pki, greet)
    await _within(_packet(reader))
    caps = HELLO.capabilities | mysql.CLIENT_SSL
    writer.write(mysql.encode_packet(1, mysql.encode_ssl_request(mysql.SSLRequest(
        caps, HELLO.max_packet, HELLO.charset))))
    seq, payload = await _within(_packet(reader))
    assert seq == 2
    error = mysql.decode_err(payload)
    assert "no TLS" in error.message
    assert await _within(reader.read()) == b""
    await _within(fake.handled.wait())
    assert fake.seen["after"] == b""  # nothing reached the proxy
    assert reports


async def test_mysql_the_proxys_refusal_reaches_the_tool(pki: Pki, running: list[Any]) -> None:
    refusal = mysql.err_payload(1040, "08004", "Too many connections")

    async def refuse(fake: FakeProxy, conn: socket.socket) -> None:
        await _send(conn, mysql.encode_packet(0, refusal))

    _fake, reader, _writer, reports = await _local(running, "mysql", pki, refuse)
    assert await _within(_packet(reader)) == (0, refusal)
    assert await _within(reader.read()) == b""  # one error only
    assert any("Too many connections" in r for r in reports)
