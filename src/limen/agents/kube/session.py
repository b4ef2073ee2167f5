"""One Kubernetes connection at the kube agent: who (the user's kube certificate, verified
again here), each request's decision (RBAC with the cluster's labels and the roles as they are
now, deny first) and whom the API server is told to act as, and the ``kube.request`` audit
event of every request.

A request whose path carries Limen's prefix (``/v1/limen/<cluster>/<kube cluster>/``,
:mod:`limen.net.kube_path`) must name this agent's cluster and the connection's kube cluster;
the prefix is removed before anything else reads the path (:meth:`KubeSession.routed`), so the
API server sees a plain Kubernetes path. A certificate may name no kube cluster (``lmsh kube
login --all``): then the proxy routed by the request and the roles decide here as for any.

The proxy has authenticated the user's TLS handshake and admitted the cluster already; the
agent trusts nothing it is told about the user but the certificate, which it verifies against
the user CA of its own cluster (signature, cluster, ``usage: kube``, the cluster it is scoped
to) and whose expiry it checks again on every request of a kept-alive connection. On a leaf, a
trusted root's user is verified against that root's TLS CA (``limen.agents.root_users``: the
certificate routed to this cluster) and decided with the roles the trust's ``role_map`` maps
it to; none mapped: refused. Per request:
``check_kube`` (``kubernetes_labels``; at least one group or user granted), then
``check_kube_request`` (``kubernetes_resources``). The impersonated user is the Limen user, or
the one ``kubernetes_users`` value the roles grant there (several: refused, the client cannot
choose — its own ``Impersonate-*`` headers are never honoured); the groups are the granted
``kubernetes_groups``. A served request's event is queued in the agent's
:class:`~limen.events.buffer.AuditBuffer` (the next request does not wait for the disk; the
buffer writes in order, in batches); a refusal's is awaited; when the log cannot write, the
connection ends (fail closed). Every event is written for the agent's own cluster and names
the user's cluster as ``user_cluster`` (an agent apart hands its events to its cluster's auth,
which takes no other cluster's: one naming another would block the agent's outbox). Called by
:mod:`limen.agents.kube.kube_service`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qs

from cryptography import x509

from limen.agents.kube.http1 import RequestHead
from limen.agents.root_users import require_routed_here
from limen.api.resources import Resource
from limen.ca.identity import Identity
from limen.ca.x509_certs import verify_client_cert
from limen.errors import AccessDenied, BadParameter, LimenError
from limen.events.buffer import AuditBuffer, AuditStream
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.net.kube_path import split_target
from limen.rbac import RoleSet
from limen.rbac.kube_request import KubeRequestInfo, request_info
from limen.tunnel.kube_wire import KubeConnect

__all__ = ["Impersonation", "KubeSession", "RoleSets", "open_session"]


class RoleSets(Protocol):
    async def role_set(self, identity: Identity) -> RoleSet | None: ...


@dataclass(frozen=True)
class Impersonation:
    """Whom the API server acts as for one request."""

    user: str
    groups: tuple[str, ...]
    record_session: str = "best_effort"
    """The roles' recording mode for interactive sessions: strict, best_effort or off."""


@dataclass
class KubeSession:
    connect: KubeConnect
    identity: Identity
    cluster: Resource
    roles: RoleSets
    emitter: Emitter
    server_id: str
    now: Callable[[], datetime]
    agent_cluster: str
    """This agent's Limen cluster: the one its events are written for (the user's is
    ``user_cluster``, a trusted root's for a root user)."""
    stream: AuditStream | None = None
    """When the emitter is an :class:`AuditBuffer`: the connection's stream, so a served
    request's event is queued without waiting for the disk (a refusal's is awaited)."""

    def __post_init__(self) -> None:
        if self.stream is None and isinstance(self.emitter, AuditBuffer):
            self.stream = self.emitter.stream()

    def event_fields(self) -> dict[str, Any]:
        """What every event of the connection names: the agent's cluster, the user and the
        user's cluster, the kube cluster, the session, the agent and the client."""
        return {"cluster": self.agent_cluster, "user": self.identity.username,
                "user_cluster": self.identity.cluster, "kube_cluster": self.cluster.name,
                "session_id": self.connect.session_id, "server_id": self.server_id,
                "remote_addr": self.connect.client_addr}

    def routed(self, head: RequestHead) -> RequestHead:
        """``head`` without its path prefix (:mod:`limen.net.kube_path`), which must name
        this agent's cluster and the connection's kube cluster: AccessDenied for another
        (a later request of a kept-alive connection the proxy routed by its first),
        BadParameter for a malformed one. A request without a prefix is the connection's."""
        named, target = split_target(head.target)
        if named is None:
            return head
        if (named.cluster, named.kube) != (self.agent_cluster, self.cluster.name):
            raise AccessDenied(f"the request names kube cluster {named.kube!r} of cluster "
                               f"{named.cluster!r}, but this connection is for "
                               f"{self.cluster.name!r} of {self.agent_cluster!r} (open "
                               "another connection)")
        return replace(head, target=target)

    @staticmethod
    def request_info(head: RequestHead) -> KubeRequestInfo:
        """What the request asks for (BadParameter for a path RBAC cannot read safely)."""
        return request_info(head.method, head.path, parse_qs(head.query))

    async def decide(self, info: KubeRequestInfo) -> Impersonation:
        """The impersonation for the request, or AccessDenied saying why (the caller
        audits it with :meth:`audit`)."""
        not_after = self.identity.not_after
        if not_after is not None and self.now() >= not_after:
            raise AccessDenied(f"the kube certificate expired at {not_after.isoformat()}: "
                               "run lmsh login")
        role_set = await self.roles.role_set(self.identity)
        if role_set is None:
            raise AccessDenied(f"users of cluster {self.identity.cluster!r} are not mapped to "
                               "roles here")
        labels = self.cluster.labels
        admitted = role_set.check_kube(labels)
        if not admitted.allowed:
            raise AccessDenied(admitted.reason)
        decision = role_set.check_kube_request(labels, info)
        if not decision.allowed:
            raise AccessDenied(decision.reason)
        groups, users = role_set.kube_principals(labels)
        if len(users) > 1:
            raise AccessDenied(f"the roles grant several kubernetes_users here "
                               f"({', '.join(users)}): grant one")
        return Impersonation(users[0] if users else self.identity.username, groups,
                             role_set.options.record_session)

    async def session_event(self, event_type: str, info: KubeRequestInfo,
                            head: RequestHead, **extra: Any) -> None:
        """``kube.session.start`` / ``kube.session.end`` of an upgraded request (exec,
        attach, port-forward), written durably (a failed write raises: the session ends)."""
        event = make_event(event_type, **self.event_fields(), verb=info.verb,
                           resource=info.resource, namespace=info.namespace, name=info.name,
                           subresource=info.subresource, path=head.path, **extra)
        await (self.emitter if self.stream is None else self.stream).emit(event)

    async def audit(self, info: KubeRequestInfo | None, head: RequestHead | None, *,
                    status: int, success: bool, impersonation: Impersonation | None = None,
                    reason: str = "", **extra: Any) -> None:
        fields: dict[str, Any] = {**self.event_fields(), "response_code": status}
        if head is not None:
            fields.update(method=head.method, path=head.path)
        if info is not None:
            fields.update(verb=info.verb, resource=info.resource, namespace=info.namespace,
                          name=info.name, subresource=info.subresource,
                          api_group=info.api_group)
            if info.verb in ("exec", "attach") and head is not None:
                query = parse_qs(head.query)
                fields["command"] = query.get("command", [])
                fields["tty"] = any(v in ("true", "1") for v in query.get("tty", []))
                fields["container"] = (query.get("container") or [""])[0]
        if impersonation is not None:
            fields.update(kubernetes_user=impersonation.user,
                          kubernetes_groups=list(impersonation.groups))
        if reason:
            fields["reason"] = reason
        event = make_event("kube.request", success=success, **fields, **extra)
        if self.stream is None:
            await self.emitter.emit(event)
        elif success:
            await self.stream.record(event)  # AuditUnavailable once the log fails: fail closed
        else:
            await self.stream.emit(event)


async def open_session(connect: KubeConnect, cluster: Resource,
                       trust: Mapping[str, Sequence[x509.Certificate]], roles: RoleSets,
                       emitter: Emitter, server_id: str, now: Callable[[], datetime], *,
                       cluster_name: str) -> KubeSession:
    """The connection's session, or AccessDenied (audited as a refused ``kube.request``).

    ``trust`` maps cluster names to the TLS CAs their users' certificates verify against: on
    a leaf, the trusted roots' too (``limen.agents.root_users``), whose users ``roles`` maps
    (None: unmapped, refused at the first request). ``cluster_name`` is this agent's Limen
    cluster: a user of another must hold a certificate routed to it, and every event is
    written for it."""
    identity: Identity | None = None
    try:
        identity = verify_client_cert(connect.user_cert, trust, now())
        require_routed_here(identity, cluster_name)
        if identity.is_system or "kube" not in identity.usage:
            raise AccessDenied("the certificate is not a kube certificate: run lmsh kube login")
        if identity.route_to_kube is not None and identity.route_to_kube != cluster.name:
            raise AccessDenied(f"the certificate is for kube cluster "
                               f"{identity.route_to_kube!r}, not {cluster.name!r}")
    except (LimenError, BadParameter) as err:
        who: dict[str, Any] = ({"user": identity.username, "user_cluster": identity.cluster}
                               if identity else {})
        await emitter.emit(make_event(
            "kube.request", success=False, cluster=cluster_name, **who,
            kube_cluster=cluster.name, session_id=connect.session_id, server_id=server_id,
            remote_addr=connect.client_addr, reason=f"certificate refused: {err}"))
        raise AccessDenied(f"kube cluster {cluster.name}: {err}") from None
    return KubeSession(connect, identity, cluster, roles, emitter, server_id, now,
                       cluster_name)
