"""The leaf's auth applies a root's CA update: checked, then stored in place of the root's CAs.

::

    POST /v1/trust/roots/{root}/cas  (the leaf proxy, relaying the root proxy's ``cas``
                                      message from its cluster link to root)
      └─▶ apply_root_cas(auth, root, update)
            the root's stored CAs user/host/tls.<root> (limen.dev/trust: trusted-cluster), its
            TrustedCluster enabled, else refused
            then apply_update (limen.auth.trusted_clusters.cas_apply) in the root_to_leaf
            direction: checked, replays refused, stored in one transaction, audited
            trusted_cluster.cas (root_cluster)

Every reader then follows the store: the auth process's ``TrustCache`` (refreshed by the
reconciler's watch of CertAuthority resources, ``limen.trust.reconciler``) and the processes
apart from auth through ``GET /v1/trust/roots`` (``limen.trust.roots_poller``, every 3 s).
Called by the auth API route (``limen.auth.http.trust_leaf``).
"""

from __future__ import annotations

from typing import Any

from limen.api.resources import Kind, Resource
from limen.auth.authorities import ca_resource_name
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.ca_update import Direction
from limen.auth.trusted_clusters.cas_apply import EVENT, ISSUED_AT, TYPES, apply_update
from limen.auth.trusted_clusters.leaf_roots import (
    TRUST_TRUSTED_CLUSTER,
    TRUSTED_CLUSTER_LABEL,
    is_enabled,
)
from limen.auth.trusted_clusters.wire import TRUST_LABEL
from limen.ca.authority import CertAuthorityType
from limen.errors import AccessDenied

__all__ = ["EVENT", "ISSUED_AT", "apply_root_cas"]


async def apply_root_cas(auth: AuthServer, root: str, update: Any, *,
                         relayed_by: str = "") -> bool:
    """Check and store root ``root``'s CA update (see the module doc); True when the stored
    CAs changed. :class:`AccessDenied` or :class:`BadParameter` (audited) when refused."""
    return await apply_update(auth, Direction.ROOT_TO_LEAF, root, update, _stored,
                              relayed_by=relayed_by)


async def _stored(auth: AuthServer, root: str) -> dict[CertAuthorityType, Resource]:
    """The root's stored CAs, all three, while its TrustedCluster is enabled."""
    found: dict[CertAuthorityType, Resource] = {}
    for ca_type in TYPES:
        res = await auth.store.find(Kind.CERT_AUTHORITY, ca_resource_name(ca_type, root))
        if res is None or res.labels.get(TRUST_LABEL) != TRUST_TRUSTED_CLUSTER:
            raise AccessDenied(f"cluster {root!r} is not a trusted root here")
        found[ca_type] = res
    owners = {r.labels.get(TRUSTED_CLUSTER_LABEL, "") for r in found.values()}
    trusted = await auth.store.find(Kind.TRUSTED_CLUSTER, owners.pop()) \
        if len(owners) == 1 else None
    if trusted is None or not is_enabled(trusted) or \
            any(r.spec.get("disabled") for r in found.values()):
        raise AccessDenied(f"root cluster {root!r} is not trusted here while its "
                           "TrustedCluster is disabled or gone")
    return found
