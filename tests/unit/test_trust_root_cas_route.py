"""The leaf auth's route for a root's CA update, over the real auth API (mutual TLS):
``POST /v1/trust/roots/{root}/cas`` (limen.auth.http.trust_leaf).

Only this cluster's proxies (and admins) may hand an update in: a node or a user is refused
before anything is read. A proxy's valid update is applied; a proxy relaying an update of
another cluster than the path's root, or a malformed one, is refused and nothing changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from root_ca_env import host_credentials, public_cas, trust_root, with_new_user_key

from limen.api.resources import Kind
from limen.auth.auth_service import AuthService
from limen.auth.authorities import ca_resource_name
from limen.auth.client import AuthClient
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.ca_update import make_update
from limen.auth.trusted_clusters.wire import CASet
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import SystemRole
from limen.config import ClusterSettings, Listeners, Settings
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter
from limen.events.filelog import FileLog

PATH = "/v1/trust/roots/root/cas"


@dataclass
class Leaf:
    service: AuthService
    root: AuthServer

    def client(self, role: SystemRole) -> AuthClient:
        return AuthClient(self.service.address,
                          self.service.issue_local_credentials(role, ["127.0.0.1"]))

    def update(self, cas: CASet | None = None) -> dict[str, object]:
        proxy = host_credentials(self.root, SystemRole.PROXY, "root-proxy")
        return make_update(proxy, cas or CASet.of(public_cas(self.root)), self.root.now())

    async def user_keys(self) -> tuple[str, ...]:
        res = await self.service.server.store.get(Kind.CERT_AUTHORITY,
                                                  ca_resource_name(CertAuthorityType.USER,
                                                                   "root"))
        return CertAuthority.from_dict(res.spec).ssh_public_keys()


@pytest.fixture
async def leaf(tmp_path: Path) -> AsyncIterator[Leaf]:
    root = AuthServer(MemoryBackend(), ClusterSettings(name="root"), MemoryEmitter())
    await root.start()
    log = FileLog(tmp_path / "events")
    service = AuthService(Settings(data_dir=tmp_path, cluster=ClusterSettings(name="leaf"),
                                   listeners=Listeners(auth="127.0.0.1:0")),
                          MemoryBackend(), log)
    await service.start()
    try:
        await trust_root(service.server.store, root)
        yield Leaf(service, root)
    finally:
        await service.stop()
        log.close()


async def test_a_proxy_hands_in_an_update(leaf: Leaf) -> None:
    cas, new_key = with_new_user_key(leaf.root)
    async with leaf.client(SystemRole.PROXY) as client:
        assert await client.call("POST", PATH, leaf.update(cas)) == {"changed": True}
        assert await client.call("POST", PATH, leaf.update(cas)) == {"changed": False}
    assert new_key in await leaf.user_keys()


@pytest.mark.parametrize("role", [SystemRole.NODE, SystemRole.DB, SystemRole.KUBE])
async def test_other_processes_of_the_cluster_are_refused(leaf: Leaf, role: SystemRole
                                                          ) -> None:
    cas, new_key = with_new_user_key(leaf.root)
    async with leaf.client(role) as client:
        with pytest.raises(AccessDenied, match="may not call"):
            await client.call("POST", PATH, leaf.update(cas))
    assert new_key not in await leaf.user_keys()


async def test_a_proxy_relaying_another_clusters_update_or_garbage_is_refused(
        leaf: Leaf) -> None:
    before = await leaf.user_keys()
    async with leaf.client(SystemRole.PROXY) as client:
        with pytest.raises(AccessDenied, match="came by the link of root cluster 'root'"):
            await client.call("POST", PATH, {**leaf.update(), "cluster": "other"})
        with pytest.raises(BadParameter):
            await client.call("POST", PATH, {**leaf.update(), "cas": {"user": "x"}})
        with pytest.raises(AccessDenied, match="not a trusted root"):
            await client.call("POST", "/v1/trust/roots/nobody/cas", leaf.update())
    assert await leaf.user_keys() == before
