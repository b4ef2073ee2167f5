"""What this (leaf) cluster currently trusts of its root clusters, for synchronous readers.

The node agent checks certificates and maps roles on every connection without awaiting the
store, so the reconciler keeps this snapshot fresh (``refresh()`` after each change it makes
or sees): per trusted root cluster, its user CA and the compiled ``role_map`` of the
TrustedCluster that admitted it, plus what the leaf proxy's link to the root needs (the root's
host and TLS CAs, its proxy and tunnel addresses). ``wait_changed()`` wakes that link manager
(``limen.proxy.trust_leaf_links``) after every refresh. Disabled or deleted TrustedClusters and
disabled CAs are left out, so their certificates verify nowhere and map to nothing (the
selection is ``limen.auth.trusted_clusters.leaf_roots.enabled_roots``, shared with the auth
API's ``/v1/trust/roots``). Called by ``limen.trust.reconciler`` (refresh) and
``limen.cli.compose`` (the node's trust source and
``StoreAccessPolicy(map_roles=trusted_role_map(cache))``). :class:`TrustView` is what its
readers need; ``limen.trust.roots_poller.RemoteTrustCache`` offers it too, apart from auth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from limen.aio.changed import Changed
from limen.auth.trusted_clusters.leaf_roots import (
    TRUST_TRUSTED_CLUSTER,
    TRUSTED_CLUSTER_LABEL,
    enabled_roots,
    is_enabled,
)
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity
from limen.errors import AccessDenied, BadParameter
from limen.services.resource_store import ResourceStore
from limen.trust.rolemap import RoleMapping, compile_role_map, map_roles

__all__ = [
    "TRUSTED_CLUSTER_LABEL",
    "TRUST_TRUSTED_CLUSTER",
    "TrustCache",
    "TrustView",
    "TrustedRoot",
    "as_local_user",
    "is_enabled",
    "trusted_role_map",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrustedRoot:
    trusted_cluster: str
    root_cluster: str
    user_ca: CertAuthority
    role_map: tuple[RoleMapping, ...]
    host_ca: CertAuthority | None = field(default=None, compare=False)
    """The root's host CA: verifies the root proxy at the end of the leaf's cluster link."""
    tls_ca: CertAuthority | None = field(default=None, compare=False)
    """The root's TLS CA: verifies the root proxy's web API (tunnel address discovery)."""
    proxy_address: str = ""
    """``spec.proxy_address`` of the TrustedCluster."""
    tunnel_address: str = ""
    """``spec.tunnel_address``; empty: asked from the root proxy's ping."""


class TrustView(Protocol):
    """What the node's verifier and policy and the leaf proxy's links read: :class:`TrustCache`
    in the auth process, ``limen.trust.roots_poller.RemoteTrustCache`` in a node or proxy running
    apart from auth."""

    @property
    def roots(self) -> Mapping[str, TrustedRoot]: ...

    def user_cas(self) -> list[CertAuthority]: ...

    def role_names(self, identity: Identity) -> list[str]: ...

    async def wait_changed(self, within: float | None = None) -> bool: ...


def as_local_user(view: TrustView, identity: Identity, root_name: str) -> Identity:
    """A root's user as this leaf sees it: the roles of the root certificate mapped by the
    trust's role_map (:class:`AccessDenied` when they map to none)."""
    mapped = view.role_names(identity)
    if not mapped:
        raise AccessDenied(f"the roles of {identity.username}@{root_name} "
                           f"({', '.join(identity.roles) or 'none'}) map to no role "
                           "of this cluster")
    return replace(identity, roles=tuple(mapped))


class TrustCache:
    """The trusted roots, by root cluster name (see the module doc)."""

    def __init__(self, store: ResourceStore, local_cluster: Callable[[], str]) -> None:
        self.store = store
        self.local_cluster = local_cluster
        self._roots: dict[str, TrustedRoot] = {}
        self._changed = Changed()

    async def wait_changed(self, within: float | None = None) -> bool:
        """Wait for the next refresh (True) or ``within`` seconds (False)."""
        return await self._changed.wait(within)

    async def refresh(self) -> None:
        roots: dict[str, TrustedRoot] = {}
        for name, entry in (await enabled_roots(self.store, self.local_cluster())).items():
            spec = entry.trusted_cluster.spec
            try:
                role_map = compile_role_map(spec.get("role_map") or [])
            except BadParameter as err:
                log.warning("ignoring trusted root %s: %s", name, err)
                continue
            roots[name] = TrustedRoot(
                entry.trusted_cluster.name, name, entry.cas[CertAuthorityType.USER], role_map,
                host_ca=entry.cas.get(CertAuthorityType.HOST),
                tls_ca=entry.cas.get(CertAuthorityType.TLS),
                proxy_address=str(spec.get("proxy_address") or ""),
                tunnel_address=str(spec.get("tunnel_address") or ""))
        self._roots = roots
        self._changed.notify()

    @property
    def roots(self) -> Mapping[str, TrustedRoot]:
        return dict(self._roots)

    def user_cas(self) -> list[CertAuthority]:
        """The enabled roots' user CAs (public)."""
        return [root.user_ca for root in self._roots.values()]

    def role_names(self, identity: Identity) -> list[str]:
        """Local roles of ``identity`` of a trusted root; nothing for any other cluster."""
        root = self._roots.get(identity.cluster)
        if root is None or identity.cluster == self.local_cluster():
            return []
        return map_roles(identity.roles, root.role_map)


def trusted_role_map(cache: TrustView) -> Callable[[Identity], Sequence[str]]:
    """What ``StoreAccessPolicy(map_roles=...)`` takes: a root identity's local roles."""
    return cache.role_names
