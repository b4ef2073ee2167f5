"""The proxy's PostgreSQL front (listener ``postgres``, default 5433): psql, pgbench, libpq
and every driver, unchanged.

::

    client ── SSLRequest ──▶ 'S', TLS (proxy certificate; the client's Limen database
              certificate, lmsh db login)           GSSENCRequest ──▶ 'N' (not offered)
           ── StartupMessage {user, database, ...} ──▶ authenticate, decide (db_route)
                                       ──▶ db agent via its tunnel (session request)
           ◀── AuthenticationOk … BackendKeyData (replaced by a key of ours) … ReadyForQuery
           ◀────────────── bytes both ways (limen.net.relay, no parsing) ──────────────▶
    (a db agent in this same process is handed the client's connection instead: it answers
    the login, with keys of ours, and its relay joins the client and the database)
    client ── CancelRequest (new connection, plaintext or TLS) ──▶ cancel_keys ──▶ agent

The same front serves the web port's ALPN ``limen-postgres`` (:meth:`PostgresFront.
handle_routed`, from :mod:`limen.proxy.db.db_tls_route`): the connection is TLS with the
client's certificate from the start, so the startup (or CancelRequest) comes first and an
SSLRequest is answered ``N``; everything after it is the same code.

Refused, with a PostgreSQL ErrorResponse and a failed ``db.session.start`` audit event: a
plaintext startup, no or a wrong certificate (expired, another cluster's, not a database
certificate), a database that is not online, a user or database name the roles do not allow,
a name with control characters. A cancel key the proxy did not issue, or one of another
user's session, is refused and audited (``db.session.cancel``). Started by
:mod:`limen.proxy.db.db_proxy_service`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from typing import Any

from limen.dbproto import postgres as pg
from limen.dbproto.session_request import SessionRequest
from limen.errors import AccessDenied, BadParameter, LimenError
from limen.events.event import make_event
from limen.net.relay import Relay
from limen.net.streams import close_writer, hand_over
from limen.proxy.db.cancel_keys import CancelKeys, CancelTarget
from limen.proxy.db.db_route import DBRouter, LocalSession, handshake, peer_der

__all__ = ["PostgresFront"]

log = logging.getLogger(__name__)

_ALL_TYPES = frozenset(bytes([b]) for b in range(256))
_STARTUP_TIMEOUT = 30.0
_PLAINTEXT = ("Limen requires TLS with your Limen database certificate: run lmsh db login "
              "NAME, then connect with the service it writes (sslmode=verify-full)")


class PostgresFront:
    def __init__(self, router: DBRouter, tls: ssl.SSLContext, cancel_keys: CancelKeys) -> None:
        self.router = router
        self.tls = tls
        self.cancel_keys = cancel_keys

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection of the ``postgres`` listener (plaintext until its SSLRequest)."""
        await self._handle(reader, writer, routed=False)

    async def handle_routed(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        """One connection the web port routed here by ALPN (``limen-postgres``): TLS with the
        client's certificate already, so the startup is read directly; an SSLRequest is
        answered ``N`` (no second TLS layer) and the client goes on."""
        await self._handle(reader, writer, routed=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                      routed: bool) -> None:
        peer = writer.get_extra_info("peername")
        client_addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        session_id = str(uuid.uuid4())
        try:
            await self._serve(reader, writer, client_addr, session_id, routed=routed)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as err:
            log.debug("postgres front: %s: %s", client_addr, err)
        except BadParameter as err:
            await self.router.refused(f"malformed startup: {err}", identity=None,
                                      protocol="postgres", client_addr=client_addr,
                                      session_id=session_id)
            await _send_error(writer, f"malformed startup packet: {err}", "08P01")
        finally:
            await close_writer(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     client_addr: str, session_id: str, *, routed: bool) -> None:
        tls = routed
        gss_refused = ssl_refused = False
        while True:
            async with asyncio.timeout(_STARTUP_TIMEOUT):
                packet = pg.decode_startup(await _read_startup(reader))
            if isinstance(packet, pg.SSLRequest) and not tls:
                writer.write(b"S")
                await writer.drain()
                await handshake(self.router, writer.start_tls(self.tls), "postgres",
                                client_addr, session_id)
                tls = True
            elif isinstance(packet, pg.SSLRequest) and routed and not ssl_refused:
                writer.write(b"N")  # TLS already (the web port's): the client goes on in it
                await writer.drain()
                ssl_refused = True
            elif isinstance(packet, pg.GSSEncRequest) and (routed or not tls) \
                    and not gss_refused:
                writer.write(b"N")  # GSSAPI encryption is not offered: the client may go on
                await writer.drain()  # with an SSLRequest, as with a server without GSSAPI
                gss_refused = True
            elif isinstance(packet, pg.CancelRequest):
                await self._cancel(packet, writer if tls else None, client_addr)
                return
            elif isinstance(packet, pg.StartupMessage) and tls:
                await self._session(packet, reader, writer, client_addr, session_id)
                return
            else:
                reason = _PLAINTEXT if isinstance(packet, pg.StartupMessage) else \
                    f"unexpected {type(packet).__name__} during the startup"
                await self.router.refused(reason, identity=None, protocol="postgres",
                                          client_addr=client_addr, session_id=session_id)
                await _send_error(writer, reason, "28000")
                return

    async def _session(self, startup: pg.StartupMessage, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, client_addr: str, session_id: str) -> None:
        try:
            opened = await self.router.connect(
                peer_der(writer), "postgres", db_user=startup.params.get("user", ""),
                db_name=startup.params.get("database", ""),
                default_name=lambda target, user: target.default_database or user,
                params={k: v for k, v in startup.params.items()
                        if k not in ("user", "database")},
                client_addr=client_addr, session_id=session_id)
        except LimenError as err:
            await _send_error(writer, str(err), "28000" if isinstance(err, AccessDenied)
                              else "08006")
            return
        if isinstance(opened, LocalSession):
            await self._serve_local(opened, reader, writer, session_id)
            return
        request = opened.request
        key: tuple[int, int] | None = None
        try:
            key = await self._login_answer(opened.reader, writer, CancelTarget(
                request.service, opened.identity.username, request.user_cert,
                request.db_user, session_id, 0, 0, opened.leaf))
            if key is not None:  # logged in: bytes both ways, no parsing (Protocols)
                relay = Relay(name=f"postgres session {session_id}", coalesce=False)
                hand_over(reader, writer, relay, 0)
                hand_over(opened.reader, opened.writer, relay, 1)
                await relay.wait_closed()
        finally:
            if key is not None:
                self.cancel_keys.release(key)
            await close_writer(opened.writer)

    async def _serve_local(self, local: LocalSession, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter, session_id: str) -> None:
        """The db agent of this process serves the client's own connection; the cancel keys
        it tells the client are issued here, as for a session through a tunnel."""
        request = local.request
        keys: list[tuple[int, int]] = []

        def backend_key(pid: int, secret: int) -> tuple[int, int]:
            keys.append(self.cancel_keys.issue(CancelTarget(
                request.service, local.identity.username, request.user_cert, request.db_user,
                session_id, pid, secret, "")))
            return keys[-1]
        try:
            await local.serve(reader, writer, backend_key=backend_key)
        finally:
            for key in keys:
                self.cancel_keys.release(key)

    async def _login_answer(self, agent_reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, cancel: CancelTarget
                            ) -> tuple[int, int] | None:
        """Pass the login answer on, swapping the cancel key; the key we issued, or None when
        the login did not complete."""
        splitter = pg.MessageSplitter(keep=_ALL_TYPES, max_message=1 << 20)
        key: tuple[int, int] | None = None
        while True:
            data = await agent_reader.read(65536)
            if not data:
                if key is not None:
                    self.cancel_keys.release(key)
                return None
            for frame in splitter.feed(data):
                assert frame.payload is not None
                if frame.type == b"K":
                    pid, secret = pg.decode_backend_key_data(frame.payload)
                    key = self.cancel_keys.issue(CancelTarget(
                        cancel.service, cancel.username, cancel.user_cert, cancel.db_user,
                        cancel.session_id, pid, secret, cancel.leaf))
                    writer.write(pg.encode_backend_key_data(*key))
                    continue
                writer.write(pg.encode_message(frame.type, frame.payload))
                if frame.type == b"Z":
                    await writer.drain()
                    return key or (0, 0)
                if frame.type == b"E":
                    await writer.drain()
                    if key is not None:
                        self.cancel_keys.release(key)
                    return None
            await writer.drain()

    async def _cancel(self, packet: pg.CancelRequest, tls_writer: asyncio.StreamWriter | None,
                      client_addr: str) -> None:
        target = self.cancel_keys.find(packet.pid, packet.secret)
        reason = "" if target is not None else "unknown cancel key"
        if target is not None and tls_writer is not None:
            der = peer_der(tls_writer)
            try:
                caller = self.router.verify_user(der)
            except AccessDenied as err:
                reason = f"certificate refused: {err}"
            else:
                if caller.username != target.username:
                    reason = "the cancel key belongs to another user's session"
        if reason:
            await self.router.emitter.emit(make_event(
                "db.session.cancel", success=False, cluster=self.router.credentials.cluster,
                remote_addr=client_addr, reason=reason))
            return
        assert target is not None
        request = SessionRequest(
            op="cancel", protocol="postgres", service=target.service,
            user_cert=target.user_cert, db_user=target.db_user, session_id=target.session_id,
            client_addr=client_addr, cancel_pid=target.upstream_pid,
            cancel_secret=target.upstream_secret)
        try:
            if target.leaf:
                _, agent_writer = await self.router.open_in_leaf(target.leaf, request)
            else:
                db = await self.router.find(target.service)
                _, agent_writer = await self.router.open(db, request, target.username)
            await close_writer(agent_writer)
        except LimenError as err:
            log.warning("postgres front: cannot forward a cancel request: %s", err)
            leaf: dict[str, Any] = {"target_cluster": target.leaf} if target.leaf else {}
            await self.router.emitter.emit(make_event(
                "db.session.cancel", success=False, cluster=self.router.credentials.cluster,
                user=target.username, session_id=target.session_id,
                db_service=target.service, remote_addr=client_addr,
                reason=f"cannot forward the cancel request: {err}", **leaf))
            return
        if target.leaf:  # the leaf's db agent audits the cancel it sends; the root, its leg
            await self.router.emitter.emit(make_event(
                "db.session.cancel", success=True, cluster=self.router.credentials.cluster,
                user=target.username, session_id=target.session_id,
                db_service=target.service, remote_addr=client_addr,
                target_cluster=target.leaf, via="cluster link"))


async def _read_startup(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(4)
    return header + await reader.readexactly(pg.startup_length(header) - 4)




async def _send_error(writer: asyncio.StreamWriter, message: str, code: str) -> None:
    try:
        writer.write(pg.error_response(message, code))
        await writer.drain()
    except (OSError, ssl.SSLError, RuntimeError):
        pass
