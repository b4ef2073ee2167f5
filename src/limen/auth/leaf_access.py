"""Certificates for a trusted leaf cluster's databases and kube clusters, at the root's auth.

``lmsh db login --cluster LEAF NAME`` and ``lmsh kube login --cluster LEAF NAME`` ask the
user's own (root) auth for a certificate routed to the leaf (``route_to_cluster``): this root
cannot see the leaf's resources or roles, so it checks only what is its own to decide, that
the leaf is admitted here (a RemoteCluster) and that the user's roles' ``cluster_labels``
admit it; an unknown leaf and one the roles do not admit are refused alike (audited as
``access.denied``). The leaf decides the rest on every connection with the mapped roles
(``limen.proxy.trust_leaf_resources``). Called by :mod:`limen.auth.db_access` and
:mod:`limen.auth.kube_access`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from limen.api.resources import Kind
from limen.ca.identity import Identity
from limen.errors import NotFound

if TYPE_CHECKING:
    from limen.auth.core import AuthServer

__all__ = ["admit_leaf", "routed_fields", "routes_to_leaf"]


def routes_to_leaf(auth: AuthServer, cluster: str) -> bool:
    """Whether a login asks for another cluster than this one."""
    return bool(cluster) and cluster != auth.cluster_name


async def admit_leaf(auth: AuthServer, identity: Identity, leaf: str, action: str,
                     **fields: Any) -> None:
    """NotFound unless ``leaf`` is a leaf cluster here that ``identity``'s roles admit."""
    unknown = NotFound(f"unknown cluster {leaf!r}: no such cluster is reachable from here")
    remote = await auth.store.find(Kind.REMOTE_CLUSTER, leaf)
    if remote is None:
        reason, rule = f"no leaf cluster named {leaf!r}", "cluster"
    else:
        decision = (await auth.role_set(identity)).check_cluster(dict(remote.labels))
        if decision.allowed:
            return
        reason, rule = decision.reason, decision.rule or "cluster_labels"
    await auth.emit("access.denied", success=False, user=identity.username, action=action,
                    target_cluster=leaf, rule=rule, reason=reason, **fields)
    raise unknown


def routed_fields(leaf: str | None) -> dict[str, Any]:
    """The audit field naming the leaf a certificate is routed to (none for this cluster)."""
    return {"target_cluster": leaf} if leaf else {}
