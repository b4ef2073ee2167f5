"""The root's auth applies a leaf's own CA update: checked, then stored in place of the leaf's
CAs the root keeps since the trusted-cluster handshake (a CA rotation at the leaf).

::

    POST /v1/trust/leaves/{leaf}/cas  (the root proxy, relaying the ``leaf_cas`` message of
                                       leaf's cluster link; {leaf} is the link's verified
                                       cluster, never a name the leaf chose)
      └─▶ apply_leaf_cas(auth, leaf, update)
            the leaf's RemoteCluster and its stored CAs user/host/tls.<leaf>
            (limen.dev/trust: remote, limen.dev/cluster: <leaf>, none disabled), else refused
            then apply_update (limen.auth.trusted_clusters.cas_apply) in the leaf_to_root
            direction: the update must name <leaf> (leaf A cannot update leaf B's CAs), be
            signed by a proxy of <leaf> whose host certificate the host CA stored HERE
            verifies, be newer than the last one applied; stored in one transaction, audited
            trusted_cluster.cas (leaf_cluster, direction leaf_to_root)

Every root-side reader then follows the store: the tunnel server's check of the leaf proxy's
cluster link (``limen.proxy.trust_root_routes.RemoteClusters.host_ca_keys``, read at each
hello), the leaf host CA keys users get for ``*.<leaf>`` in known_hosts (``GET
/v1/remoteclusters``, ``root_leaves.visible_clusters``) and so the routed logins to the leaf's
nodes. Called by the auth API route (``limen.auth.http.trust_root``).
"""

from __future__ import annotations

from typing import Any

from limen.api.resources import Kind, Resource
from limen.auth.authorities import ca_resource_name
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.ca_update import Direction
from limen.auth.trusted_clusters.cas_apply import TYPES, apply_update
from limen.auth.trusted_clusters.wire import CLUSTER_LABEL, TRUST_LABEL, TRUST_REMOTE
from limen.ca.authority import CertAuthorityType
from limen.errors import AccessDenied

__all__ = ["apply_leaf_cas"]


async def apply_leaf_cas(auth: AuthServer, leaf: str, update: Any, *,
                         relayed_by: str = "") -> bool:
    """Check and store leaf ``leaf``'s own CA update (see the module doc); True when the
    stored CAs changed. :class:`AccessDenied` or :class:`BadParameter` (audited) when
    refused."""
    return await apply_update(auth, Direction.LEAF_TO_ROOT, leaf, update, _stored,
                              relayed_by=relayed_by)


async def _stored(auth: AuthServer, leaf: str) -> dict[CertAuthorityType, Resource]:
    """The leaf's stored CAs, all three, while its RemoteCluster exists."""
    if await auth.store.find(Kind.REMOTE_CLUSTER, leaf) is None:
        raise AccessDenied(f"cluster {leaf!r} is not an admitted leaf here")
    found: dict[CertAuthorityType, Resource] = {}
    for ca_type in TYPES:
        res = await auth.store.find(Kind.CERT_AUTHORITY, ca_resource_name(ca_type, leaf))
        if res is None or res.labels.get(TRUST_LABEL) != TRUST_REMOTE or \
                res.labels.get(CLUSTER_LABEL) != leaf:
            raise AccessDenied(f"cluster {leaf!r} is not an admitted leaf here")
        if res.spec.get("disabled"):
            raise AccessDenied(f"the CAs of leaf cluster {leaf!r} are disabled here")
        found[ca_type] = res
    return found
