"""Database access at auth: the online databases, the user's database certificate, and the
db agent's upstream certificate.

* :func:`online_databases` — the databases db agents heartbeat (``limen.auth.presence``,
  one record per serving agent), grouped by name.
* :func:`issue_route_cert` — ``lmsh db login NAME``: the caller's own X.509 identity scoped to
  one database (``route_to_db``: the Resource, the database user, the default database name)
  and usable for databases only (``usage: [db]``), for the same public key and no longer than
  the certificate it was asked with. Refused (and audited) unless the caller's roles allow
  that user (and name) on the database's labels, so a mistake shows at login, not at connect;
  the proxy and the agent decide again on every connection. With ``cluster`` naming a trusted
  leaf, the certificate is routed there (``route_to_cluster``) once the leaf is admitted for
  the user (:mod:`limen.auth.leaf_access`); the leaf decides the rest.
* :func:`issue_upstream_cert` — a db agent's client certificate for one database user,
  signed by the DB CA with subject ``CN=<user>``: what the database checks instead of a
  password. Short-lived; the agent caches it until the DB CA's keys change (a rotation of
  the db CA: ``limen.agents.db.upstream_tls``). The CA bundle returned with it (and by
  :func:`issue_server_cert`) holds every trusted DB CA certificate: both during a rotation.

Called by :mod:`limen.auth.http.db`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.serialization import Encoding

from limen.auth import presence
from limen.auth.leaf_access import admit_leaf, routed_fields, routes_to_leaf
from limen.auth.online_resources import OnlineResource, online_resources
from limen.ca.authority import CertAuthorityType
from limen.ca.identity import Identity, RouteToDatabase
from limen.ca.keys import PublicKey
from limen.ca.x509_certs import sign_client_cert, sign_db_client_cert, sign_server_cert
from limen.errors import AccessDenied, BadParameter, NotFound
from limen.net.address import is_ip_address
from limen.rbac import db_own_name

if TYPE_CHECKING:
    from limen.auth.core import AuthServer

__all__ = [
    "MAX_SERVER_CERT_TTL",
    "UPSTREAM_CERT_TTL",
    "OnlineDatabase",
    "issue_route_cert",
    "issue_server_cert",
    "issue_upstream_cert",
    "online_databases",
]

UPSTREAM_CERT_TTL = timedelta(hours=1)
"""Lifetime of a db agent's upstream client certificate."""
MAX_SERVER_CERT_TTL = timedelta(days=3650)
"""The longest life of a database server's certificate (``lmctl auth sign --format db``)."""
_MAX_NAME = 63


@dataclass(frozen=True)
class OnlineDatabase(OnlineResource):
    """A database some db agent heartbeats now."""

    @property
    def protocol(self) -> str:
        return str(self.spec.get("protocol", ""))


async def online_databases(auth: AuthServer) -> dict[str, OnlineDatabase]:
    """Every database some db agent heartbeats now, by name."""
    return await online_resources(auth, presence.DB_PRESENCE_PREFIX, OnlineDatabase)


async def issue_route_cert(auth: AuthServer, identity: Identity, public_key: PublicKey,
                           service: str, db_user: str, db_name: str, cluster: str = ""
                           ) -> tuple[bytes, datetime]:
    """The database certificate (PEM) for ``lmsh db login`` and its expiry; see the module."""
    _check_name("database", service)
    _check_name("database user", db_user)
    if db_name:
        _check_name("database name", db_name)
    if identity.is_system:
        raise AccessDenied("database certificates are for users")
    if identity.cluster != auth.cluster_name:
        raise AccessDenied("database certificates are issued by the user's own cluster")
    leaf = cluster if routes_to_leaf(auth, cluster) else None
    if leaf is not None:
        await admit_leaf(auth, identity, leaf, "db.login", db_service=service,
                         db_user=db_user, db_name=db_name)
    else:
        await _check_local(auth, identity, service, db_user, db_name)
    now = auth.now()
    assert identity.not_after is not None
    ttl = identity.not_after - now
    if ttl < timedelta(minutes=1):
        raise BadParameter("the login certificate expires within a minute: run lmsh login")
    scoped = replace(identity, route_to_db=RouteToDatabase(service, db_user, db_name),
                     route_to_cluster=leaf, usage=("db",), not_before=None, not_after=None)
    cert = sign_client_cert(auth.authorities.get(CertAuthorityType.TLS), public_key, scoped,
                            ttl, now=now)
    expires = now + ttl
    await auth.emit("cert.create", user=identity.username, cert_type="db",
                    db_service=service, db_user=db_user, db_name=db_name,
                    expires=expires.isoformat(), **routed_fields(leaf))
    return cert.public_bytes(Encoding.PEM), expires


async def _check_local(auth: AuthServer, identity: Identity, service: str, db_user: str,
                       db_name: str) -> None:
    """This cluster's database ``service`` is online and the roles allow the user and name
    there (audited refusal otherwise)."""
    db = (await online_databases(auth)).get(service)
    if db is None:
        raise NotFound(f"database {service!r} is not online (no db agent serves it)")
    decision = (await auth.role_set(identity)).check_db(
        db.labels, db_user, db_name or None, own_name=db_own_name(db.spec, identity.username))
    if not decision.allowed:
        await auth.emit("access.denied", success=False, user=identity.username,
                        action="db.login", db_service=service, db_user=db_user,
                        db_name=db_name, role=decision.role, rule=decision.rule,
                        reason=decision.reason)
        raise AccessDenied(f"{identity.username} may not connect to {service} as {db_user}: "
                           f"{decision.reason}")


async def issue_upstream_cert(auth: AuthServer, agent: Identity, public_key: PublicKey,
                              db_user: str) -> tuple[bytes, bytes]:
    """A db agent's client certificate for ``db_user`` (PEM) and the DB CA bundle (PEM)."""
    _check_name("database user", db_user)
    ca = auth.authorities.get(CertAuthorityType.DB)
    cert = sign_db_client_cert(ca, public_key, db_user, UPSTREAM_CERT_TTL, now=auth.now())
    await auth.emit("cert.create", user=agent.username, cert_type="db_client",
                    db_user=db_user, host_id=agent.host_id or "")
    return cert.public_bytes(Encoding.PEM), ca.pem_bundle().encode()


async def issue_server_cert(auth: AuthServer, actor: str, hosts: Sequence[str],
                            public_key: PublicKey | str, ttl: timedelta) -> tuple[bytes, bytes]:
    """A database server's certificate (PEM) from the DB CA for ``hosts`` (names and
    addresses), and the DB CA bundle (PEM) the database trusts for client certificates;
    ``lmctl auth sign --format db``, online (the auth API) or offline (the data directory)."""
    if not hosts:
        raise BadParameter("give at least one host name or address (--host)")
    if ttl > MAX_SERVER_CERT_TTL:
        raise BadParameter("a database server certificate lives at most 10 years")
    ca = auth.authorities.get(CertAuthorityType.DB)
    cert = sign_server_cert(ca, public_key, [h for h in hosts if not is_ip_address(h)],
                            [h for h in hosts if is_ip_address(h)], ttl, now=auth.now())
    await auth.emit("cert.create", user=actor, cert_type="db_server", hosts=list(hosts),
                    expires=cert.not_valid_after_utc.isoformat())
    return cert.public_bytes(Encoding.PEM), ca.pem_bundle().encode()


def _check_name(what: str, value: str) -> None:
    if not value or len(value) > _MAX_NAME or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise BadParameter(f"invalid {what} {value[:_MAX_NAME]!r}: 1-{_MAX_NAME} printable "
                           "characters")

