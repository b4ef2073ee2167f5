"""Issues a user's certificates: identity from the User and their Roles, TTL from the roles.

For one public key the user generated (the private key never travels), ``issue_user_certs``
returns an OpenSSH user certificate (principals = the logins the roles allow, Limen identity in
an extension) and an X.509 client certificate with the same identity. TTL = min(requested, the
shortest ``max_session_ttl`` of the user's roles); with an approved access request, the roles
include the request's, the identity names the request and the certificates end no later than
``not_after`` (the request's expiry). What the roles give for the user's traits is a
:class:`Grant` (:func:`grant_of`), which ``limen.auth.grants`` keeps per stored roles and
traits so a renewal does not compile the same roles again. Called by ``limen.auth.core``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from limen.api.resources import Resource
from limen.ca.authority import CertAuthority
from limen.ca.identity import Identity
from limen.ca.keys import load_public_key
from limen.ca.ssh_certs import sign_user_cert
from limen.ca.x509_certs import sign_client_cert
from limen.errors import AccessDenied, BadParameter
from limen.rbac.roleset import RoleSet

__all__ = ["Grant", "IssuedCerts", "grant_of", "issue_user_certs", "user_traits"]

MIN_TTL = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedCerts:
    identity: Identity
    ssh_cert: bytes
    tls_cert: bytes
    """PEM."""
    expires: datetime
    ttl: timedelta


@dataclass(frozen=True)
class Grant:
    """What a set of roles gives a certificate for one set of traits (see :func:`grant_of`)."""

    logins: tuple[str, ...]
    kubernetes_groups: tuple[str, ...]
    kubernetes_users: tuple[str, ...]
    db_users: tuple[str, ...]
    db_names: tuple[str, ...]
    max_session_ttl: timedelta
    port_forwarding: bool
    forward_agent: bool


def grant_of(roles: Sequence[Resource], traits: Mapping[str, Sequence[str]]) -> Grant:
    """Compile ``roles`` for ``traits`` (:class:`~limen.rbac.roleset.RoleSet`) and keep what a
    certificate carries: principals, lifetime bound and SSH permissions."""
    role_set = RoleSet.from_roles(roles, traits)
    options = role_set.options
    return Grant(
        logins=role_set.allowed_logins(), kubernetes_groups=role_set.kube_groups(),
        kubernetes_users=role_set.kube_users(), db_users=role_set.db_users(),
        db_names=role_set.db_names(), max_session_ttl=options.max_session_ttl,
        port_forwarding=options.port_forwarding, forward_agent=options.forward_agent,
    )


def user_traits(user: Resource) -> dict[str, tuple[str, ...]]:
    raw = user.spec.get("traits") or {}
    return {str(k): tuple(str(v) for v in (vals if isinstance(vals, list) else [vals]))
            for k, vals in raw.items()}


def issue_user_certs(
    *,
    user: Resource,
    roles: Sequence[Resource],
    public_key: str,
    user_ca: CertAuthority,
    tls_ca: CertAuthority,
    requested_ttl: timedelta | None,
    now: datetime,
    route_to_cluster: str | None = None,
    extra_traits: Mapping[str, tuple[str, ...]] | None = None,
    access_requests: Sequence[str] = (),
    not_after: datetime | None = None,
    grant: Grant | None = None,
) -> IssuedCerts:
    """``grant``: :func:`grant_of` of exactly ``roles`` and the traits (user's and
    ``extra_traits``), when the caller has it already; None: computed here."""
    traits = {**user_traits(user), **(extra_traits or {})}
    if grant is None:
        grant = grant_of(roles, traits)
    ttl = grant.max_session_ttl if requested_ttl is None else min(
        requested_ttl, grant.max_session_ttl)
    if ttl < MIN_TTL:
        raise BadParameter("the requested certificate lifetime is too short (minimum 1m)")
    if not_after is not None:
        ttl = min(ttl, not_after - now)
        if ttl <= timedelta(0):
            raise AccessDenied("the certificates would already have expired")
    key = load_public_key(public_key)
    identity = Identity(
        username=user.name,
        cluster=user_ca.cluster,
        roles=tuple(r.name for r in roles),
        traits=traits,
        logins=grant.logins,
        kubernetes_groups=grant.kubernetes_groups,
        kubernetes_users=grant.kubernetes_users,
        db_users=grant.db_users,
        db_names=grant.db_names,
        route_to_cluster=route_to_cluster,
        access_requests=tuple(access_requests),
    )
    ssh_cert = sign_user_cert(
        user_ca, key, identity, ttl,
        permit_pty=True,
        permit_port_forwarding=grant.port_forwarding,
        permit_agent_forwarding=grant.forward_agent,
        now=now,
    )
    tls = sign_client_cert(tls_ca, key, identity, ttl, now=now)
    tls_pem = tls.public_bytes(Encoding.PEM) if isinstance(tls, x509.Certificate) else tls
    return IssuedCerts(identity, ssh_cert, tls_pem, now.astimezone(UTC) + ttl, ttl)
