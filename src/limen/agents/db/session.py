"""One database session at the db agent: who (the user's database certificate, verified
again here), what (the served database, the database user and name), the decision (RBAC with
the database's labels, deny first), and the session's audit events.

The proxy has authenticated the user's TLS handshake and decided already; the agent trusts
nothing it is told about the user but the certificate, which it verifies against the user CA
of its own cluster (signature, cluster, expiry, ``usage: db``, the database it is scoped to)
and decides again with the roles as they are now. On a leaf, a trusted root's user is verified
against that root's TLS CA (the certificate routed to this cluster) and decided with the roles
the trust's ``role_map`` maps it to; none mapped: refused. Called by
:mod:`limen.agents.db.db_service`; the engines call :meth:`DBSession.emit` (durable: the
session's start and end, refusals), :meth:`DBSession.record` (queries: queued in the agent's
:class:`~limen.events.buffer.AuditBuffer`, written in batches, in order, before the session's
end event) and :meth:`DBSession.check_db_name`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cryptography import x509

from limen.agents.root_users import require_routed_here
from limen.api.resources import Resource
from limen.ca.identity import Identity
from limen.ca.x509_certs import verify_client_cert
from limen.dbproto.session_request import SessionRequest
from limen.errors import AccessDenied, LimenError
from limen.events.buffer import AuditBuffer, AuditStream
from limen.events.event import AuditEvent, make_event
from limen.events.template import EventTemplate
from limen.net.streams import Counter
from limen.rbac import RoleSet, db_own_name

__all__ = ["DBSession", "RoleSets", "authorize"]


class RoleSets(Protocol):
    async def role_set(self, identity: Identity) -> RoleSet | None: ...


@dataclass
class DBSession:
    request: SessionRequest
    identity: Identity
    db: Resource
    role_set: RoleSet
    emitter: AuditStream
    server_id: str
    db_user: str
    db_name: str
    cluster: str
    """This agent's cluster: the one its events are written for (the user's is
    ``user_cluster``, a trusted root's for a root user)."""
    to_db: Counter = field(default_factory=Counter)
    from_db: Counter = field(default_factory=Counter)
    terminate: Callable[[str], None] | None = None
    """Ends the relayed session for a reason (set by the relay once the session is logged
    in; ``limen.agents.db.audited_relay``)."""
    _templates: dict[tuple[str, bool], EventTemplate] = field(default_factory=dict,
                                                               repr=False)

    @property
    def labels(self) -> Mapping[str, str]:
        return self.db.labels

    @property
    def own_name(self) -> str | None:
        """The user's name when the database creates its users (``check_db``'s own name)."""
        return db_own_name(self.db.spec, self.identity.username)

    def check_db_name(self, name: str) -> str | None:
        """None when the roles allow switching to database ``name``, else the reason."""
        decision = self.role_set.check_db(self.labels, self.db_user, name,
                                          own_name=self.own_name)
        return None if decision.allowed else decision.reason

    def event(self, event_type: str, *, success: bool = True, **fields: Any) -> AuditEvent:
        """An event of this session: the session's fields, then ``fields`` (built from a
        template per type and outcome: a query costs only its own fields)."""
        template = self._templates.get((event_type, success))
        if template is None:
            template = self._templates[event_type, success] = EventTemplate(
                event_type, success=success, cluster=self.cluster,
                user=self.identity.username, user_cluster=self.identity.cluster,
                session_id=self.request.session_id,
                server_id=self.server_id, db_service=self.db.name,
                db_protocol=str(self.db.spec.get("protocol", "")), db_user=self.db_user,
                db_name=self.db_name, remote_addr=self.request.client_addr)
        return template.make(**fields)

    async def emit(self, event_type: str, *, success: bool = True, **fields: Any) -> None:
        """Write the event; returns once it (and every query recorded before) is durable."""
        await self.emitter.emit(self.event(event_type, success=success, **fields))

    def record(self, event_type: str, **fields: Any) -> bool:
        """Queue the event without waiting for the disk; False: the buffer is full, stop
        reading the client until :meth:`~limen.events.buffer.AuditStream.when_space`.
        Raises :class:`~limen.events.buffer.AuditUnavailable` once the log failed."""
        return self.emitter.record_nowait(self.event(event_type, **fields))

    async def end(self) -> None:
        await self.emit("db.session.end", bytes_to_db=self.to_db.bytes,
                        bytes_from_db=self.from_db.bytes)


async def authorize(request: SessionRequest, db: Resource, trust: Mapping[str,
                    Sequence[x509.Certificate]], roles: RoleSets, audit: AuditBuffer,
                    server_id: str, now: Callable[[], datetime], *,
                    cluster: str) -> DBSession:
    """The session (its events go through ``audit``), or AccessDenied (audited as a refused
    ``db.session.start``).

    ``trust`` maps cluster names to the TLS CAs their users' certificates verify against: on
    a leaf, the trusted roots' too (``limen.agents.root_users``), whose users ``roles`` maps
    (None: unmapped, refused). A user of another cluster than ``cluster`` (this agent's) must
    hold a certificate routed to this cluster. Every event is written for ``cluster`` (an
    agent apart hands them to this cluster's auth, which takes no other cluster's) and names
    the user's cluster as ``user_cluster``."""
    emitter = audit
    try:
        identity = verify_client_cert(request.user_cert, trust, now())
    except AccessDenied as err:
        await emitter.emit(make_event(
            "db.session.start", success=False, cluster=cluster, session_id=request.session_id,
            server_id=server_id, db_service=db.name, db_protocol=request.protocol,
            remote_addr=request.client_addr, reason=f"certificate refused: {err}"))
        raise
    db_user = request.db_user
    db_name = request.db_name or str(db.spec.get("database") or "")
    try:
        route = identity.route_to_db
        if identity.is_system or "db" not in identity.usage or route is None:
            raise AccessDenied("the certificate is not a database certificate")
        if route.service != db.name:
            raise AccessDenied(f"the certificate is for database {route.service!r}, "
                               f"not {db.name!r}")
        require_routed_here(identity, cluster)
        if db.spec.get("protocol") != request.protocol:
            raise AccessDenied(f"{db.name} speaks {db.spec.get('protocol')}, "
                               f"not {request.protocol}")
        role_set = await roles.role_set(identity)
        if role_set is None:
            raise AccessDenied(f"users of cluster {identity.cluster!r} are not mapped to "
                               "roles here")
        decision = role_set.check_db(db.labels, db_user, db_name or None,
                                     own_name=db_own_name(db.spec, identity.username))
        if not decision.allowed:
            raise AccessDenied(decision.reason)
    except LimenError as err:
        await emitter.emit(make_event(
            "db.session.start", success=False, cluster=cluster, user=identity.username,
            user_cluster=identity.cluster, session_id=request.session_id, server_id=server_id,
            db_service=db.name, db_protocol=request.protocol, db_user=db_user, db_name=db_name,
            remote_addr=request.client_addr, reason=str(err)))
        raise AccessDenied(f"access to database {db.name} as {db_user} denied: {err}") from None
    return DBSession(request, identity, db, role_set, audit.stream(), server_id, db_user,
                     db_name, cluster)
