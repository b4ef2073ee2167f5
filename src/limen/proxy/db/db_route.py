"""From an authenticated database client to a db agent's data connection.

:meth:`DBRouter.authenticate` turns the client certificate the TLS handshake presented into
an identity (this cluster's TLS CA, expiry, a user's, ``usage: db`` with a ``route_to_db``);
:meth:`DBRouter.open` decides (the online database's labels, deny first: ``db_labels``,
``db_users``, ``db_names``), dials a serving db agent through its reverse tunnel in
``MODE_TLS`` (the proxy is the TLS client; the agent must show its db host certificate with
the host id that was dialled) and sends the session request. Every refusal is audited here as
a failed ``db.session.start`` with the reason; the agent audits what it serves. Called by the
fronts (:mod:`limen.proxy.db.postgres_front`, :mod:`limen.proxy.db.mysql_front`).

A db agent in this same process (``limen start --roles ...,proxy,...,db``) is attached with
:meth:`DBRouter.attach_local`. :meth:`DBRouter.connect` then answers a :class:`LocalSession`:
the front hands the agent its client's own connection (no tunnel, no TLS leg, no second
relay: the agent's relay joins the client and the database); :meth:`DBRouter.open` (a cancel,
a session a trusted root forwards) reaches it over an in-memory connection
(:mod:`limen.net.memory_pipe`).

A certificate whose ``route_to_cluster`` names a trusted leaf cluster is not decided here: the
session request goes to that leaf's proxy through its cluster link
(:class:`~limen.proxy.leaf_forward.LeafForwarder`: the leaf exists and the roles'
``cluster_labels`` admit it, else refused like an unknown cluster), which verifies the
certificate against this cluster's CA, maps the roles and decides with its own RBAC
(:mod:`limen.proxy.trust_leaf_resources`). The forwarding is audited here as a
``db.session.start`` naming ``target_cluster``. That leg authenticates
two processes to each other (the agent's host certificate with the dialled host id to the
proxy, the proxy's certificate to the agent), which here are one process, and an in-memory
connection is reachable from nowhere else; everything about the user is checked as for a
tunnel dial (the agent verifies the user's certificate again and decides again).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.x509_certs import verify_client_cert
from limen.dbproto.postgres import BackendKey
from limen.dbproto.session_request import SessionRequest, encode_request
from limen.errors import AccessDenied, LimenError, NotFound
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.net.streams import memory_streams
from limen.proxy.agent_dial import AgentDialer, peer_der
from limen.proxy.leaf_forward import LeafForwarder, leaf_of
from limen.proxy.routing import ClusterView
from limen.rbac import db_own_name
from limen.tunnel.protocol import KIND_DB
from limen.tunnel.server import TunnelServer

__all__ = [
    "DBRouter", "DBTarget", "LocalDBAgent", "LocalSession", "Opened",
    "check_name", "default_db_name",
    "der_to_pem", "handshake", "peer_der",
]

log = logging.getLogger(__name__)

_HANDSHAKE_TIMEOUT = 30.0
T = TypeVar("T")

_MAX_NAME = 63


class LocalDBAgent(Protocol):
    """A db agent in the proxy's own process (``limen.agents.db.db_service.DBService``)."""

    async def serve_local(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          request: SessionRequest, *,
                          backend_key: BackendKey | None = None) -> None: ...


class DBTarget:
    """An online database as the proxy sees it."""

    def __init__(self, name: str, resource: Mapping[str, Any], host_ids: list[str]) -> None:
        self.name = name
        self.resource = resource
        self.host_ids = host_ids

    @property
    def labels(self) -> dict[str, str]:
        raw = (self.resource.get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in raw.items()}

    @property
    def protocol(self) -> str:
        return str((self.resource.get("spec") or {}).get("protocol", ""))

    @property
    def spec(self) -> Mapping[str, Any]:
        spec = self.resource.get("spec")
        return spec if isinstance(spec, Mapping) else {}

    @property
    def default_database(self) -> str:
        return str((self.resource.get("spec") or {}).get("database", "") or "")


def check_name(what: str, value: str) -> str:
    """Database users and names travel only as structured fields, but a name with control
    characters or of absurd length is refused outright (audited by the caller)."""
    if not value or len(value) > _MAX_NAME or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise AccessDenied(f"invalid {what} {value[:_MAX_NAME]!r}")
    return value


def default_db_name(protocol: str, target: DBTarget, db_user: str) -> str:
    """The database name of a session that names none: the Resource's ``database``, else
    (PostgreSQL's own rule) the user's name; MySQL sessions may have none."""
    return target.default_database or (db_user if protocol == "postgres" else "")


def der_to_pem(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode()


@dataclass(frozen=True)
class Opened:
    """A session the proxy decided and opened with a db agent."""

    identity: Identity
    request: SessionRequest
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    leaf: str = ""
    """The trusted leaf cluster the session went to ("": a db agent of this cluster)."""


@dataclass(frozen=True)
class LocalSession:
    """A session the proxy decided for the db agent of this same process, which serves it on
    the client's own connection (:meth:`serve`)."""

    identity: Identity
    request: SessionRequest
    agent: LocalDBAgent

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    backend_key: BackendKey | None = None) -> None:
        """Hand the logged-in client's connection to the agent until the session ends (the
        agent logs in upstream, answers the client and relays)."""
        await self.agent.serve_local(reader, writer, self.request, backend_key=backend_key)


class DBRouter:
    def __init__(self, credentials: HostCredentials, tunnel: TunnelServer, view: ClusterView,
                 emitter: Emitter, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
                 ) -> None:
        self.credentials = credentials
        self.tunnel = tunnel
        self.view = view
        self.emitter = emitter
        self._now = now
        self._trust = {credentials.cluster: credentials.tls_cas()}
        self._agents = AgentDialer(credentials, tunnel, SystemRole.DB, KIND_DB, "db agent",
                                   now)
        self.leaves = LeafForwarder(credentials, tunnel, view, KIND_DB, now)
        self._local: dict[str, LocalDBAgent] = {}
        self._local_sessions: set[asyncio.Task[None]] = set()

    def attach_local(self, host_id: str, agent: LocalDBAgent) -> None:
        """Serve the sessions for db agent ``host_id`` (in this process) without the tunnel."""
        self._local[host_id] = agent

    def verify_user(self, der: bytes | None) -> Identity:
        """The identity of any valid certificate of this cluster (AccessDenied otherwise)."""
        return verify_client_cert(der or b"", self._trust, self._now())

    def authenticate(self, der: bytes | None) -> Identity:
        """The identity of a database certificate (:meth:`identify`, then
        :meth:`check_database_cert`)."""
        identity = self.identify(der)
        self.check_database_cert(identity)
        return identity

    def identify(self, der: bytes | None) -> Identity:
        """Who the client's certificate names, whatever it is for (AccessDenied without a
        valid certificate of this cluster); the fronts audit a refusal under that name."""
        if not der:
            raise AccessDenied("no client certificate: run lmsh db login NAME (Limen "
                               "authenticates database clients by their certificate)")
        return verify_client_cert(der, self._trust, self._now())

    @staticmethod
    def check_database_cert(identity: Identity) -> None:
        """AccessDenied unless ``identity`` is a user's database certificate."""
        if identity.is_system:
            raise AccessDenied("a Limen process certificate cannot open a database session")
        if "db" not in identity.usage or identity.route_to_db is None:
            raise AccessDenied("this certificate is not for a database: run lmsh db login NAME")

    async def refused(self, reason: str, *, identity: Identity | None, protocol: str,
                      client_addr: str, session_id: str, service: str = "", db_user: str = "",
                      db_name: str = "", target_cluster: str = "") -> None:
        extra: dict[str, Any] = {"target_cluster": target_cluster} if target_cluster else {}
        await self.emitter.emit(make_event(
            "db.session.start", success=False, cluster=self.credentials.cluster,
            user=identity.username if identity else None, session_id=session_id,
            db_service=service or (identity.route_to_db.service
                                   if identity and identity.route_to_db else ""),
            db_protocol=protocol, db_user=db_user, db_name=db_name, remote_addr=client_addr,
            reason=reason, **extra))

    async def find(self, service: str) -> DBTarget:
        records = [r for r in await self.view.databases()
                   if ((r.get("resource") or {}).get("metadata") or {}).get("name") == service]
        if not records:
            raise NotFound(f"database {service!r} is not online (no db agent serves it)")
        records.sort(key=lambda r: str(r.get("updated", "")), reverse=True)
        return DBTarget(service, records[0]["resource"],
                        [str(r.get("host_id", "")) for r in records])

    async def decide(self, identity: Identity, target: DBTarget, db_user: str,
                     db_name: str) -> None:
        check_name("database user", db_user)
        if db_name:
            check_name("database name", db_name)
        own = db_own_name(target.spec, identity.username)
        decision = (await self.view.role_set(identity)).check_db(
            target.labels, db_user, db_name or None, own_name=own)
        if not decision.allowed:
            raise AccessDenied(f"access to database {target.name} as {db_user} denied: "
                               f"{decision.reason}")

    async def connect(self, der: bytes | None, protocol: str, *, db_user: str, db_name: str,
                      default_name: Callable[[DBTarget, str], str],
                      params: Mapping[str, str], client_addr: str,
                      session_id: str) -> Opened | LocalSession:
        """Everything a front does between the client's startup and the relay: the
        certificate (:meth:`identify`, :meth:`check_database_cert`), the online database of
        its route speaking ``protocol``, the user and name (the client's, else the route's,
        else ``default_name(target, user)``), the decision, the data connection (or, for the
        db agent of this process, the :class:`LocalSession` that serves the client's own
        connection). A refusal is audited here and raised as the LimenError the front turns
        into its protocol's error."""
        identity: Identity | None = None
        service = leaf = ""
        try:
            identity = self.identify(der)
            self.check_database_cert(identity)  # refused under its name
            route = identity.route_to_db
            assert route is not None
            assert der is not None
            service = route.service
            leaf = leaf_of(identity, self.credentials.cluster) or ""
            if leaf:
                db_user = db_user or route.user
                db_name = db_name or route.name
                request = SessionRequest(
                    op="connect", protocol=protocol, service=service,
                    user_cert=der_to_pem(der), db_user=db_user, db_name=db_name,
                    session_id=session_id, client_addr=client_addr, params=dict(params))
                return await self._forward(identity, der, leaf, request)
            target = await self.find(service)
            if target.protocol != protocol:
                raise AccessDenied(f"{service} is a {target.protocol} database: use its front")
            db_user = db_user or route.user
            db_name = db_name or route.name or default_name(target, db_user)
            await self.decide(identity, target, db_user, db_name)
            request = SessionRequest(
                op="connect", protocol=protocol, service=service, user_cert=der_to_pem(der),
                db_user=db_user, db_name=db_name, session_id=session_id,
                client_addr=client_addr, params=dict(params))
            here = self._local_agent(target)
            if here is not None:
                return LocalSession(identity, request, here)
            reader, writer = await self.open(target, request, identity.username)
        except LimenError as err:
            await self.refused(str(err), identity=identity, protocol=protocol,
                               client_addr=client_addr, session_id=session_id,
                               service=service, db_user=db_user, db_name=db_name,
                               target_cluster=leaf)
            raise
        return Opened(identity, request, reader, writer)

    async def _forward(self, identity: Identity, der: bytes, leaf: str,
                       request: SessionRequest) -> Opened:
        """The session through leaf ``leaf``'s proxy (see the module doc), audited."""
        reader, writer = await self.leaves.open(
            identity, der, leaf, target=request.service, first=encode_request(request),
            client_addr=request.client_addr, session_id=request.session_id)
        await self.emitter.emit(make_event(
            "db.session.start", cluster=self.credentials.cluster, user=identity.username,
            session_id=request.session_id, db_service=request.service,
            db_protocol=request.protocol, db_user=request.db_user, db_name=request.db_name,
            remote_addr=request.client_addr, target_cluster=leaf, via="cluster link"))
        return Opened(identity, request, reader, writer, leaf)

    async def open_in_leaf(self, leaf: str, request: SessionRequest
                           ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``leaf``'s proxy carrying ``request`` (a PostgreSQL cancel of a
        session forwarded there), for the certificate the request carries, checked again
        here (expiry, this cluster's CA) and by the leaf."""
        der = x509.load_pem_x509_certificate(request.user_cert.encode()).public_bytes(
            Encoding.DER)
        identity = self.identify(der)
        return await self.leaves.open(
            identity, der, leaf, target=request.service, first=encode_request(request),
            client_addr=request.client_addr, session_id=request.session_id)

    async def open(self, target: DBTarget, request: SessionRequest, username: str
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A data connection to a db agent serving ``target``, request sent."""
        here = self._local_agent(target)
        if here is not None:
            return await self._open_local(here, request)
        return await self._agents.open(
            target.host_ids, target.name, encode_request(request),
            client_addr=request.client_addr, user=username, session_id=request.session_id)

    def _local_agent(self, target: DBTarget) -> LocalDBAgent | None:
        return next((self._local[h] for h in target.host_ids if h in self._local), None)

    async def _open_local(self, agent: LocalDBAgent, request: SessionRequest
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ours, theirs = memory_streams(f"db session {request.session_id}")
        task = asyncio.create_task(agent.serve_local(*theirs, request),
                                   name=f"db session {request.session_id}")
        self._local_sessions.add(task)
        task.add_done_callback(self._local_sessions.discard)
        return ours


async def handshake(router: DBRouter, tls: Awaitable[T], protocol: str, client_addr: str,
                    session_id: str) -> T:
    """Await the client's TLS handshake on a database front (``tls``). A certificate the
    TLS layer refuses (another CA, expired, not yet valid) ends the connection there; the
    reason is audited as a refused ``db.session.start`` before the error propagates."""
    try:
        async with asyncio.timeout(_HANDSHAKE_TIMEOUT):
            return await tls
    except ssl.SSLError as err:
        reason = getattr(err, "verify_message", None) or err.reason or str(err)
        await router.refused(f"TLS handshake failed: {reason}", identity=None,
                             protocol=protocol, client_addr=client_addr, session_id=session_id)
        raise
