"""``lmsh proxy db``: a plaintext listener on 127.0.0.1 for database tools that cannot present
a client certificate; each connection continues to the Limen proxy over TLS with the user's
database certificate (``lmsh db login``).

::

    tool ──plaintext──▶ 127.0.0.1:P (this) ──TLS (ALPN limen-postgres / limen-mysql),
                                             database certificate──▶ proxy's web port
                                         or ──TLS inside the protocol──▶ its db listener

The proxy's web port comes first (single-port access: :mod:`limen.dbproto.alpn`); a proxy
that does not select the ALPN (an older one) makes this fall back, once and for good, to the
db listener its ping announced (``fallback``), reported through ``report``.

Only the user running ``lmsh`` is served: a connection whose client socket another uid owns
(:func:`limen.client.local_peer.is_own_connection`) is closed before a byte is read.

* PostgreSQL: a client's SSLRequest or GSSENCRequest is answered ``N`` (this hop has no TLS);
  its StartupMessage (or CancelRequest) is read and forwarded, then bytes are relayed. On the
  web port the connection is TLS from the start (the handshake presents the database
  certificate and verifies the proxy against the cluster CA saved at login); on a db listener
  the proxy is first asked for TLS (SSLRequest, ``S`` expected), with the same handshake.
* MySQL/MariaDB: the proxy's greeting is forwarded with CLIENT_SSL cleared, so the tool answers
  with its HandshakeResponse (sequence 1) straight away. On the web port that answer goes up
  as it is, then bytes are relayed. On a db listener upstream gets an SSLRequest (sequence 1),
  TLS, then that HandshakeResponse as sequence 2 with CLIENT_SSL set; until the login ends (an
  OK or ERR from the proxy) the sequence numbers are shifted back for the tool (3 → 2...) and
  forward for the proxy; then bytes are relayed.

A failure before the relay is told to the tool in its protocol's error message when possible,
and reported through ``report``. Called by ``limen.cli.lmsh_db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509

from limen.ca.identity import SystemRole
from limen.ca.keys import load_private_key
from limen.ca.peer_role import require_server_role, trust_map_from_pems
from limen.ca.tls import client_context
from limen.client.db_profiles import MYSQL, POSTGRES, DbFiles
from limen.client.local_peer import is_own_connection
from limen.dbproto import mysql, postgres
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError
from limen.net.streams import close_writer

__all__ = ["LocalDbProxy", "Upstream", "upstream_context"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
_CONNECT_TIMEOUT = 15.0
_STARTUP_TIMEOUT = 30.0
_MAX_NEGOTIATIONS = 2  # an SSLRequest and a GSSENCRequest, at most one of each in practice
_MYSQL_HANDSHAKE_ERROR = 1043  # ER_HANDSHAKE_ERROR
_FAILURES = (LimenError, OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError)
_ENDINGS = (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError)


@dataclass(frozen=True)
class Upstream:
    """Where the proxy serves the database, and the TLS context that presents the
    certificate: its web port when ``alpn`` is set (the context is made to ask for that
    ALPN: give each Upstream its own), else its database listener."""

    host: str
    port: int
    context: ssl.SSLContext
    alpn: str | None = None

    def __post_init__(self) -> None:
        if self.alpn is not None:
            self.context.set_alpn_protocols([self.alpn])

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def upstream_context(files: DbFiles, trusted_cas: dict[str, bytes]) -> ssl.SSLContext:
    """Mutual TLS with the database certificate and key; the server must be the cluster's
    proxy (a certificate of the saved CA with the proxy's Limen identity)."""
    trusted = trust_map_from_pems(trusted_cas)
    cas = [cert for certs in trusted.values() for cert in certs]
    if not cas:
        raise AccessDenied("no trusted CA saved for this proxy: run lmsh login again")
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    key = load_private_key(files.key.read_bytes())
    return require_server_role(client_context(cert, key, cas), SystemRole.PROXY, trusted)


class LocalDbProxy:
    """One local listener for one database of protocol ``postgres`` or ``mysql``: to
    ``upstream``, and when that is the web port of a proxy that does not select its ALPN, to
    ``fallback`` (the db listener) from then on."""

    def __init__(self, protocol: str, upstream: Upstream, *,
                 fallback: Upstream | None = None,
                 report: Callable[[str], None] = log.warning,
                 is_allowed: Callable[..., bool] = is_own_connection) -> None:
        if protocol not in (POSTGRES, MYSQL):
            raise BadParameter(f"no local proxy for protocol {protocol!r}")
        if fallback is not None and fallback.alpn is not None:
            raise BadParameter("the fallback is a database listener, without ALPN")
        self.protocol = protocol
        self.upstream = upstream
        self.fallback = fallback
        self.report = report
        self.is_allowed = is_allowed
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> tuple[str, int]:
        """Listen on ``host:port`` (0 picks a free port); returns the bound address."""
        self._server = await asyncio.start_server(self._accepted, host, port)
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            peer = writer.get_extra_info("peername")
            if not self.is_allowed(writer.get_extra_info("socket")):
                self.report(f"refused a connection from {peer}: its socket is not yours")
                return
            if self.protocol == POSTGRES:
                await self._postgres(reader, writer)
            else:
                await self._mysql(reader, writer)
        except _FAILURES as err:
            self.report(f"connection to {self.upstream.address} failed: {_describe(err)}")
        except asyncio.CancelledError:
            pass  # close(): this task is the connection's own, and asyncio reports a
            # cancelled connection task as an error
        finally:
            self._tasks.discard(task)
            _close(writer)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Upstream]:
        """A connection to the proxy, and where it goes: the web port's route (``alpn`` set:
        TLS already) or a db listener (plaintext until the protocol switches to TLS)."""
        upstream = self.upstream
        if upstream.alpn is not None:
            routed = await self._open_routed(upstream)
            if routed is not None:
                return *routed, upstream
            if self.fallback is None:
                raise ConnectionProblem(
                    f"the proxy at {upstream.address} does not serve {self.protocol} on its "
                    f"web port (ALPN {upstream.alpn}) and announces no {self.protocol} listener")
            if self.upstream is upstream:
                self.upstream = self.fallback
                self.report(f"the proxy at {upstream.address} does not serve {self.protocol} "
                            f"on its web port (an older proxy): using its {self.protocol} "
                            f"listener at {self.fallback.address}")
            upstream = self.fallback
        reader, writer = await self._open(upstream, None)
        return reader, writer, upstream

    async def _open(self, upstream: Upstream, tls: ssl.SSLContext | None
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                return await asyncio.open_connection(
                    upstream.host, upstream.port, ssl=tls,
                    server_hostname=upstream.host if tls is not None else None,
                    ssl_handshake_timeout=_CONNECT_TIMEOUT if tls is not None else None)
        except ssl.SSLError as err:
            raise ConnectionProblem(f"TLS with the proxy failed: {_describe(err)}") from err
        except (OSError, TimeoutError) as err:
            raise ConnectionProblem(f"cannot reach the proxy at {upstream.address}: "
                                    f"{_describe(err)}") from err

    async def _open_routed(self, upstream: Upstream
                           ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """TLS to the web port with the ALPN; None when the proxy did not select it."""
        reader, writer = await self._open(upstream, upstream.context)
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == upstream.alpn:
            return reader, writer
        await close_writer(writer)
        return None

    async def _upgrade(self, writer: asyncio.StreamWriter, upstream: Upstream) -> None:
        try:
            await writer.start_tls(upstream.context, server_hostname=upstream.host,
                                   ssl_handshake_timeout=_CONNECT_TIMEOUT)
        except (ssl.SSLError, OSError, TimeoutError) as err:
            raise ConnectionProblem(f"TLS with the proxy failed: {_describe(err)}") from err

    # -- PostgreSQL --------------------------------------------------------------------------
    async def _postgres(self, client_r: asyncio.StreamReader,
                        client_w: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(_STARTUP_TIMEOUT):
            packet = await _postgres_startup(client_r, client_w)
        try:
            up_r, up_w, upstream = await self._connect()
        except ConnectionProblem as err:
            client_w.write(postgres.error_response(str(err), code="08006"))
            raise
        try:
            if upstream.alpn is None:
                up_w.write(postgres.encode_ssl_request())
                await up_w.drain()
                async with asyncio.timeout(_STARTUP_TIMEOUT):
                    answer = await up_r.readexactly(1)
                if answer != b"S":
                    raise ConnectionProblem(f"the proxy answered {answer!r} to the "
                                            "SSLRequest, not S")
                await self._upgrade(up_w, upstream)
        except _FAILURES as err:
            client_w.write(postgres.error_response(f"lmsh: {_describe(err)}", code="08006"))
            _close(up_w)
            raise
        up_w.write(packet)
        await _relay(client_r, client_w, up_r, up_w)

    # -- MySQL / MariaDB ---------------------------------------------------------------------
    async def _mysql(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        state = _MySQLLogin()
        try:
            up_r, up_w, upstream = await self._connect()
        except ConnectionProblem as err:
            _mysql_error(client_w, state.error_seq, str(err))
            raise
        try:
            async with asyncio.timeout(_STARTUP_TIMEOUT):
                hello = await self._mysql_login(client_r, client_w, up_r, up_w, state, upstream)
        except _FAILURES as err:
            if not state.told:
                _mysql_error(client_w, state.error_seq, f"lmsh: {_describe(err)}")
            _close(up_w)
            raise
        if hello is None:  # the web port's route: the answer went up as it was
            await _relay(client_r, client_w, up_r, up_w)
        else:
            await _mysql_relay(client_r, client_w, up_r, up_w, hello)

    async def _mysql_login(self, client_r: asyncio.StreamReader,
                           client_w: asyncio.StreamWriter, up_r: asyncio.StreamReader,
                           up_w: asyncio.StreamWriter, state: _MySQLLogin,
                           upstream: Upstream) -> mysql.HandshakeResponse | None:
        """Greeting and the tool's answer. On the web port's route (``upstream.alpn``) the
        answer is sent up as sequence 1 and None returned; on a db listener, TLS upstream,
        and the answer is returned (to send as sequence 2)."""
        routed = upstream.alpn is not None
        seq, greeting = await _read_packet(up_r)
        if mysql.is_err(greeting):
            client_w.write(mysql.encode_packet(seq, greeting))
            state.told = True
            raise ConnectionProblem(f"the proxy refused: {mysql.decode_err(greeting).message}")
        handshake = mysql.decode_handshake(greeting)
        if not routed and not handshake.capabilities & mysql.CLIENT_SSL:
            raise ConnectionProblem("the proxy does not offer TLS on its MySQL listener")
        plain = replace(handshake, capabilities=handshake.capabilities & ~mysql.CLIENT_SSL)
        client_w.write(mysql.encode_packet(seq, mysql.encode_handshake(plain)))
        await client_w.drain()
        state.error_seq = 2
        client_seq, payload = await _read_packet(client_r)
        answer = mysql.decode_client_hello(payload)
        if client_seq != 1:
            raise BadParameter(f"the handshake response came with sequence {client_seq}")
        if isinstance(answer, mysql.SSLRequest):
            raise BadParameter("this local listener has no TLS: connect without it "
                               "(--ssl-mode=DISABLED or --skip-ssl)")
        if routed:
            up_w.write(mysql.encode_packet(1, payload))
            await up_w.drain()
            return None
        caps = answer.capabilities | mysql.CLIENT_SSL
        up_w.write(mysql.encode_packet(1, mysql.encode_ssl_request(mysql.SSLRequest(
            caps, answer.max_packet, answer.charset, answer.mariadb_capabilities))))
        await up_w.drain()
        await self._upgrade(up_w, upstream)
        return replace(answer, capabilities=caps)


@dataclass
class _MySQLLogin:
    """How far a MySQL login got: the sequence number of an error for the tool now, and
    whether the tool was told already (the proxy's own ERR forwarded)."""

    error_seq: int = 0
    told: bool = False


def _describe(err: BaseException) -> str:
    if isinstance(err, asyncio.IncompleteReadError):
        return "the connection closed during the handshake"
    if isinstance(err, TimeoutError):
        return "timed out"
    return str(err) or type(err).__name__


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


async def _postgres_startup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """The tool's StartupMessage or CancelRequest (whole packet), after answering ``N`` to its
    encryption requests."""
    for _ in range(_MAX_NEGOTIATIONS + 1):
        header = await reader.readexactly(4)
        packet = header + await reader.readexactly(postgres.startup_length(header) - 4)
        decoded = postgres.decode_startup(packet)
        if isinstance(decoded, postgres.SSLRequest | postgres.GSSEncRequest):
            writer.write(b"N")
            await writer.drain()
            continue
        return packet
    raise BadParameter("too many encryption requests before the startup message")


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One MySQL packet: (sequence, payload)."""
    header = await reader.readexactly(4)
    payload = await reader.readexactly(int.from_bytes(header[:3], "little"))
    return header[3], payload


def _mysql_error(writer: asyncio.StreamWriter, seq: int, message: str) -> None:
    with contextlib.suppress(Exception):
        writer.write(mysql.encode_packet(seq, mysql.err_payload(
            _MYSQL_HANDSHAKE_ERROR, "08S01", message[:400])))


async def _mysql_relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                       up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter,
                       hello: mysql.HandshakeResponse) -> None:
    """Send the tool's answer as sequence 2, shift sequence numbers until the login ends,
    then relay bytes."""
    up_w.write(mysql.encode_packet(2, mysql.encode_handshake_response(hello)))
    logged_in = asyncio.Event()

    async def from_proxy() -> None:
        while not logged_in.is_set():
            seq, payload = await _read_packet(up_r)
            if mysql.is_ok(payload) or mysql.is_err(payload):
                logged_in.set()
            client_w.write(mysql.encode_packet(seq - 1, payload))
            await client_w.drain()
        await _pump(up_r, client_w)

    async def from_tool() -> None:
        while True:
            seq, payload = await _read_packet(client_r)
            if logged_in.is_set():  # the first command (sequence 0): no more shifting
                up_w.write(mysql.encode_packet(seq, payload))
                break
            up_w.write(mysql.encode_packet(seq + 1, payload))
            await up_w.drain()
        await _pump(client_r, up_w)

    await _run_both(from_tool(), from_proxy(), client_w, up_w)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(_CHUNK):
        sink.write(data)
        await sink.drain()


async def _relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                 up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter) -> None:
    await _run_both(_pump(client_r, up_w), _pump(up_r, client_w), client_w, up_w)


async def _run_both(one: Coroutine[Any, Any, None], other: Coroutine[Any, Any, None],
                    client_w: asyncio.StreamWriter, up_w: asyncio.StreamWriter) -> None:
    """Run both directions until either ends (EOF or error), then close both sides: these
    protocols never half-close, and TLS upstream cannot. The TLS close with the proxy is
    waited for (bounded), so the socket is released when this returns. A malformed packet
    is raised; a connection that was simply cut is the normal end."""
    tasks = [asyncio.ensure_future(one), asyncio.ensure_future(other)]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _close(client_w)
        await close_writer(up_w)
    for task in done:
        error = task.exception()
        if error is not None and not isinstance(error, _ENDINGS):
            raise error
