"""The audit event types and their stable codes: one table, ``EVENT_CODES``.

Every audit event has a *type* (``user.login``) and a *code* (``L1000I``). The code is the
contract with SIEM rules and scripts: once released, a code never changes meaning and is never
reused. Called by :func:`limen.events.make_event` (type + outcome -> code) and by
:func:`limen.events.search` (validating ``--type`` filters).

Code scheme, modelled on Teleport's ``T1000I``: ``L`` + a four-digit number per event type +
a severity letter::

    L1000I   L = Limen, 1000 = user.login, I = info (the action succeeded)
    L1000W   the same type, W = warning (the action was refused: bad password, denied, ...)
    L3000E   E = error (the action failed for a reason other than a refusal)

Numbers are grouped by area: 1xxx users (11xx their access requests), 2xxx interactive
sessions, 3xxx SSH actions and protocol fronts, 4xxx access decisions, 5xxx joining and
certificates, 6xxx trusted clusters, 7xxx declarative resources, 8xxx GitOps. ``success`` is
the outcome of the action the event describes, the severity how much attention it deserves:
``user.locked`` (the lock was applied) is ``success=True`` with a ``W`` code;
``access.denied`` and ``auth`` exist only as failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from limen.errors import BadParameter

__all__ = [
    "CODE_PATTERN",
    "EVENT_CODES",
    "EventCode",
    "EventType",
    "Severity",
    "code_for",
    "lookup_code",
]

CODE_PATTERN = r"^L\d{4}[IWE]$"
"""Shape of every code: ``L`` + four digits + severity letter."""


class Severity(StrEnum):
    INFO = "I"
    WARNING = "W"
    ERROR = "E"


class EventType(StrEnum):
    """Every audit event type. Values are what lands in the ``event`` field of the JSON line."""

    USER_LOGIN = "user.login"
    USER_CREATE = "user.create"
    USER_UPDATE = "user.update"
    USER_DELETE = "user.delete"
    USER_SIGNUP = "user.signup"
    USER_LOCKED = "user.locked"
    USER_LOGOUT = "user.logout"
    MFA_ADD = "mfa.add"
    MFA_REMOVE = "mfa.remove"
    ACCESS_REQUEST_CREATE = "access_request.create"
    ACCESS_REQUEST_REVIEW = "access_request.review"
    ACCESS_REQUEST_USE = "access_request.use"
    ACCESS_REQUEST_EXPIRE = "access_request.expire"
    SESSION_START = "session.start"
    SESSION_END = "session.end"
    SESSION_DATA = "session.data"
    SESSION_UPLOAD = "session.upload"
    EXEC = "exec"
    SCP = "scp"
    SFTP = "sftp"
    PORT = "port"
    CLIENT_DISCONNECT = "client.disconnect"
    AUTH = "auth"
    ROUTE_FAILED = "route.failed"
    KUBE_REQUEST = "kube.request"
    KUBE_SESSION_START = "kube.session.start"
    KUBE_SESSION_END = "kube.session.end"
    DB_SESSION_START = "db.session.start"
    DB_SESSION_QUERY = "db.session.query"
    DB_SESSION_END = "db.session.end"
    DB_SESSION_CANCEL = "db.session.cancel"
    DB_USER_PROVISIONED = "db.user.provisioned"
    DB_USER_DEACTIVATED = "db.user.deactivated"
    APP_SESSION_START = "app.session.start"
    APP_SESSION_CHUNK = "app.session.chunk"
    ACCESS_DENIED = "access.denied"
    JOIN_TOKEN_CREATE = "join_token.create"
    JOIN_TOKEN_DELETE = "join_token.delete"
    JOIN = "join"
    CERT_CREATE = "cert.create"
    CA_ROTATION = "ca.rotation"
    TRUSTED_CLUSTER_CREATE = "trusted_cluster.create"
    TRUSTED_CLUSTER_DELETE = "trusted_cluster.delete"
    TRUSTED_CLUSTER_TOKEN_CREATE = "trusted_cluster.token.create"
    TRUSTED_CLUSTER_CAS = "trusted_cluster.cas"
    REMOTE_CLUSTER_ONLINE = "remote_cluster.online"
    REMOTE_CLUSTER_OFFLINE = "remote_cluster.offline"
    ROLE_CREATED = "role.created"
    ROLE_UPDATED = "role.updated"
    ROLE_DELETED = "role.deleted"
    RESOURCE_CREATED = "resource.created"
    RESOURCE_UPDATED = "resource.updated"
    RESOURCE_DELETED = "resource.deleted"
    LOCK_CREATED = "lock.created"
    LOCK_UPDATED = "lock.updated"
    LOCK_DELETED = "lock.deleted"
    OIDC_CONNECTOR_CREATED = "oidc_connector.created"
    OIDC_CONNECTOR_UPDATED = "oidc_connector.updated"
    OIDC_CONNECTOR_DELETED = "oidc_connector.deleted"
    GITHUB_CONNECTOR_CREATED = "github_connector.created"
    GITHUB_CONNECTOR_UPDATED = "github_connector.updated"
    GITHUB_CONNECTOR_DELETED = "github_connector.deleted"
    GITOPS_SYNC = "gitops.sync"
    GITOPS_REJECTED = "gitops.rejected"


@dataclass(frozen=True)
class EventCode:
    """One row of the table: ``type`` with outcome ``success`` is written with ``code``."""

    code: str
    type: EventType
    success: bool
    description: str

    @property
    def severity(self) -> Severity:
        return Severity(self.code[-1])


_T = EventType
EVENT_CODES: tuple[EventCode, ...] = (
    # 1xxx users
    EventCode("L1000I", _T.USER_LOGIN, True, "user logged in"),
    EventCode("L1000W", _T.USER_LOGIN, False, "user login failed"),
    EventCode("L1001I", _T.USER_CREATE, True, "user created"),
    EventCode("L1002I", _T.USER_UPDATE, True, "user updated"),
    EventCode("L1003I", _T.USER_DELETE, True, "user deleted"),
    EventCode("L1002W", _T.USER_UPDATE, False, "user update refused"),
    EventCode("L1003W", _T.USER_DELETE, False, "user deletion refused"),
    EventCode("L1004I", _T.USER_SIGNUP, True, "user completed sign-up"),
    EventCode("L1004W", _T.USER_SIGNUP, False, "user sign-up failed"),
    EventCode("L1005W", _T.USER_LOCKED, True, "user locked out"),
    EventCode("L1006I", _T.USER_LOGOUT, True, "user logged out (web session ended)"),
    EventCode("L1007I", _T.MFA_ADD, True, "user added a second factor (security key)"),
    EventCode("L1007W", _T.MFA_ADD, False, "adding a second factor refused"),
    EventCode("L1008I", _T.MFA_REMOVE, True, "user removed a second factor"),
    EventCode("L1008W", _T.MFA_REMOVE, False, "removing a second factor refused"),
    EventCode("L1100I", _T.ACCESS_REQUEST_CREATE, True, "access request created"),
    EventCode("L1100W", _T.ACCESS_REQUEST_CREATE, False, "access request refused"),
    EventCode("L1101I", _T.ACCESS_REQUEST_REVIEW, True, "access request reviewed"),
    EventCode("L1101W", _T.ACCESS_REQUEST_REVIEW, False, "access request review refused"),
    EventCode("L1102I", _T.ACCESS_REQUEST_USE, True,
              "certificates issued with the roles of an approved access request"),
    EventCode("L1102W", _T.ACCESS_REQUEST_USE, False,
              "login with an access request refused (not approved, expired or not the user's)"),
    EventCode("L1103I", _T.ACCESS_REQUEST_EXPIRE, True, "access request expired"),
    # 2xxx interactive sessions
    EventCode("L2000I", _T.SESSION_START, True, "session started"),
    EventCode("L2001I", _T.SESSION_END, True, "session ended"),
    EventCode("L2002I", _T.SESSION_DATA, True, "session data transferred"),
    EventCode("L2003I", _T.SESSION_UPLOAD, True, "session recording handed over to auth"),
    # 3xxx SSH actions and protocol fronts
    EventCode("L3000I", _T.EXEC, True, "command executed"),
    EventCode("L3000E", _T.EXEC, False, "command execution failed"),
    EventCode("L3001I", _T.SCP, True, "scp transfer"),
    EventCode("L3001E", _T.SCP, False, "scp transfer failed"),
    EventCode("L3002I", _T.SFTP, True, "sftp operation"),
    EventCode("L3002E", _T.SFTP, False, "sftp operation failed"),
    EventCode("L3003I", _T.PORT, True, "port forwarded"),
    EventCode("L3003E", _T.PORT, False, "port forwarding failed"),
    EventCode("L3004I", _T.CLIENT_DISCONNECT, True, "client disconnected"),
    EventCode("L3005W", _T.AUTH, False, "SSH authentication failed"),
    EventCode("L3006W", _T.ROUTE_FAILED, False,
              "SSH connection not routed: unknown, ambiguous or offline node"),
    EventCode("L3100I", _T.KUBE_REQUEST, True, "Kubernetes request"),
    EventCode("L3100W", _T.KUBE_REQUEST, False, "Kubernetes request refused"),
    EventCode("L3101I", _T.KUBE_SESSION_START, True,
              "Kubernetes exec, attach or port-forward session started"),
    EventCode("L3102I", _T.KUBE_SESSION_END, True,
              "Kubernetes exec, attach or port-forward session ended"),
    EventCode("L3200I", _T.DB_SESSION_START, True, "database session started"),
    EventCode("L3200W", _T.DB_SESSION_START, False, "database session refused"),
    EventCode("L3201I", _T.DB_SESSION_QUERY, True, "database query"),
    EventCode("L3201W", _T.DB_SESSION_QUERY, False, "database query failed"),
    EventCode("L3202I", _T.DB_SESSION_END, True, "database session ended"),
    EventCode("L3203I", _T.DB_SESSION_CANCEL, True, "database query cancel request forwarded"),
    EventCode("L3203W", _T.DB_SESSION_CANCEL, False, "database query cancel request refused"),
    EventCode("L3204I", _T.DB_USER_PROVISIONED, True,
              "database user created or enabled with its database roles"),
    EventCode("L3204W", _T.DB_USER_PROVISIONED, False, "database user provisioning refused"),
    EventCode("L3205I", _T.DB_USER_DEACTIVATED, True,
              "database user disabled and its database roles revoked"),
    EventCode("L3205E", _T.DB_USER_DEACTIVATED, False, "database user could not be disabled"),
    EventCode("L3300I", _T.APP_SESSION_START, True, "app session started"),
    EventCode("L3300W", _T.APP_SESSION_START, False, "app session refused"),
    EventCode("L3301I", _T.APP_SESSION_CHUNK, True,
              "app requests (method, path, status, bytes), in batches"),
    # 4xxx access decisions
    EventCode("L4000W", _T.ACCESS_DENIED, False, "access denied"),
    # 5xxx joining and certificates
    EventCode("L5000I", _T.JOIN_TOKEN_CREATE, True, "join token created"),
    EventCode("L5001I", _T.JOIN, True, "agent joined"),
    EventCode("L5001W", _T.JOIN, False, "agent join refused"),
    EventCode("L5002I", _T.CERT_CREATE, True, "certificate issued"),
    EventCode("L5002W", _T.CERT_CREATE, False, "certificate refused (a lock, a bad request)"),
    EventCode("L5003I", _T.JOIN_TOKEN_DELETE, True, "join token deleted"),
    EventCode("L5004I", _T.CA_ROTATION, True, "CA rotation phase changed"),
    EventCode("L5004W", _T.CA_ROTATION, False, "CA rotation phase change refused"),
    # 6xxx trusted clusters
    EventCode("L6000I", _T.TRUSTED_CLUSTER_CREATE, True, "trusted cluster created"),
    EventCode("L6001I", _T.TRUSTED_CLUSTER_DELETE, True, "trusted cluster deleted"),
    EventCode("L6002I", _T.TRUSTED_CLUSTER_TOKEN_CREATE, True, "trusted cluster token created"),
    EventCode("L6003I", _T.REMOTE_CLUSTER_ONLINE, True, "remote cluster online"),
    EventCode("L6004W", _T.REMOTE_CLUSTER_OFFLINE, True, "remote cluster offline"),
    EventCode("L6005I", _T.TRUSTED_CLUSTER_CAS, True, "a trusted cluster's CAs updated"),
    EventCode("L6005W", _T.TRUSTED_CLUSTER_CAS, False, "a trusted cluster's CA update refused"),
    # 7xxx declarative resources
    EventCode("L7000I", _T.ROLE_CREATED, True, "role created"),
    EventCode("L7001I", _T.ROLE_UPDATED, True, "role updated"),
    EventCode("L7002I", _T.ROLE_DELETED, True, "role deleted"),
    EventCode("L7100I", _T.RESOURCE_CREATED, True, "resource created"),
    EventCode("L7101I", _T.RESOURCE_UPDATED, True, "resource updated"),
    EventCode("L7102I", _T.RESOURCE_DELETED, True, "resource deleted"),
    EventCode("L7200I", _T.LOCK_CREATED, True, "lock created"),
    EventCode("L7201I", _T.LOCK_UPDATED, True, "lock updated"),
    EventCode("L7202I", _T.LOCK_DELETED, True, "lock deleted"),
    EventCode("L7300I", _T.OIDC_CONNECTOR_CREATED, True, "OIDC connector created"),
    EventCode("L7301I", _T.OIDC_CONNECTOR_UPDATED, True, "OIDC connector updated"),
    EventCode("L7302I", _T.OIDC_CONNECTOR_DELETED, True, "OIDC connector deleted"),
    EventCode("L7303I", _T.GITHUB_CONNECTOR_CREATED, True, "GitHub connector created"),
    EventCode("L7304I", _T.GITHUB_CONNECTOR_UPDATED, True, "GitHub connector updated"),
    EventCode("L7305I", _T.GITHUB_CONNECTOR_DELETED, True, "GitHub connector deleted"),
    # 8xxx GitOps
    EventCode("L8000I", _T.GITOPS_SYNC, True, "GitOps commit applied"),
    EventCode("L8000E", _T.GITOPS_SYNC, False, "GitOps sync failed"),
    EventCode("L8001W", _T.GITOPS_REJECTED, False, "GitOps commit rejected"),
)
"""THE table. Append rows; never change or reuse a released code."""


def _index() -> tuple[dict[str, EventCode], dict[tuple[EventType, bool], EventCode]]:
    by_code: dict[str, EventCode] = {}
    by_outcome: dict[tuple[EventType, bool], EventCode] = {}
    for row in EVENT_CODES:
        if row.code in by_code:
            raise ValueError(f"duplicate audit event code {row.code}")
        if (row.type, row.success) in by_outcome:
            raise ValueError(f"two codes for {row.type} success={row.success}")
        by_code[row.code] = row
        by_outcome[(row.type, row.success)] = row
    return by_code, by_outcome


_BY_CODE, _BY_OUTCOME = _index()


def code_for(event_type: str, success: bool | None = None) -> EventCode:
    """The table row for ``event_type`` with outcome ``success``.

    ``success=None`` means the type's usual outcome: success when the type has a success code,
    otherwise its only (failure) code — so ``code_for("access.denied")`` works. Raises
    :class:`~limen.errors.BadParameter` for an unknown type or an outcome the type lacks.
    """
    try:
        etype = EventType(event_type)
    except ValueError:
        raise BadParameter(f"unknown audit event type {event_type!r}") from None
    if success is None:
        row = _BY_OUTCOME.get((etype, True)) or _BY_OUTCOME.get((etype, False))
    else:
        row = _BY_OUTCOME.get((etype, success))
    if row is None:
        outcome = "success" if success else "failure"
        raise BadParameter(f"audit event type {etype.value!r} has no {outcome} code")
    return row


def lookup_code(code: str) -> EventCode:
    """The table row for ``code``; :class:`~limen.errors.BadParameter` if unknown."""
    try:
        return _BY_CODE[code]
    except KeyError:
        raise BadParameter(f"unknown audit event code {code!r}") from None
