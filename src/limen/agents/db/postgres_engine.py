"""PostgreSQL at the db agent: log in upstream with the database user's client certificate,
then relay, auditing every query.

::

    proxy ──(session request)──▶ agent ──SSLRequest, TLS (CN=<db user>)──▶ PostgreSQL
          ◀── AuthenticationOk, ParameterStatus…, BackendKeyData, ReadyForQuery ──┘
    then (limen.agents.db.audited_relay): client messages are split (Q, P, B kept for the
    audit, everything else only counted) and written upstream as they came; the server's
    bytes go back untouched.

The upstream must authenticate the certificate (``cert`` in pg_hba.conf): a request for a
password is answered with a clear error to the client, never passed on (the client would
prompt for a password nobody has). Startup parameters come only as structured fields: the
user and the database are the decided ones, ``replication`` is refused, the client's other
parameters (application_name, client_encoding, DateStyle, options...) are passed on.

Audit: ``db.session.start`` (success, or the reason the database refused), one
``db.session.query`` per simple query and per Bind of the extended protocol (the Parse'd
statement and its parameters; queued in the agent's audit buffer before the message is
forwarded, written in batches), ``db.session.end`` with byte counts (durable: it covers the
queries before it). Called by
:mod:`limen.agents.db.db_service`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct

from limen.agents.db.audited_relay import AuditedRelay, Farewell, Inspector, relay_session
from limen.agents.db.session import DBSession
from limen.agents.db.upstream_tls import UpstreamCerts, UpstreamTarget, upstream_target
from limen.dbproto import postgres as pg
from limen.errors import BadParameter, LimenError
from limen.net.streams import close_writer

__all__ = ["cancel_postgres", "open_upstream", "serve_postgres"]

log = logging.getLogger(__name__)

_U32 = struct.Struct("!I")
_ALL_TYPES = frozenset(bytes([b]) for b in range(256))
_CONNECT_TIMEOUT = 10.0
_DROPPED_PARAMS = frozenset({"user", "database", "replication"})


async def open_upstream(target: UpstreamTarget, context: ssl.SSLContext
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection to the PostgreSQL server of ``target`` (SSLRequest, then the
    handshake with ``context``), before the startup message. Also used by
    :mod:`limen.agents.db.admin_postgres`."""
    async with asyncio.timeout(_CONNECT_TIMEOUT):
        reader, writer = await asyncio.open_connection(target.host, target.port)
        writer.write(pg.encode_ssl_request())
        answer = await reader.readexactly(1)
        if answer != b"S":
            writer.close()
            raise BadParameter(f"the database at {target.host}:{target.port} does not accept "
                               "TLS")
        await writer.start_tls(context, server_hostname=target.server_name
                               if target.mode != "insecure" else None)
    return reader, writer


async def serve_postgres(session: DBSession, client_reader: asyncio.StreamReader,
                         client_writer: asyncio.StreamWriter, certs: UpstreamCerts, *,
                         backend_key: pg.BackendKey | None = None) -> None:
    target = upstream_target(session.db)
    if session.request.params.get("replication", "false").lower() not in ("false", "0", "no",
                                                                           "off"):
        await _refuse(session, client_writer, "replication connections are not allowed "
                      "through Limen", "42501")
        return
    try:
        context = await certs.context(target, session.db_user)
        reader, writer = await open_upstream(target, context)
    except (LimenError, OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError) as err:
        await _refuse(session, client_writer, f"cannot reach database {session.db.name}: "
                      f"{_reason(err)}", "08006")
        return
    try:
        params = {k: v for k, v in session.request.params.items() if k not in _DROPPED_PARAMS}
        params["user"] = session.db_user
        if session.db_name:
            params["database"] = session.db_name
        writer.write(pg.encode_startup(params))
        if not await _startup(session, reader, client_writer, backend_key):
            return
        await session.emit("db.session.start")
        inspect, farewell = _inspector()
        await relay_session(session, inspect, (client_reader, client_writer),
                            (reader, writer), farewell)
        await session.end()
    finally:
        await close_writer(writer)


async def _startup(session: DBSession, reader: asyncio.StreamReader,
                   client_writer: asyncio.StreamWriter, backend_key: pg.BackendKey | None) -> bool:
    """Pass the upstream's login answer to the client up to ReadyForQuery (its BackendKeyData
    swapped by ``backend_key`` when given); False when the database refused (audited, the
    client got the error)."""
    splitter = pg.MessageSplitter(keep=_ALL_TYPES, max_message=1 << 20)
    while True:
        data = await reader.read(65536)
        if not data:
            await _refuse(session, client_writer, "the database closed the connection during "
                          "login", "08006")
            return False
        for frame in splitter.feed(data):
            assert frame.payload is not None
            if frame.type == b"R":
                code, _ = pg.decode_authentication(frame.payload)
                if code != pg.AUTH_OK:
                    await _refuse(session, client_writer, "the database asked for a password: "
                                  "it must authenticate Limen's client certificate (pg_hba.conf "
                                  "'cert'; lmctl auth sign --format db prints the lines)",
                                  "28000")
                    return False
            elif frame.type == b"E":
                fields = pg.decode_error_fields(frame.payload)
                client_writer.write(pg.encode_message(frame.type, frame.payload))
                await client_writer.drain()
                await session.emit("db.session.start", success=False,
                                   reason=f"database refused: {fields.get('M', '')}")
                return False
            elif frame.type == b"K" and backend_key is not None:
                pid, secret = pg.decode_backend_key_data(frame.payload)
                client_writer.write(pg.encode_backend_key_data(*backend_key(pid, secret)))
                continue
            client_writer.write(pg.encode_message(frame.type, frame.payload))
            if frame.type == b"Z":
                await client_writer.drain()
                return True
        await client_writer.drain()


def _inspector() -> tuple[Inspector, Farewell]:
    """Split the client's messages (Q, P, B kept for the audit, the rest only counted) and
    queue a query event per Q and B; every byte is forwarded as it came. The farewell, when
    the audit fails (or a lock ends the session) between two client messages: Terminate to
    the database, then a FATAL error (57P01, as a server shut down by its administrator) to
    the client."""
    splitter = pg.MessageSplitter(keep=(b"Q", b"P", b"B"))
    statements: dict[str, str] = {}

    def inspect(data: bytes, relay: AuditedRelay) -> tuple[bytes, bool]:
        if data[:1] == b"Q" and splitter.at_boundary and len(data) > 5 and \
                _U32.unpack_from(data, 1)[0] == len(data) - 1:
            # one whole simple query, the most common read by far: no framing state to keep
            return data, relay.session.record("db.session.query",
                                              query=pg.decode_query(data[5:]))
        room = True
        for frame in splitter.feed(data):
            if frame.payload is not None:
                room = _audit(relay.session, frame, statements) and room
        return data, room

    def farewell(reason: str) -> tuple[bytes, bytes] | None:
        if not splitter.at_boundary:
            return None
        return pg.encode_terminate(), pg.error_response(
            f"Limen ended the session: {reason}", "57P01")
    return inspect, farewell


def _audit(session: DBSession, frame: pg.Frame, statements: dict[str, str]) -> bool:
    """Queue the query event of a Q or B message (remember a P's statement); False when the
    audit buffer is full."""
    assert frame.payload is not None
    if frame.type == b"Q":
        return session.record("db.session.query", query=pg.decode_query(frame.payload))
    if frame.type == b"P":
        parse = pg.decode_parse(frame.payload)
        if len(statements) > 4096:
            statements.clear()
        statements[parse.statement] = parse.query
        return True
    bind = pg.decode_bind(frame.payload)
    return session.record("db.session.query", query=statements.get(bind.statement, ""),
                          statement=bind.statement, parameters=pg.bind_params_text(bind))


async def _refuse(session: DBSession, client_writer: asyncio.StreamWriter, message: str,
                  code: str) -> None:
    await session.emit("db.session.start", success=False, reason=message)
    client_writer.write(pg.error_response(message, code))
    await client_writer.drain()


async def cancel_postgres(db_target: UpstreamTarget, context: ssl.SSLContext, pid: int,
                          secret: int) -> None:
    """Send a CancelRequest for the upstream key (pid, secret) to the database, over TLS."""
    reader, writer = await open_upstream(db_target, context)
    try:
        writer.write(pg.encode_cancel(pid, secret))
        await writer.drain()
        async with asyncio.timeout(5):
            await reader.read(1)  # the server closes once it has read the request
    finally:
        await close_writer(writer)


def _reason(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, asyncio.IncompleteReadError):
        return "the database closed the connection"
    return str(err) or type(err).__name__
