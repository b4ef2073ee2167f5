"""MySQL/MariaDB at the db agent: log in upstream over TLS with the database user's client
certificate (no password), answer the client's login, then relay, auditing and checking
every command.

::

    proxy ──(session request: client capabilities, charset, next seq)──▶ agent
    agent ──TCP──▶ server greeting ◀── SSLRequest (seq 1), TLS (CN=<db user>),
                   HandshakeResponse41 (seq 2, user, empty auth, database) ──▶ OK / ERR
    agent ──OK or ERR (renumbered to the client's seq)──▶ proxy ──▶ client

Commands (the first packet of each, sequence 0) are decoded: ``COM_QUERY`` and
``COM_STMT_PREPARE`` are audited with their SQL, ``COM_STMT_EXECUTE`` with its statement id;
a ``USE`` (in any statement of a multi-statement query) and ``COM_INIT_DB`` must name a
database the roles allow (``db_names``), ``COM_CHANGE_USER`` and replication commands are
refused: each refusal answers an ERR packet to the client, is audited, and the command never
reaches the server. ``LOAD DATA LOCAL INFILE`` works only for a Resource with
``spec.mysql.allow_local_infile: true``: otherwise the client capability is not passed on and
the server refuses the statement; when allowed, the statement is audited as a query and the
file's size as a ``LOCAL_INFILE_DATA`` query event once it is sent. Called by
:mod:`limen.agents.db.db_service`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from limen.agents.db.audited_relay import AuditedRelay, relay_session
from limen.agents.db.session import DBSession
from limen.agents.db.upstream_tls import UpstreamCerts, UpstreamTarget, upstream_target
from limen.dbproto import mysql as my
from limen.errors import BadParameter, LimenError
from limen.net.streams import close_writer

__all__ = ["MySQLUpstream", "login_upstream", "serve_mysql"]

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 10.0
_REFUSED_COMMANDS = {
    my.COM_CHANGE_USER: "COM_CHANGE_USER is not allowed through Limen: connect again as the "
                        "other database user",
    my.COM_BINLOG_DUMP: "replication is not allowed through Limen",
}
_ER_DBACCESS_DENIED = 1044
_ER_SPECIFIC_ACCESS_DENIED = 1227
_ER_CONNECTION = 2013


class MySQLUpstream:
    """A logged-in (or logging-in) connection to the server: its packets one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.splitter = my.PacketSplitter()
        self.queue: list[my.Packet] = []

    async def packet(self) -> my.Packet:
        while not self.queue:
            data = await self.reader.read(65536)
            if not data:
                raise BadParameter("the database closed the connection")
            self.queue.extend(self.splitter.feed(data))
        return self.queue.pop(0)


async def _login(session: DBSession, certs: UpstreamCerts, capabilities: int, charset: int,
                 max_packet: int) -> tuple[MySQLUpstream, bytes]:
    """The upstream connection and the final OK payload, or raise with the reason."""
    target = upstream_target(session.db)
    context = await certs.context(target, session.db_user)
    if not local_infile_allowed(session):
        capabilities &= ~my.CLIENT_LOCAL_FILES
    return await login_upstream(target, context, session.db_user, session.db_name,
                                capabilities, charset, max_packet)


async def login_upstream(target: UpstreamTarget, context: ssl.SSLContext, db_user: str,
                         db_name: str, capabilities: int, charset: int, max_packet: int,
                         *, attributes: bool = True) -> tuple[MySQLUpstream, bytes]:
    """Log in to the MySQL server of ``target`` as ``db_user`` over TLS with the client
    certificate of ``context`` (no password): the connection and the final OK payload, or
    raise BadParameter (OSError, ssl.SSLError, TimeoutError) with the reason. Also used by
    :mod:`limen.agents.db.admin_mysql` for the admin user."""
    async with asyncio.timeout(_CONNECT_TIMEOUT):
        reader, writer = await asyncio.open_connection(target.host, target.port)
        up = MySQLUpstream(reader, writer)
        try:
            greeting = await up.packet()
            if my.is_err(greeting.payload):
                raise BadParameter(my.decode_err(greeting.payload).message)
            hello = my.decode_handshake(greeting.payload)
            if not hello.capabilities & my.CLIENT_SSL:
                raise BadParameter("the database does not offer TLS")
            caps = (capabilities & hello.capabilities & ~my.CLIENT_COMPRESS) \
                | my.CLIENT_SSL | my.CLIENT_PROTOCOL_41
            if db_name:
                caps |= my.CLIENT_CONNECT_WITH_DB
            else:
                caps &= ~my.CLIENT_CONNECT_WITH_DB
            caps |= hello.capabilities & my.CLIENT_PLUGIN_AUTH
            writer.write(my.encode_packet(1, my.encode_ssl_request(my.SSLRequest(
                caps, max_packet, charset))))
            await writer.start_tls(context, server_hostname=target.server_name
                                   if target.mode != "insecure" else None)
            up.splitter = my.PacketSplitter()
            plugin = hello.auth_plugin if caps & my.CLIENT_PLUGIN_AUTH else None
            writer.write(my.encode_packet(2, my.encode_handshake_response(my.HandshakeResponse(
                caps, max_packet, charset, db_user, b"", db_name or None, plugin or None,
                {"_client_name": "limen"} if attributes and caps & my.CLIENT_CONNECT_ATTRS
                else {}))))
            for _ in range(3):
                answer = await up.packet()
                if my.is_ok(answer.payload):
                    return up, answer.payload
                if my.is_err(answer.payload):
                    raise BadParameter(f"database refused: {my.decode_err(answer.payload).message}")
                if answer.payload[:1] == b"\xfe":  # auth switch: an empty password's answer
                    my.decode_auth_switch(answer.payload)
                    writer.write(my.encode_packet(answer.seq + 1, b""))
                    continue
                raise BadParameter("the database asked for more than the client certificate: "
                                   "the user must be created with REQUIRE SUBJECT and no "
                                   "password (lmctl auth sign --format db prints how)")
            raise BadParameter("the database kept asking for authentication")
        except BaseException:
            writer.close()
            raise


def local_infile_allowed(session: DBSession) -> bool:
    """Whether the Resource opts in to LOAD DATA LOCAL INFILE (``spec.mysql``)."""
    options = session.db.spec.get("mysql")
    return isinstance(options, dict) and options.get("allow_local_infile") is True


async def serve_mysql(session: DBSession, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter, certs: UpstreamCerts) -> None:
    params = session.request.params
    try:
        capabilities = int(params.get("capabilities", "0"))
        charset = int(params.get("charset", "45"))
        max_packet = int(params.get("max_packet", str(1 << 24)))
        seq = int(params.get("seq", "3"))
    except ValueError:
        raise BadParameter("malformed MySQL session parameters") from None
    try:
        up, ok = await _login(session, certs, capabilities, charset, max_packet)
    except (LimenError, OSError, ssl.SSLError, TimeoutError) as err:
        reason = str(err) or ("timed out" if isinstance(err, TimeoutError) else type(err).__name__)
        await session.emit("db.session.start", success=False, reason=reason)
        client_writer.write(my.encode_packet(seq, my.err_payload(
            _ER_CONNECTION, "08S01", f"Limen: cannot log in to database {session.db.name}: "
                                     f"{reason}")))
        await client_writer.drain()
        return
    try:
        client_writer.write(my.encode_packet(seq, ok))
        await client_writer.drain()
        await session.emit("db.session.start")
        if up.queue:  # nothing should follow an OK before a command; pass it on if it does
            client_writer.write(b"".join(my.encode_packet(p.seq, p.payload) for p in up.queue))
        await relay_session(session, _Commands(local_infile_allowed(session)),
                            (client_reader, client_writer), (up.reader, up.writer))
        await session.end()
    finally:
        await close_writer(up.writer)


class _Commands:
    """The inspector of the client's packets (:mod:`limen.agents.db.audited_relay`).

    A packet of sequence 0 is a command: checked and audited (:func:`_check`). With
    ``local_infile``, a ``COM_QUERY`` may be answered by the server's LOCAL INFILE request
    (sequence 1); the client's file then follows as packets of sequence 2, 3, ... (wrapping
    past 255), ended by an empty one: packets that continue that sequence are file data,
    passed on and counted, never read as commands. A server that asked for no file refuses
    a packet of sequence 2 as out of order, so nothing the client calls file data can run
    as a command. Other packets (the rest of a command longer than 16 MiB) pass as they are.
    """

    def __init__(self, local_infile: bool) -> None:
        self.splitter = my.PacketSplitter()
        self.local_infile = local_infile
        self.expect: int | None = None
        """The sequence number a file data packet would have now, if a transfer may run."""
        self.file_bytes = 0

    def __call__(self, data: bytes, relay: AuditedRelay) -> tuple[bytes, bool]:
        session = relay.session
        out: list[bytes] = []
        room = True
        for packet in self.splitter.feed(data):
            if self.expect is not None and packet.seq == self.expect:
                room = self._file_data(session, packet) and room
            elif packet.seq == 0:
                self.expect = None
                refusal, ok = _check(session, packet)
                room = ok and room
                if refusal is not None:
                    relay.reply(0, my.encode_packet(1, refusal))
                    continue
                if self.local_infile and packet.payload[:1] == bytes([my.COM_QUERY]):
                    self.expect, self.file_bytes = 2, 0
            out.append(my.encode_packet(packet.seq, packet.payload))
        return b"".join(out), room

    def _file_data(self, session: DBSession, packet: my.Packet) -> bool:
        if packet.payload:
            self.file_bytes += len(packet.payload)
            self.expect = (packet.seq + 1) % 256
            return True
        self.expect = None  # the empty packet ends the file
        return session.record("db.session.query", command="LOCAL_INFILE_DATA",
                              bytes=self.file_bytes)


def _check(session: DBSession, packet: my.Packet) -> tuple[bytes | None, bool]:
    """Audit one command: the ERR payload to answer instead of passing it on (or None), and
    whether the audit buffer has room. Refusals and queries are queued in the audit buffer
    before the answer or the command goes anywhere."""
    if not packet.payload:
        return None, True
    command = my.decode_command(packet.payload)
    refused = _REFUSED_COMMANDS.get(command.code)
    if refused is not None:
        room = session.record("db.session.query", success=False, command=command.name,
                              reason=refused)
        return my.err_payload(_ER_SPECIFIC_ACCESS_DENIED, "42000", f"Limen: {refused}"), room
    databases: tuple[str, ...] = ()
    if command.code == my.COM_INIT_DB and command.text is not None:
        databases = (command.text,)
    elif command.code in (my.COM_QUERY, my.COM_STMT_PREPARE) and command.text is not None:
        databases = my.use_statement_databases(command.text)
    for name in databases:
        reason = session.check_db_name(name)
        if reason is not None:
            room = session.record("db.session.query", success=False, command=command.name,
                                  query=command.text or "", reason=reason)
            return my.err_payload(_ER_DBACCESS_DENIED, "42000",
                                  f"Limen: access to database {name!r} denied: {reason}"), room
    room = True
    if command.code in (my.COM_QUERY, my.COM_STMT_PREPARE, my.COM_INIT_DB):
        room = session.record("db.session.query", command=command.name,
                              query=command.text or "")
    elif command.code == my.COM_STMT_EXECUTE:
        room = session.record("db.session.query", command=command.name,
                              statement_id=command.statement_id)
    return None, room
