"""Kubernetes access at auth: the online kube clusters and the user's kube certificate.

* :func:`online_kube_clusters` — the kube Resources kube agents heartbeat
  (``/presence/kubes/<name>/<host_id>``, one record per serving agent), grouped by name.
* :func:`visible_kube_clusters` — those a user's roles admit (``kubernetes_labels``, deny
  first, at least one group or user to impersonate), with the groups and users granted there:
  ``lmsh kube ls``.
* :func:`issue_kube_cert` — ``lmsh kube login NAME`` / ``lmsh kube credentials``: the caller's
  own X.509 identity scoped to one kube cluster (``route_to_kube``), usable for Kubernetes only
  (``usage: [kube]``), with the ``kubernetes_groups``/``kubernetes_users`` its roles grant on
  that cluster's labels now, for the same public key and no longer than the certificate it was
  asked with. Refused (and audited) when the roles do not admit the cluster, so a mistake
  shows at login; the proxy and the kube agent decide again on every connection and request.
  With ``any_cluster`` (``lmsh kube login --all``) the certificate names no kube cluster
  (no ``route_to_kube``, no groups or users): it reaches whichever kube cluster of this
  cluster a request names in its path or server name, where the roles decide as for any;
  refused when the roles admit no online kube cluster, and never for a leaf.
  With ``cluster`` naming a trusted leaf, the certificate is routed there
  (``route_to_cluster``, no groups or users: the leaf grants them with the mapped roles) once
  the leaf is admitted for the user (:mod:`limen.auth.leaf_access`).

Called by :mod:`limen.auth.http.kube`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.serialization import Encoding

from limen.auth import presence
from limen.auth.leaf_access import admit_leaf, routed_fields, routes_to_leaf
from limen.auth.online_resources import OnlineResource, online_resources
from limen.ca.authority import CertAuthorityType
from limen.ca.identity import Identity
from limen.ca.keys import PublicKey
from limen.ca.x509_certs import sign_client_cert
from limen.errors import AccessDenied, BadParameter, NotFound
from limen.rbac.roleset import RoleSet

if TYPE_CHECKING:
    from limen.auth.core import AuthServer

__all__ = ["OnlineKubeCluster", "issue_kube_cert", "online_kube_clusters",
           "visible_kube_clusters"]

_MAX_NAME = 253


@dataclass(frozen=True)
class OnlineKubeCluster(OnlineResource):
    """A kube cluster some kube agent heartbeats now."""

    @property
    def description(self) -> str:
        return str(self.spec.get("description", ""))


async def online_kube_clusters(auth: AuthServer) -> dict[str, OnlineKubeCluster]:
    """Every kube cluster some kube agent heartbeats now, by name."""
    return await online_resources(auth, presence.KUBE_PRESENCE_PREFIX, OnlineKubeCluster)


def visible_kube_clusters(clusters: dict[str, OnlineKubeCluster], role_set: RoleSet
                          ) -> list[dict[str, Any]]:
    """The clusters ``role_set`` admits, as ``lmsh kube ls`` shows them (sorted by name)."""
    items: list[dict[str, Any]] = []
    for name, cluster in sorted(clusters.items()):
        if not role_set.check_kube(cluster.labels).allowed:
            continue
        groups, users = role_set.kube_principals(cluster.labels)
        items.append({"name": name, "labels": cluster.labels,
                      "description": cluster.description,
                      "kubernetes_groups": list(groups), "kubernetes_users": list(users)})
    return items


async def issue_kube_cert(auth: AuthServer, identity: Identity, public_key: PublicKey,
                          kube_cluster: str, cluster: str = "", *, any_cluster: bool = False
                          ) -> tuple[bytes, datetime]:
    """The kube certificate (PEM) for ``lmsh kube login`` and its expiry; see the module."""
    if any_cluster:
        return await _issue_any(auth, identity, public_key, kube_cluster, cluster)
    if not kube_cluster or len(kube_cluster) > _MAX_NAME or any(
            ord(c) < 0x21 or c == "\x7f" for c in kube_cluster):
        raise BadParameter(f"invalid kube cluster name {kube_cluster[:64]!r}")
    if identity.is_system:
        raise AccessDenied("kube certificates are for users")
    if identity.cluster != auth.cluster_name:
        raise AccessDenied("kube certificates are issued by the user's own cluster")
    leaf = cluster if routes_to_leaf(auth, cluster) else None
    if leaf is not None:
        await admit_leaf(auth, identity, leaf, "kube.login", kube_cluster=kube_cluster)
        groups: tuple[str, ...] = ()
        users: tuple[str, ...] = ()
    else:
        groups, users = await _check_local(auth, identity, kube_cluster)
    now = auth.now()
    ttl = _remaining(identity, now)
    scoped = replace(identity, route_to_kube=kube_cluster, route_to_db=None, usage=("kube",),
                     route_to_cluster=leaf,
                     kubernetes_groups=groups, kubernetes_users=users,
                     not_before=None, not_after=None)
    cert = sign_client_cert(auth.authorities.get(CertAuthorityType.TLS), public_key, scoped,
                            ttl, now=now)
    expires = now + ttl
    await auth.emit("cert.create", user=identity.username, cert_type="kube",
                    kube_cluster=kube_cluster, kubernetes_groups=list(groups),
                    kubernetes_users=list(users), expires=expires.isoformat(),
                    **routed_fields(leaf))
    return cert.public_bytes(Encoding.PEM), expires


async def _issue_any(auth: AuthServer, identity: Identity, public_key: PublicKey,
                     kube_cluster: str, cluster: str) -> tuple[bytes, datetime]:
    """The certificate naming no kube cluster (see the module)."""
    if kube_cluster or routes_to_leaf(auth, cluster):
        raise BadParameter("a certificate for every kube cluster names no kube cluster and "
                           "is for this cluster's only")
    if identity.is_system or identity.cluster != auth.cluster_name:
        raise AccessDenied("kube certificates are issued to the user's own cluster's users")
    role_set = await auth.role_set(identity)
    online = await online_kube_clusters(auth)
    if not any(role_set.check_kube(c.labels).allowed for c in online.values()):
        await auth.emit("access.denied", success=False, user=identity.username,
                        action="kube.login", kube_clusters="any",
                        reason="the roles admit no online kube cluster")
        raise AccessDenied(f"{identity.username} may use no online kube cluster")
    now = auth.now()
    ttl = _remaining(identity, now)
    scoped = replace(identity, route_to_kube=None, route_to_db=None, usage=("kube",),
                     route_to_cluster=None, kubernetes_groups=(), kubernetes_users=(),
                     not_before=None, not_after=None)
    cert = sign_client_cert(auth.authorities.get(CertAuthorityType.TLS), public_key, scoped,
                            ttl, now=now)
    expires = now + ttl
    await auth.emit("cert.create", user=identity.username, cert_type="kube",
                    kube_clusters="any", expires=expires.isoformat())
    return cert.public_bytes(Encoding.PEM), expires


async def _check_local(auth: AuthServer, identity: Identity, kube_cluster: str
                       ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The groups and users granted on this cluster's online ``kube_cluster`` (audited
    refusal when the roles do not admit it)."""
    online = (await online_kube_clusters(auth)).get(kube_cluster)
    if online is None:
        raise NotFound(f"kube cluster {kube_cluster!r} is not online (no kube agent serves it)")
    role_set = await auth.role_set(identity)
    decision = role_set.check_kube(online.labels)
    if not decision.allowed:
        await auth.emit("access.denied", success=False, user=identity.username,
                        action="kube.login", kube_cluster=kube_cluster, role=decision.role,
                        rule=decision.rule, reason=decision.reason)
        raise AccessDenied(f"{identity.username} may not use kube cluster {kube_cluster}: "
                           f"{decision.reason}")
    return role_set.kube_principals(online.labels)


def _remaining(identity: Identity, now: datetime) -> timedelta:
    """How long the login certificate is still valid: a kube certificate lives no longer;
    BadParameter when under a minute is left."""
    assert identity.not_after is not None
    ttl = identity.not_after - now
    if ttl < timedelta(minutes=1):
        raise BadParameter("the login certificate expires within a minute: run lmsh login")
    return ttl
