"""A root's CA update at a leaf (limen.auth.trusted_clusters.ca_update and .leaf_cas): made and
signed by a root proxy, checked and stored by the leaf's auth.

Two real auth servers on memory backends: the root, whose proxy signs updates with its SSH host
key, and the leaf, holding the root's CAs as the trusted-cluster handshake stored them. An
update with a key added at the root replaces the leaf's copy in one step and is audited; the
attacks each leave the previous set in place and are audited as refused: an update naming
another cluster than the link's root, an empty key list, a malformed key, a partial set, a
private key, a tampered set, a signer that is not a proxy of the root (a root node, a proxy of
another cluster), an update from the future, a replay of an older update, and an update for
a disabled TrustedCluster. The tunnel message and the root proxy's reading of auth's answer
are covered too."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from root_ca_env import TYPES, host_credentials, public_cas, trust_root, with_new_user_key

from limen.aio.backoff import Backoff
from limen.aio.tasks import cancel_and_wait
from limen.api.resources import Kind
from limen.auth.authorities import ca_resource_name
from limen.auth.core import AuthServer
from limen.auth.http.trust_leaf import trust_answer
from limen.auth.trusted_clusters.ca_update import check_update, make_update
from limen.auth.trusted_clusters.leaf_cas import EVENT, apply_root_cas
from limen.auth.trusted_clusters.wire import CASet
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem
from limen.config import ClusterSettings
from limen.errors import AccessDenied, BadParameter, ConnectionProblem
from limen.events.emitter import MemoryEmitter
from limen.proxy.trust_leaf_links import LeafLinks
from limen.proxy.trust_root_cas import own_cas
from limen.trust.cache import TrustCache
from limen.trust.reconciler import TrustedClusterReconciler
from limen.trust.secrets import SecretSource
from limen.tunnel.protocol import RootCAs, decode_message, encode


async def _server(name: str, emitter: MemoryEmitter | None = None) -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name=name),
                        emitter or MemoryEmitter())
    await server.start()
    return server


@dataclass
class World:
    root: AuthServer
    leaf: AuthServer
    events: MemoryEmitter
    proxy: HostCredentials
    """The root proxy's credentials."""

    def update(self, cas: CASet | None = None, *, creds: HostCredentials | None = None,
               now: datetime | None = None) -> dict[str, Any]:
        return make_update(creds or self.proxy, cas or CASet.of(public_cas(self.root)),
                           now or self.root.now())

    async def stored(self, ca_type: CertAuthorityType) -> CertAuthority:
        res = await self.leaf.store.get(Kind.CERT_AUTHORITY, ca_resource_name(ca_type, "root"))
        return CertAuthority.from_dict(res.spec)

    def audited(self, success: bool) -> list[Mapping[str, Any]]:
        return [e.to_dict() for e in self.events.events
                if e.type == EVENT and e.success is success]


@pytest.fixture
async def world() -> World:
    root = await _server("root")
    events = MemoryEmitter()
    leaf = await _server("leaf", events)
    await trust_root(leaf.store, root)  # what the trusted-cluster handshake stores
    return World(root, leaf, events, host_credentials(root, SystemRole.PROXY, "root-proxy"))


async def test_a_key_added_at_the_root_is_stored_and_audited(world: World) -> None:
    cas, new_key = with_new_user_key(world.root)
    assert await apply_root_cas(world.leaf, "root", world.update(cas), relayed_by="leaf-proxy")
    user = await world.stored(CertAuthorityType.USER)
    assert new_key in user.ssh_public_keys()
    assert len(user.ssh_public_keys()) == 2
    assert not user.has_private_key
    [event] = world.audited(True)
    assert event["root_cluster"] == "root"
    assert event["signer"] == "root-proxy"
    assert event["proxy"] == "leaf-proxy"
    assert len(event["cas"]["user"]["added"]) == 1
    assert event["cas"]["user"]["removed"] == []
    assert not await apply_root_cas(world.leaf, "root", world.update(cas))  # same set: no-op
    assert len(world.audited(True)) == 1


async def test_the_old_key_is_dropped_when_the_root_drops_it(world: World) -> None:
    cas, new_key = with_new_user_key(world.root)
    await apply_root_cas(world.leaf, "root", world.update(cas))
    only_new = CASet(user=(new_key,), host=cas.host, tls=cas.tls)
    later = world.root.now() + timedelta(seconds=1)
    assert await apply_root_cas(world.leaf, "root", world.update(only_new, now=later))
    assert (await world.stored(CertAuthorityType.USER)).ssh_public_keys() == (new_key,)


async def _refused(world: World, update: Any, error: type[Exception], words: str,
                   root: str = "root") -> None:
    before = {t: (await world.stored(t)).to_dict() for t in TYPES}
    with pytest.raises(error, match=words):
        await apply_root_cas(world.leaf, root, update)
    assert {t: (await world.stored(t)).to_dict() for t in TYPES} == before
    refused = world.audited(False)
    assert refused
    assert refused[-1]["root_cluster"] == root
    assert refused[-1]["code"] == "L6005W"


async def test_an_update_naming_another_cluster_is_refused(world: World) -> None:
    other = await _server("other")
    update = make_update(host_credentials(other, SystemRole.PROXY, "other-proxy"),
                         CASet.of(public_cas(other)), other.now())
    await _refused(world, update, AccessDenied, "naming cluster 'other' came by the link of "
                                                "root cluster 'root'")


async def test_an_empty_key_list_is_refused(world: World) -> None:
    cas = CASet.of(public_cas(world.root))
    await _refused(world, world.update(CASet(user=(), host=cas.host, tls=cas.tls)),
                   BadParameter, "zero user CA keys")
    await _refused(world, world.update(CASet(user=cas.user, host=cas.host, tls="")),
                   BadParameter, "zero TLS CA certificates")


async def test_a_malformed_key_is_refused_as_a_whole(world: World) -> None:
    cas, _ = with_new_user_key(world.root)
    broken = CASet(user=(cas.user[0], "ssh-ed25519 AAAAnot-a-key"), host=cas.host, tls=cas.tls)
    await _refused(world, world.update(broken), BadParameter, "cas")


async def test_a_partial_set_is_refused(world: World) -> None:
    update = world.update()
    del update["cas"]["tls"]
    await _refused(world, update, BadParameter, "tls")
    update = world.update()
    del update["cas"]
    await _refused(world, update, BadParameter, "no CA set")


async def test_a_private_key_is_refused(world: World) -> None:
    update = world.update()
    update["cas"]["tls"] += private_key_to_pem(generate_private_key("ecdsa-p256"))
    await _refused(world, update, BadParameter, "private key")


async def test_a_tampered_set_is_refused(world: World) -> None:
    update = world.update()
    _, new_key = with_new_user_key(world.root)
    update["cas"]["user"].append(new_key)  # a key the root never sent
    await _refused(world, update, AccessDenied, "signature does not verify")


async def test_a_signer_that_is_not_a_proxy_of_the_root_is_refused(world: World) -> None:
    node = host_credentials(world.root, SystemRole.NODE, "root-node")
    await _refused(world, world.update(creds=node), AccessDenied, "not by a proxy of root")
    impostor = await _server("root")  # another CA claiming the root's name
    forged = make_update(host_credentials(impostor, SystemRole.PROXY, "root-proxy"),
                         CASet.of(public_cas(impostor)), impostor.now())
    await _refused(world, forged, AccessDenied, "untrusted CA")


async def test_an_update_from_the_future_is_refused(world: World) -> None:
    cas, _ = with_new_user_key(world.root)
    update = world.update(cas, now=world.root.now() + timedelta(hours=1))
    await _refused(world, update, AccessDenied, "in the future")


async def test_a_replayed_older_update_is_refused(world: World) -> None:
    first, new_key = with_new_user_key(world.root)
    old = world.update(first)
    only_new = CASet(user=(new_key,), host=first.host, tls=first.tls)
    later = world.root.now() + timedelta(seconds=1)
    await apply_root_cas(world.leaf, "root", old)
    await apply_root_cas(world.leaf, "root", world.update(only_new, now=later))
    await _refused(world, copy.deepcopy(old), AccessDenied, "replay")
    assert (await world.stored(CertAuthorityType.USER)).ssh_public_keys() == (new_key,)


async def test_an_update_for_a_disabled_trusted_cluster_is_refused(world: World) -> None:
    trusted = await world.leaf.store.get(Kind.TRUSTED_CLUSTER, "root")
    await world.leaf.store.update(trusted.replace(spec={**trusted.spec, "enabled": False}))
    cas, _ = with_new_user_key(world.root)
    await _refused(world, world.update(cas), AccessDenied, "disabled or gone")


async def test_an_unknown_root_is_refused(world: World) -> None:
    with pytest.raises(AccessDenied, match="not a trusted root"):
        await apply_root_cas(world.leaf, "stranger", world.update())


def test_check_update_needs_every_field(world: World) -> None:
    keys = world.root.authorities.get(CertAuthorityType.HOST).trusted_public_keys()
    now = datetime.now(UTC)
    for field in ("issued_at", "cert", "signature"):
        update = world.update()
        del update[field]
        with pytest.raises(BadParameter):
            check_update(update, "root", keys, now)
    with pytest.raises(BadParameter):
        check_update(["not", "an", "object"], "root", keys, now)


def test_the_tunnel_message_carries_the_update(world: World) -> None:
    update = world.update()
    frame = encode(RootCAs(update=update))
    decoded = decode_message(frame[4:])
    assert isinstance(decoded, RootCAs)
    assert decoded.update == update
    with pytest.raises(BadParameter):
        decode_message(b'{"type":"cas","update":[1]}')


async def test_the_root_proxy_reads_its_cas_from_auths_answer(world: World) -> None:
    answer = {f"{t.value}_ca": ca.to_dict() for t, ca in public_cas(world.root).items()}
    assert own_cas(answer, "root") == CASet.of(public_cas(world.root))
    with pytest.raises(BadParameter):
        own_cas(answer, "leaf")
    private = {**answer, "user_ca": world.root.authorities.get(CertAuthorityType.USER).to_dict()}
    with pytest.raises(BadParameter, match="public"):
        own_cas(private, "root")


async def test_every_reader_at_the_leaf_follows_an_update(world: World, tmp_path: Path) -> None:
    """The auth process's trust cache (the reconciler's watch of the root CAs, alone here: no
    TrustedCluster change refreshes it) and the trust answer that nodes and proxies apart from
    auth poll both carry the new key."""
    reconciler = TrustedClusterReconciler(world.leaf, secrets=SecretSource(tmp_path / "s"))
    watch = asyncio.create_task(reconciler._watch_cas())
    try:
        def user_keys() -> tuple[str, ...]:
            root = reconciler.cache.roots.get("root")
            return root.user_ca.ssh_public_keys() if root is not None else ()

        async with asyncio.timeout(5):
            while not user_keys():  # the watch's first read
                await reconciler.cache.wait_changed(1.0)
        cas, new_key = with_new_user_key(world.root)
        assert await apply_root_cas(world.leaf, "root", world.update(cas))
        async with asyncio.timeout(5):
            while new_key not in user_keys():
                await reconciler.cache.wait_changed(1.0)
        [root] = (await trust_answer(world.leaf))["roots"]
        assert new_key in [root["cas"]["user"]["active"]["public_key"],
                           *(k["public_key"] for k in root["cas"]["user"]["additional_trusted"])]
    finally:
        await cancel_and_wait(watch)


class _FlakyAuth:
    """Stands for the leaf proxy's auth client: unreachable ``failures`` times, then it
    answers (or refuses with ``refusal``)."""

    def __init__(self, failures: int, refusal: Exception | None = None) -> None:
        self.failures, self.refusal = failures, refusal
        self.calls: list[tuple[str, Any]] = []

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        self.calls.append((path, body))
        if len(self.calls) <= self.failures:
            raise ConnectionProblem("auth is restarting")
        if self.refusal is not None:
            raise self.refusal
        return {"changed": True}


@dataclass
class _Proxy:
    auth: _FlakyAuth


def _links(auth: _FlakyAuth, world: World) -> LeafLinks:
    cache = TrustCache(world.leaf.store, lambda: "leaf")
    return LeafLinks(cache, lambda: _Proxy(auth), MemoryEmitter(),  # type: ignore[arg-type,return-value]
                     backoff=lambda: Backoff(0.01, 0.02))


async def test_the_leaf_proxy_hands_an_update_to_auth_until_it_answers(world: World) -> None:
    auth = _FlakyAuth(failures=2)
    links = _links(auth, world)
    update = world.update()
    links.relay.hand("root", update)
    async with asyncio.timeout(5):
        await links.relay.pending["root"]
    assert auth.calls == [("/v1/trust/roots/root/cas", update)] * 3


async def test_a_refused_update_is_not_retried_and_a_newer_one_replaces_a_pending_one(
        world: World) -> None:
    auth = _FlakyAuth(failures=1, refusal=AccessDenied("wrong cluster"))
    links = _links(auth, world)
    links.relay.hand("root", {"n": 1})
    links.relay.hand("root", {"n": 2})  # before the first was handed
    async with asyncio.timeout(5):
        await links.relay.pending["root"]
    assert [body for _path, body in auth.calls] == [{"n": 2}, {"n": 2}]
    assert "root" not in links.relay.pending
