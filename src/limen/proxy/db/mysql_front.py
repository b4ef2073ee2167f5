"""The proxy's MySQL front (listener ``mysql``, default 3036): the ``mysql``/``mariadb``
clients, PyMySQL and other drivers, unchanged.

::

    proxy ── greeting (CLIENT_SSL offered, a random scramble) ──▶ client
    client ── SSLRequest (seq 1) ──▶ TLS (proxy certificate; the client's Limen database
              certificate, lmsh db login)
    client ── HandshakeResponse41 (seq 2: user, database) ──▶ authenticate, decide
                                  ──▶ db agent via its tunnel (session request: the
                                      negotiated capabilities, charset, next seq 3)
    client ◀── OK / ERR (seq 3, from the agent's upstream login) ◀── agent
           ◀──────────────────────── bytes both ways ─────────────────────────▶

The same front serves the web port's ALPN ``limen-mysql`` (:meth:`MySQLFront.handle_routed`,
from :mod:`limen.proxy.db.db_tls_route`): TLS with the client's certificate from the start,
so the greeting does not offer CLIENT_SSL and the HandshakeResponse is sequence 1 (the agent
answers with sequence 2); the rest is the same code.

The password the client may send is ignored: the certificate is the credential. Refused,
with an ERR packet and a failed ``db.session.start`` audit event: a client that does not
switch to TLS, no or a wrong certificate, a database that is not online, a user or database
name the roles do not allow. Commands are checked and audited by the agent. Started by
:mod:`limen.proxy.db.db_proxy_service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import socket
import ssl
import uuid

from limen.dbproto import mysql as my
from limen.errors import BadParameter, LimenError
from limen.net.relay import Relay
from limen.net.streams import accept_tls, close_writer, hand_over
from limen.proxy.db.db_route import DBRouter, LocalSession, handshake, peer_der

__all__ = ["OFFERED_CAPABILITIES", "MySQLFront"]

log = logging.getLogger(__name__)

OFFERED_CAPABILITIES = (
    my.CLIENT_LONG_PASSWORD | my.CLIENT_FOUND_ROWS | my.CLIENT_LONG_FLAG
    | my.CLIENT_CONNECT_WITH_DB | my.CLIENT_ODBC | my.CLIENT_IGNORE_SPACE
    | my.CLIENT_PROTOCOL_41 | my.CLIENT_INTERACTIVE | my.CLIENT_SSL | my.CLIENT_IGNORE_SIGPIPE
    | my.CLIENT_TRANSACTIONS | my.CLIENT_SECURE_CONNECTION | my.CLIENT_MULTI_STATEMENTS
    | my.CLIENT_MULTI_RESULTS | my.CLIENT_PS_MULTI_RESULTS | my.CLIENT_PLUGIN_AUTH
    | my.CLIENT_CONNECT_ATTRS | my.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | my.CLIENT_SESSION_TRACK | my.CLIENT_DEPRECATE_EOF | my.CLIENT_LOCAL_FILES
)
"""What the greeting offers: no compression. LOCAL INFILE is offered (the greeting goes out
before the database is known); the db agent passes it on only to a database whose Resource
allows it (``spec.mysql.allow_local_infile``), so elsewhere the server refuses the statement."""
SERVER_VERSION = "8.0.0-Limen"
_UTF8MB4_GENERAL_CI = 45
_SERVER_STATUS_AUTOCOMMIT = 2
_ER_ACCESS_DENIED = 1045
_ER_HANDSHAKE = 1043
_STARTUP_TIMEOUT = 30.0
_PLAINTEXT = ("Limen requires TLS with your Limen database certificate: run lmsh db login "
              "NAME, then connect with the option group it writes")


class MySQLFront:
    def __init__(self, router: DBRouter, tls: ssl.SSLContext) -> None:
        self.router = router
        self.tls = tls
        self._ids = itertools.count(1)

    async def handle_socket(self, sock: socket.socket, client_addr: str) -> None:
        """Serve one accepted connection. Until TLS the socket is read exactly packet by
        packet, never ahead: a client sends its TLS ClientHello right behind the SSLRequest,
        and those bytes belong to the TLS handshake."""
        session_id = str(uuid.uuid4())
        writer: asyncio.StreamWriter | None = None
        try:
            writer = await self._serve(sock, client_addr, session_id)
        except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError) as err:
            log.debug("mysql front: %s: %s", client_addr, err)
        except BadParameter as err:
            await self.router.refused(f"malformed handshake: {err}", identity=None,
                                      protocol="mysql", client_addr=client_addr,
                                      session_id=session_id)
            await _send_raw(sock, my.encode_packet(2, my.err_payload(
                _ER_HANDSHAKE, "08S01", f"malformed handshake: {err}")))
        finally:
            if writer is not None:
                await close_writer(writer)
            else:
                sock.close()

    async def handle_routed(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        """One connection the web port routed here by ALPN (``limen-mysql``): TLS with the
        client's certificate already, so the greeting does not offer CLIENT_SSL and the
        client's HandshakeResponse (sequence 1) comes straight away; an SSLRequest is
        refused as malformed."""
        peer = writer.get_extra_info("peername")
        client_addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        session_id = str(uuid.uuid4())
        try:
            writer.write(self._greeting(OFFERED_CAPABILITIES & ~my.CLIENT_SSL))
            await writer.drain()
            async with asyncio.timeout(_STARTUP_TIMEOUT):
                first = await _read_packet(reader)
            hello = my.decode_client_hello(first.payload)
            if not isinstance(hello, my.HandshakeResponse):
                raise BadParameter("an SSL request on a connection that is TLS already "
                                   "(ALPN limen-mysql)")
            await self._session(hello, first.seq + 1, reader, writer, client_addr, session_id)
        except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError) as err:
            log.debug("mysql front: %s: %s", client_addr, err)
        except BadParameter as err:
            await self.router.refused(f"malformed handshake: {err}", identity=None,
                                      protocol="mysql", client_addr=client_addr,
                                      session_id=session_id)
            await _send_err(writer, 2, _ER_HANDSHAKE, "08S01", f"malformed handshake: {err}")
        finally:
            await close_writer(writer)

    def _greeting(self, capabilities: int) -> bytes:
        scramble = bytes(secrets.choice(range(1, 128)) for _ in range(20))
        return my.encode_packet(0, my.encode_handshake(my.Handshake(
            SERVER_VERSION, next(self._ids) % 2**32, scramble, capabilities,
            _UTF8MB4_GENERAL_CI, _SERVER_STATUS_AUTOCOMMIT, "mysql_native_password")))

    async def _serve(self, sock: socket.socket, client_addr: str,
                     session_id: str) -> asyncio.StreamWriter | None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, self._greeting(OFFERED_CAPABILITIES))
        async with asyncio.timeout(_STARTUP_TIMEOUT):
            first = await _recv_packet(sock)
        hello = my.decode_client_hello(first.payload)
        if not isinstance(hello, my.SSLRequest):
            await self.router.refused(_PLAINTEXT, identity=None, protocol="mysql",
                                      client_addr=client_addr, session_id=session_id)
            await _send_raw(sock, my.encode_packet(first.seq + 1, my.err_payload(
                _ER_ACCESS_DENIED, "28000", _PLAINTEXT)))
            return None
        reader, writer = await handshake(self.router, accept_tls(sock, self.tls), "mysql",
                                         client_addr, session_id)
        async with asyncio.timeout(_STARTUP_TIMEOUT):
            second = await _read_packet(reader)
        response = my.decode_client_hello(second.payload)
        if not isinstance(response, my.HandshakeResponse):
            raise BadParameter("a second SSL request")
        try:
            await self._session(response, second.seq + 1, reader, writer, client_addr,
                                session_id)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as err:
            log.debug("mysql front: %s: %s", client_addr, err)
        return writer

    async def _session(self, hello: my.HandshakeResponse, seq: int,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       client_addr: str, session_id: str) -> None:
        try:
            opened = await self.router.connect(
                peer_der(writer), "mysql", db_user=hello.username,
                db_name=hello.database or "",
                default_name=lambda target, _user: target.default_database,
                params={"capabilities": str(hello.capabilities & OFFERED_CAPABILITIES),
                        "charset": str(hello.charset), "max_packet": str(hello.max_packet),
                        "seq": str(seq)},
                client_addr=client_addr, session_id=session_id)
        except LimenError as err:
            await _send_err(writer, seq, _ER_ACCESS_DENIED, "28000", f"Limen: {err}")
            return
        if isinstance(opened, LocalSession):  # the db agent of this process: the client's own
            await opened.serve(reader, writer)  # connection, no second relay
            return
        try:
            # no parsing here: Protocols
            relay = Relay(name=f"mysql session {session_id}", coalesce=False)
            hand_over(reader, writer, relay, 0)
            hand_over(opened.reader, opened.writer, relay, 1)
            await relay.wait_closed()
        finally:
            await close_writer(opened.writer)

async def _read_packet(reader: asyncio.StreamReader) -> my.Packet:
    header = await reader.readexactly(4)
    size = int.from_bytes(header[:3], "little")
    if size >= my.MAX_PAYLOAD:
        raise BadParameter("oversized handshake packet")
    return my.Packet(header[3], await reader.readexactly(size))


async def _recv_packet(sock: socket.socket) -> my.Packet:
    header = await _recv_exactly(sock, 4)
    size = int.from_bytes(header[:3], "little")
    if size >= my.MAX_PAYLOAD:
        raise BadParameter("oversized handshake packet")
    return my.Packet(header[3], await _recv_exactly(sock, size))


async def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise ConnectionResetError("the client closed the connection")
        data += chunk
    return bytes(data)


async def _send_raw(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        await asyncio.get_running_loop().sock_sendall(sock, data)


async def _send_err(writer: asyncio.StreamWriter, seq: int, code: int, state: str,
                    message: str) -> None:
    try:
        writer.write(my.encode_packet(seq, my.err_payload(code, state, message)))
        await writer.drain()
    except (OSError, ssl.SSLError, RuntimeError):
        pass
