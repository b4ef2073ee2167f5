"""Trusted clusters, leaf side, as stored: which root clusters this cluster trusts right now.

The leaf's reconciler (``limen.trust.reconciler``) stores each root's public CAs as
``CertAuthority`` resources ``<type>.<root>`` labelled ``limen.dev/trust: trusted-cluster`` and
``limen.dev/trusted-cluster: <TrustedCluster name>``. A root is trusted while its TrustedCluster
exists and is enabled and its CAs are not ``disabled``; :func:`enabled_roots` reads exactly
that, in one place, for both readers::

    store ─▶ enabled_roots() ─┬─▶ TrustCache.refresh()   (limen.trust.cache, auth process)
                              └─▶ GET /v1/trust/roots    (limen.auth.http.trust_leaf, for a node or
                                                          a proxy running apart from auth)

Public copies only (``CertAuthority.public_only``): nothing read here carries a private key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from limen.api.resources import Kind, Resource
from limen.auth.trusted_clusters.wire import TRUST_LABEL
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.errors import BadParameter
from limen.services.resource_store import ResourceStore

__all__ = [
    "TRUSTED_CLUSTER_LABEL",
    "TRUST_TRUSTED_CLUSTER",
    "EnabledRoot",
    "enabled_roots",
    "is_enabled",
]

log = logging.getLogger(__name__)

TRUST_TRUSTED_CLUSTER = "trusted-cluster"
"""``limen.dev/trust`` value of a root's CAs stored on the leaf."""
TRUSTED_CLUSTER_LABEL = "limen.dev/trusted-cluster"
"""Names the TrustedCluster a root CA on the leaf belongs to."""


def is_enabled(trusted_cluster: Resource) -> bool:
    return trusted_cluster.spec.get("enabled", True) is not False


@dataclass(frozen=True)
class EnabledRoot:
    """One trusted root cluster: the TrustedCluster that admitted it and its public CAs."""

    trusted_cluster: Resource
    root_cluster: str
    cas: Mapping[CertAuthorityType, CertAuthority] = field(default_factory=dict)
    """At least ``user``; ``host`` and ``tls`` when stored (the leaf proxy's link needs them)."""


async def enabled_roots(store: ResourceStore, local_cluster: str) -> dict[str, EnabledRoot]:
    """The enabled roots with a user CA, by root cluster name (never ``local_cluster``)."""
    declared = {r.name: r for r in await store.list(Kind.TRUSTED_CLUSTER)}
    found: dict[str, tuple[Resource, dict[CertAuthorityType, CertAuthority]]] = {}
    for res in await store.list(Kind.CERT_AUTHORITY):
        if res.labels.get(TRUST_LABEL) != TRUST_TRUSTED_CLUSTER or res.spec.get("disabled"):
            continue
        owner = declared.get(res.labels.get(TRUSTED_CLUSTER_LABEL, ""))
        if owner is None or not is_enabled(owner):
            continue
        try:
            ca = CertAuthority.from_dict(res.spec).public_only()
        except BadParameter as err:
            log.warning("ignoring trusted root CA %s: %s", res.name, err)
            continue
        if ca.cluster == local_cluster:
            continue
        entry = found.setdefault(ca.cluster, (owner, {}))
        if entry[0].name != owner.name:
            log.warning("ignoring CA %s: root %s is already trusted through TrustedCluster %s",
                        res.name, ca.cluster, entry[0].name)
            continue
        entry[1][ca.type] = ca
    return {name: EnabledRoot(owner, name, cas) for name, (owner, cas) in found.items()
            if CertAuthorityType.USER in cas}
