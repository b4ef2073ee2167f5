"""A leaf cluster's real ``AuthService`` trusting a root, for the unit tests of a leaf's agents
apart from auth (``test_db_agent_root_users``, ``test_kube_agent_root_users``).

The leaf's auth listens over mutual TLS on a random port, writes its events to a
``MemoryEmitter`` (:attr:`Leaf.events`) and holds the test's roles and a TrustedCluster
``root`` (:func:`trusted_cluster`) with the root's public CAs stored as the reconciler stores
them, so its trust answer (``GET /v1/trust/roots``) names the root's TLS CA and this role_map:
root ``ops`` -> leaf ``leaf-dev``, ``guest`` -> ``nosuch`` (a role the leaf does not have),
``tourist`` -> ``visitor``. :func:`agent_trust` is the trust and the policy an agent apart
builds from it (``limen.cli.compose_remote``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from limen.agents.node.policy import StoreAccessPolicy
from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Origin, Resource
from limen.api.validation import validate
from limen.auth.auth_service import AuthService
from limen.auth.client import AuthClient
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.config import ClusterSettings, Listeners, Settings
from limen.events.emitter import MemoryEmitter
from limen.trust.cache import trusted_role_map
from limen.trust.roots_poller import RemoteTrustCache

ROLE_MAP: list[dict[str, Any]] = [{"remote": "ops", "local": ["leaf-dev"]},
                                  {"remote": "guest", "local": ["nosuch"]},
                                  {"remote": "tourist", "local": ["visitor"]}]


def trusted_cluster(enabled: bool) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "TrustedCluster",
            "metadata": {"name": "root"},
            "spec": {"enabled": enabled, "proxy_address": "root.example:3080",
                     "token_secret_ref": {"file": "nonexistent"}, "role_map": ROLE_MAP}}


@dataclass
class Leaf:
    service: AuthService
    events: MemoryEmitter
    """What the leaf's auth wrote."""
    root_cas: dict[CertAuthorityType, CertAuthority]

    @property
    def auth(self) -> Any:
        return self.service.server

    async def apply(self, *docs: dict[str, Any]) -> None:
        await self.auth.apply(validate([SourceDocument("t", i, 1, d) for i, d in
                                        enumerate(docs)]), Origin.API, actor="admin")

    async def trust_root(self, *, enabled: bool = True) -> None:
        """The TrustedCluster and the root's public CAs, as the reconciler stores them."""
        await self.apply(trusted_cluster(enabled))
        for ca_type, ca in self.root_cas.items():
            await self.auth.store.put(Resource(
                Kind.CERT_AUTHORITY, f"{ca_type.value}.root", spec=ca.public_only().to_dict(),
                labels={"limen.dev/cluster": "root", "limen.dev/trust": "trusted-cluster",
                        "limen.dev/trusted-cluster": "root"}))


@asynccontextmanager
async def leaf_auth(data_dir: Path, docs: Sequence[dict[str, Any]]) -> AsyncIterator[Leaf]:
    """The leaf's auth, started with ``docs`` applied and the root trusted; stopped after."""
    events = MemoryEmitter()
    settings = Settings(data_dir=data_dir, cluster=ClusterSettings(name="leaf"),
                        listeners=Listeners(auth="127.0.0.1:0"))
    service = AuthService(settings, MemoryBackend(), events)
    await service.start()
    try:
        leaf = Leaf(service, events, {t: CertAuthority.generate("root", t) for t in (
            CertAuthorityType.USER, CertAuthorityType.HOST, CertAuthorityType.TLS)})
        await leaf.apply(*docs)
        await leaf.trust_root()
        yield leaf
    finally:
        await service.stop()


def agent_trust(leaf: Leaf, client: AuthClient
                ) -> tuple[RemoteTrustCache, StoreAccessPolicy]:
    """The trust an agent apart polls through ``client`` (its credentials) and its access
    policy mapping root users' roles with the trust's role_map."""
    async def give() -> AuthClient:
        return client

    own = leaf.auth.authorities.get(CertAuthorityType.USER)
    trust = RemoteTrustCache(give, "leaf", own.ssh_public_keys())
    return trust, StoreAccessPolicy(leaf.auth.store, {}, cluster="leaf",
                                    map_roles=trusted_role_map(trust))
