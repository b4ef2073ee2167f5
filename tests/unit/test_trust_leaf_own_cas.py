"""A leaf's own CA update at its root (issue #18, the leaf → root direction):
``limen.auth.trusted_clusters.root_leaf_cas`` with the shared ``cas_apply`` and ``ca_update``.

Two auth servers in memory: the root keeps leaf ``leaf``'s CAs (and those of a second leaf,
``other``) as the trusted-cluster handshake stores them. Every attack is performed and its
refusal asserted together with its audit event and the unchanged store.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from root_ca_env import TYPES, admit_leaf, host_credentials, public_cas, with_new_user_key

from limen.api.resources import Kind
from limen.auth.authorities import ca_resource_name
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.ca_update import Direction, make_update
from limen.auth.trusted_clusters.cas_apply import EVENT
from limen.auth.trusted_clusters.root_leaf_cas import apply_leaf_cas
from limen.auth.trusted_clusters.wire import CLUSTER_LABEL, TRUST_LABEL, TRUST_REMOTE, CASet
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.config import ClusterSettings
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter
from limen.tunnel.protocol import LeafCAs, decode_message, encode

LEAF_TO_ROOT = Direction.LEAF_TO_ROOT


async def _server(name: str, emitter: MemoryEmitter | None = None) -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name=name),
                        emitter or MemoryEmitter())
    await server.start()
    return server


@dataclass
class World:
    root: AuthServer
    leaf: AuthServer
    other: AuthServer
    """A second leaf of the same root."""
    events: MemoryEmitter
    proxy: HostCredentials
    """The leaf proxy's credentials."""

    def update(self, cas: CASet | None = None, *, creds: HostCredentials | None = None,
               later: float = 0.0, direction: Direction = LEAF_TO_ROOT) -> dict[str, Any]:
        return make_update(creds or self.proxy, cas or CASet.of(public_cas(self.leaf)),
                           self.leaf.now() + timedelta(seconds=later), direction)

    async def stored(self, ca_type: CertAuthorityType, leaf: str = "leaf") -> CertAuthority:
        res = await self.root.store.get(Kind.CERT_AUTHORITY, ca_resource_name(ca_type, leaf))
        return CertAuthority.from_dict(res.spec)

    async def snapshot(self, leaf: str = "leaf") -> dict[CertAuthorityType, Any]:
        return {t: (await self.stored(t, leaf)).to_dict() for t in TYPES}

    def audited(self, success: bool) -> list[Mapping[str, Any]]:
        return [e.to_dict() for e in self.events.events
                if e.type == EVENT and e.success is success]


@pytest.fixture
async def world() -> World:
    events = MemoryEmitter()
    root = await _server("root", events)
    leaf, other = await _server("leaf"), await _server("other")
    await admit_leaf(root, leaf)
    await admit_leaf(root, other)
    return World(root, leaf, other, events,
                 host_credentials(leaf, SystemRole.PROXY, "leaf-proxy"))


async def test_a_new_host_key_of_the_leaf_is_stored_and_audited(world: World) -> None:
    cas = public_cas(world.leaf)
    new = CertAuthority.generate("leaf", CertAuthorityType.HOST).public_only()
    host = cas[CertAuthorityType.HOST]
    cas[CertAuthorityType.HOST] = CertAuthority("leaf", CertAuthorityType.HOST, host.active,
                                                (new.active,))
    assert await apply_leaf_cas(world.root, "leaf", world.update(CASet.of(cas)),
                                relayed_by="root-proxy")
    stored = await world.stored(CertAuthorityType.HOST)
    assert new.active.ssh_public_key in stored.ssh_public_keys()
    assert len(stored.trusted_public_keys()) == 2
    res = await world.root.store.get(Kind.CERT_AUTHORITY, "host.leaf")
    assert res.labels == {CLUSTER_LABEL: "leaf", TRUST_LABEL: TRUST_REMOTE}
    [event] = world.audited(True)
    assert event["leaf_cluster"] == "leaf"
    assert event["direction"] == "leaf_to_root"
    assert event["signer"] == "leaf-proxy"
    assert event["proxy"] == "root-proxy"
    assert len(event["cas"]["host"]["added"]) == 1
    assert not await apply_leaf_cas(world.root, "leaf", world.update(CASet.of(cas)))
    assert len(world.audited(True)) == 1  # the same set again changes nothing


async def _refused(world: World, update: Any, error: type[Exception], words: str,
                   leaf: str = "leaf") -> Mapping[str, Any]:
    before = {name: await world.snapshot(name) for name in ("leaf", "other")}
    with pytest.raises(error, match=words):
        await apply_leaf_cas(world.root, leaf, update)
    assert {name: await world.snapshot(name) for name in ("leaf", "other")} == before
    refused = world.audited(False)
    assert refused
    assert refused[-1]["leaf_cluster"] == leaf
    assert refused[-1]["direction"] == "leaf_to_root"
    assert refused[-1]["code"] == "L6005W"
    return refused[-1]


async def test_leaf_a_cannot_update_leaf_bs_cas(world: World) -> None:
    # the other leaf's own proxy signs an update of its CAs; it arrives by leaf's link
    other_proxy = host_credentials(world.other, SystemRole.PROXY, "other-proxy")
    cas, _ = with_new_user_key(world.other)
    update = world.update(cas, creds=other_proxy)
    event = await _refused(world, update, AccessDenied,
                           "naming cluster 'other' came by the link of leaf cluster 'leaf'")
    assert "other" in event["reason"]
    # leaf's proxy signs a set naming itself but sent for other's name: leaf's certificate
    # does not verify against other's host CA
    forged = world.update(cas)
    forged["cluster"] = "other"
    await _refused(world, forged, AccessDenied, "untrusted CA", leaf="other")


async def test_a_replayed_older_update_is_refused(world: World) -> None:
    first, new_key = with_new_user_key(world.leaf)
    old = world.update(first)
    only_new = CASet(user=(new_key,), host=first.host, tls=first.tls)
    await apply_leaf_cas(world.root, "leaf", old)
    await apply_leaf_cas(world.root, "leaf", world.update(only_new, later=1))
    await _refused(world, copy.deepcopy(old), AccessDenied, "replay")
    assert (await world.stored(CertAuthorityType.USER)).ssh_public_keys() == (new_key,)


async def test_an_update_signed_by_a_key_the_root_does_not_trust_is_refused(
        world: World) -> None:
    impostor = await _server("leaf")  # another CA claiming the leaf's name
    forged = make_update(host_credentials(impostor, SystemRole.PROXY, "leaf-proxy"),
                         CASet.of(public_cas(impostor)), impostor.now(), LEAF_TO_ROOT)
    await _refused(world, forged, AccessDenied, "untrusted CA")
    node = host_credentials(world.leaf, SystemRole.NODE, "leaf-node")
    await _refused(world, world.update(creds=node), AccessDenied, "not by a proxy of leaf")


async def test_an_empty_or_malformed_set_is_refused_as_a_whole(world: World) -> None:
    cas, _ = with_new_user_key(world.leaf)
    await _refused(world, world.update(CASet(user=cas.user, host=(), tls=cas.tls)),
                   BadParameter, "zero host CA keys")
    broken = CASet(user=cas.user, host=(cas.host[0], "ssh-ed25519 AAAAnot-a-key"),
                   tls=cas.tls)
    await _refused(world, world.update(broken), BadParameter, "cas")
    partial = world.update(cas)
    del partial["cas"]["user"]
    await _refused(world, partial, BadParameter, "user")
    await _refused(world, {"cluster": "leaf"}, BadParameter, "issued_at")
    await _refused(world, ["not", "an", "object"], BadParameter, "object")


async def test_an_update_signed_for_the_root_to_leaf_direction_is_refused(
        world: World) -> None:
    cas, _ = with_new_user_key(world.leaf)
    other_way = world.update(cas, direction=Direction.ROOT_TO_LEAF)
    await _refused(world, other_way, AccessDenied, "signature does not verify")
    assert await apply_leaf_cas(world.root, "leaf", world.update(cas))  # its own direction


async def test_an_update_of_a_leaf_no_longer_admitted_is_refused(world: World) -> None:
    await world.root.store.delete(Kind.REMOTE_CLUSTER, "leaf")
    cas, _ = with_new_user_key(world.leaf)
    with pytest.raises(AccessDenied, match="not an admitted leaf"):
        await apply_leaf_cas(world.root, "leaf", world.update(cas))
    assert world.audited(False)[-1]["leaf_cluster"] == "leaf"
    with pytest.raises(AccessDenied, match="not an admitted leaf"):
        await apply_leaf_cas(world.root, "stranger", world.update(cas))


def test_the_tunnel_message_carries_the_update(world: World) -> None:
    update = world.update()
    decoded = decode_message(encode(LeafCAs(update=update))[4:])
    assert isinstance(decoded, LeafCAs)
    assert decoded.update == update
    with pytest.raises(BadParameter):
        decode_message(b'{"type":"leaf_cas","update":"x"}')
