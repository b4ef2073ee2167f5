"""Runs a db agent: reverse tunnels to every proxy (``limen.tunnel.agent_pool``) that serve
database dials, and one heartbeat per served database (``lmsh db ls`` lists it while the
agent lives).

A dial is a tunnel data connection in ``MODE_TLS``: the agent is the TLS server with its host
certificate and requires the proxy's (cluster TLS CA, role ``proxy``) before reading a byte.
Then the proxy's :class:`~limen.dbproto.session_request.SessionRequest`: ``connect`` is
authorized again here (:func:`limen.agents.db.session.authorize`) and served by the
protocol's engine (after the database user is provisioned when the Resource has an
``admin_user`` and the roles ask for it: :mod:`limen.agents.db.provisioning`); ``cancel``
forwards a PostgreSQL cancel key to the database. A refusal reaches the client as its
protocol's error (PostgreSQL ErrorResponse, MySQL ERR packet).

Every event of the agent goes through one :class:`~limen.events.buffer.AuditBuffer` over its
emitter: queries are queued and written in batches, the rest is awaited; ``stop`` flushes it.

In the single process (``limen.cli.compose``) the proxy beside the agent reaches it through
:meth:`DBService.serve_local` instead: the front hands over its logged-in client's own
connection (no tunnel, no TLS leg and no second relay between the two parts of one process;
the user is checked the same way). Called by ``limen.cli.compose``
(single process) and ``limen.cli.compose_remote`` (``limen start --roles db``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from limen.agents.db import provisioning
from limen.agents.db.catalog import DatabaseCatalog, ResourceLister, static_databases
from limen.agents.db.mysql_engine import serve_mysql
from limen.agents.db.postgres_engine import cancel_postgres, serve_postgres
from limen.agents.db.provisioning import AutoUsers
from limen.agents.db.session import DBSession, RoleSets, authorize
from limen.agents.db.upstream_tls import CertIssuer, SignerOf, UpstreamCerts, upstream_target
from limen.agents.proxy_dial import accept_proxy, check_proxy
from limen.agents.session_locks import SessionLockGuard
from limen.ca.host_credentials import HostCredentials
from limen.config import DBSettings
from limen.dbproto import mysql as my
from limen.dbproto import postgres as pg
from limen.dbproto.session_request import SessionRequest, decode_request, request_length
from limen.errors import AccessDenied, LimenError
from limen.events.buffer import AuditBuffer
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.net.streams import close_writer
from limen.tunnel.agent_pool import TunnelAgentPool
from limen.tunnel.agent_settings import TunnelAgentSettings
from limen.tunnel.protocol import KIND_DB, MODE_TLS, DialRequest

__all__ = ["DBService"]

log = logging.getLogger(__name__)

_REQUEST_TIMEOUT = 10.0


class DBService:
    name = "db"

    user_trust: Callable[[], Mapping[str, Sequence[x509.Certificate]]] | None = None
    """The CAs whose users' certificates are accepted, by cluster (None: this cluster's only;
    a leaf adds its trusted roots' TLS CAs, whose users' roles its access policy maps)."""

    def __init__(self, credentials: HostCredentials, catalog: DatabaseCatalog, roles: RoleSets,
                 emitter: Emitter, certs: UpstreamCerts, tunnel_address: Callable[[], str], *,
                 on_tunnel: Callable[[TunnelAgentPool], Awaitable[None]] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 guard: SessionLockGuard | None = None) -> None:
        self.credentials = credentials
        self.guard = guard
        """Ends open sessions a lock targets (``limen.agents.session_locks``); None: none."""
        self.catalog = catalog
        self.roles = roles
        self.emitter = emitter
        self.audit = AuditBuffer(emitter)
        self.certs = certs
        self.auto_users = AutoUsers(certs)
        self._tunnel_address = tunnel_address
        self._on_tunnel = on_tunnel
        self._now = now
        self._trust = {credentials.cluster: credentials.tls_cas()}
        self._server_ssl = credentials.server_ssl(client_cas=credentials.tls_cas(),
                                                  require_client_cert=True)
        self.tunnel: TunnelAgentPool | None = None

    @classmethod
    def configured(cls, credentials: HostCredentials, settings: DBSettings,
                   lister: ResourceLister, issuer: CertIssuer, roles: RoleSets,
                   emitter: Emitter, tunnel_address: Callable[[], str], *,
                   on_tunnel: Callable[[TunnelAgentPool], Awaitable[None]] | None = None,
                   guard: SessionLockGuard | None = None,
                   signer: SignerOf = lambda: "") -> DBService:
        """The agent as ``limen start`` configures it (``db`` settings); ``signer``: the DB
        CA's signer as last known (upstream certificates of another are issued again)."""
        catalog = DatabaseCatalog(static_databases(settings.databases), settings.resources,
                                  lister)
        return cls(credentials, catalog, roles, emitter, UpstreamCerts(issuer, signer=signer),
                   tunnel_address, on_tunnel=on_tunnel, guard=guard)

    def _user_trust(self) -> Mapping[str, Sequence[x509.Certificate]]:
        return self.user_trust() if self.user_trust is not None else self._trust

    async def start(self) -> dict[str, str]:
        # the catalog is read at each heartbeat (the first one goes out as soon as the tunnel
        # is up; an agent apart from auth reaches auth only through that tunnel)
        self.tunnel = TunnelAgentPool(
            self._tunnel_address(), self.credentials, self._serve, self._heartbeat,
            settings=TunnelAgentSettings(serves=frozenset({(KIND_DB, MODE_TLS)})))
        if self._on_tunnel is not None:
            await self._on_tunnel(self.tunnel)
        await self.tunnel.start()
        if self.guard is not None:
            self.guard.start()
        return {}

    async def stop(self) -> None:
        if self.guard is not None:
            await self.guard.stop()
        try:
            if self.tunnel is not None:
                await self.tunnel.stop()
        finally:
            await self.audit.aclose()

    async def _heartbeat(self) -> list[dict[str, Any]]:
        await self.catalog.refresh()
        return self.catalog.heartbeats()

    async def _serve(self, sock: socket.socket, dial: DialRequest) -> None:
        streams = await accept_proxy(sock, self._server_ssl, "db agent", dial.target)
        if streams is None:
            return
        reader, writer = streams
        try:
            check_proxy(writer, self._trust, self._now(), "db agent")
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                size = request_length(await reader.readexactly(4))
                request = decode_request(await reader.readexactly(size))
            await self._handle(request, reader, writer)
        except (LimenError, OSError, ssl.SSLError, TimeoutError,
                asyncio.IncompleteReadError) as err:
            log.warning("db agent: dial for %s ended: %s", dial.target, err)
        finally:
            await close_writer(writer)

    async def serve_local(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          request: SessionRequest, *,
                          backend_key: pg.BackendKey | None = None) -> None:
        """A session from the proxy of this same process: on the client's own connection (a
        front that logged the client in hands it over, with ``backend_key`` to swap a
        PostgreSQL cancel key) or on an in-memory connection the proxy made
        (:mod:`limen.net.memory_pipe`: a cancel, a session forwarded by a trusted root). No
        tunnel and no TLS between the two parts of one process (nothing outside it can reach
        them); the user's certificate and the decision are checked here as for a tunnel
        dial."""
        try:
            await self._handle(request, reader, writer, backend_key)
        except (LimenError, OSError, ssl.SSLError, TimeoutError,
                asyncio.IncompleteReadError) as err:
            log.warning("db agent: local session for %s ended: %s", request.service, err)
        finally:
            await close_writer(writer)

    async def _handle(self, request: SessionRequest, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, backend_key: pg.BackendKey | None = None
                      ) -> None:
        try:
            db = await self.catalog.find(request.service)
        except LimenError as err:
            await self._refuse(request, writer, str(err))
            return
        if request.op == "cancel":
            await self._cancel(request, db)
            return
        try:
            session = await authorize(request, db, self._user_trust(), self.roles, self.audit,
                                      self.credentials.host_id, self._now,
                                      cluster=self.credentials.cluster)
        except AccessDenied as err:
            await self._refuse(request, writer, str(err))
            return
        async with contextlib.AsyncExitStack() as stack:
            if self.guard is not None:
                stack.enter_context(self.guard.track(session.identity, _ender(session, writer),
                                                     session.role_set.options.lock))
            try:
                auto = provisioning.plan(session)
                if auto is not None:
                    await stack.enter_async_context(self.auto_users.provisioned(session, auto))
            except AccessDenied as err:
                await session.emit("db.session.start", success=False, reason=str(err))
                await self._refuse(request, writer, str(err))
                return
            if request.protocol == "postgres":
                await serve_postgres(session, reader, writer, self.certs,
                                     backend_key=backend_key)
            else:
                await serve_mysql(session, reader, writer, self.certs)

    async def _cancel(self, request: SessionRequest, db: Any) -> None:
        target = upstream_target(db)
        try:
            context = await self.certs.context(target, request.db_user)
            await cancel_postgres(target, context, request.cancel_pid, request.cancel_secret)
        except (LimenError, OSError, ssl.SSLError, TimeoutError) as err:
            log.warning("db agent: cancel request to %s failed: %s", db.name, err)
            return
        await self.audit.emit(make_event(
            "db.session.cancel", success=True, cluster=self.credentials.cluster,
            session_id=request.session_id, server_id=self.credentials.host_id,
            db_service=db.name, remote_addr=request.client_addr))

    async def _refuse(self, request: SessionRequest, writer: asyncio.StreamWriter,
                      message: str) -> None:
        if request.protocol == "postgres":
            writer.write(pg.error_response(message, "28000"))
        else:
            seq = int(request.params.get("seq", "3")) if request.params.get(
                "seq", "3").isdigit() else 3
            writer.write(my.encode_packet(seq, my.err_payload(1045, "28000",
                                                              f"Limen: {message}")))
        await writer.drain()


def _ender(session: DBSession, writer: asyncio.StreamWriter
           ) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """How a lock ends ``session``: audited, then in good order through its relay (a
    PostgreSQL client reads the reason), or by closing the client connection before that."""
    async def end(reason: str, fields: dict[str, Any]) -> None:
        await session.emit("access.denied", success=False, action="session", reason=reason,
                           **fields)
        if session.terminate is not None:
            session.terminate(reason)
        else:
            writer.transport.abort()
    return end
