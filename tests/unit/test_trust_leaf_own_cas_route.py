"""The root auth's route of a leaf's own CA update (``POST /v1/trust/leaves/{leaf}/cas``, from
the root proxy relaying the leaf's cluster link) and the leaf proxy's publisher of its own CAs
(``limen.proxy.trust_leaf_own_cas``): what it signs and when it sends it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from root_ca_env import admit_leaf, host_credentials, public_cas, with_new_user_key

from limen.api.resources import Kind
from limen.auth.auth_service import AuthService
from limen.auth.authorities import ca_resource_name
from limen.auth.client import AuthClient
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.ca_update import Direction, check_update, make_update
from limen.auth.trusted_clusters.wire import CASet
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import SystemRole
from limen.config import ClusterSettings, Listeners, Settings
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter
from limen.events.filelog import FileLog
from limen.proxy.trust_leaf_own_cas import LeafCAPublisher
from limen.tunnel.protocol import LeafCAs, Message, Welcome, decode_message, encode

PATH = "/v1/trust/leaves/leaf/cas"


@dataclass
class Root:
    service: AuthService
    leaf: AuthServer

    def client(self, role: SystemRole) -> AuthClient:
        return AuthClient(self.service.address,
                          self.service.issue_local_credentials(role, ["127.0.0.1"]))

    def update(self, cas: CASet | None = None) -> dict[str, object]:
        proxy = host_credentials(self.leaf, SystemRole.PROXY, "leaf-proxy")
        return make_update(proxy, cas or CASet.of(public_cas(self.leaf)), self.leaf.now(),
                           Direction.LEAF_TO_ROOT)

    async def user_keys(self) -> tuple[str, ...]:
        res = await self.service.server.store.get(
            Kind.CERT_AUTHORITY, ca_resource_name(CertAuthorityType.USER, "leaf"))
        return CertAuthority.from_dict(res.spec).ssh_public_keys()


@pytest.fixture
async def root(tmp_path: Path) -> AsyncIterator[Root]:
    leaf = AuthServer(MemoryBackend(), ClusterSettings(name="leaf"), MemoryEmitter())
    await leaf.start()
    log = FileLog(tmp_path / "events")
    service = AuthService(Settings(data_dir=tmp_path, cluster=ClusterSettings(name="root"),
                                   listeners=Listeners(auth="127.0.0.1:0")),
                          MemoryBackend(), log)
    await service.start()
    try:
        await admit_leaf(service.server, leaf)
        yield Root(service, leaf)
    finally:
        await service.stop()
        log.close()


async def test_a_proxy_hands_in_a_leafs_update(root: Root) -> None:
    cas, new_key = with_new_user_key(root.leaf)
    async with root.client(SystemRole.PROXY) as client:
        assert await client.call("POST", PATH, root.update(cas)) == {"changed": True}
        assert await client.call("POST", PATH, root.update(cas)) == {"changed": False}
    assert new_key in await root.user_keys()


@pytest.mark.parametrize("role", [SystemRole.NODE, SystemRole.DB, SystemRole.KUBE])
async def test_other_processes_of_the_root_are_refused(root: Root, role: SystemRole) -> None:
    cas, new_key = with_new_user_key(root.leaf)
    async with root.client(role) as client:
        with pytest.raises(AccessDenied, match="may not call"):
            await client.call("POST", PATH, root.update(cas))
    assert new_key not in await root.user_keys()


async def test_another_leafs_name_garbage_or_an_unknown_leaf_is_refused(root: Root) -> None:
    before = await root.user_keys()
    async with root.client(SystemRole.PROXY) as client:
        with pytest.raises(AccessDenied, match="came by the link of leaf cluster 'leaf'"):
            await client.call("POST", PATH, {**root.update(), "cluster": "other"})
        with pytest.raises(BadParameter):
            await client.call("POST", PATH, {**root.update(), "cas": {"user": "x"}})
        with pytest.raises(AccessDenied, match="not an admitted leaf"):
            await client.call("POST", "/v1/trust/leaves/nobody/cas", root.update())
    assert await root.user_keys() == before


@dataclass
class _Link:
    """Stands for a cluster link's tunnel agent: up or not, its connection count, what it
    was sent."""

    connected: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0
    sent: list[Message] = field(default_factory=list)
    takes_leaf_cas: bool = True
    """What the root proxy's welcome said (an older root says nothing: False)."""

    def welcome(self) -> None:
        self.connections += 1
        self.connected.set()

    def send(self, message: Message) -> bool:
        if not self.connected.is_set():
            return False
        self.sent.append(message)
        return True


async def test_the_leaf_proxy_signs_once_and_sends_on_change_and_after_reconnection() -> None:
    leaf = AuthServer(MemoryBackend(), ClusterSettings(name="leaf"), MemoryEmitter())
    await leaf.start()
    creds = host_credentials(leaf, SystemRole.PROXY, "leaf-proxy")
    own: list[tuple[CASet, object]] = [(CASet.of(public_cas(leaf)), creds)]
    links = {"root": _Link(), "second": _Link()}
    publisher = LeafCAPublisher(lambda: own[0], lambda: links)  # type: ignore[arg-type,return-value]
    assert publisher.publish_once() == []  # no link is up
    links["root"].welcome()
    assert publisher.publish_once() == ["root"]
    assert publisher.publish_once() == []  # sent on this connection already
    [message] = links["root"].sent
    assert isinstance(message, LeafCAs)
    keys = leaf.authorities.get(CertAuthorityType.HOST).trusted_public_keys()
    checked = check_update(message.update, "leaf", keys, leaf.now(), Direction.LEAF_TO_ROOT)
    assert checked.signer == "leaf-proxy"
    with pytest.raises(AccessDenied, match="signature does not verify"):  # not the other way
        check_update(message.update, "leaf", keys, leaf.now(), Direction.ROOT_TO_LEAF)
    links["second"].welcome()
    links["root"].welcome()  # reconnected: its new connection gets it again
    assert sorted(publisher.publish_once()) == ["root", "second"]
    assert links["root"].sent == [message, message]
    cas, new_key = with_new_user_key(leaf)  # a rotation's init here
    own[0] = (cas, creds)
    assert sorted(publisher.publish_once()) == ["root", "second"]
    assert new_key in links["second"].sent[-1].update["cas"]["user"]  # type: ignore[union-attr]
    del links["second"]
    assert publisher.publish_once() == []
    links["older"] = _Link(takes_leaf_cas=False)  # a root that would drop the link
    links["older"].welcome()
    assert publisher.publish_once() == []
    assert links["older"].sent == []


def test_a_roots_welcome_says_it_takes_leaf_cas_and_an_older_ones_does_not() -> None:
    welcome = Welcome(cert="c", proxy_id="p", cluster="root", leaf_cas=True)
    decoded = decode_message(encode(welcome)[4:])
    assert isinstance(decoded, Welcome)
    assert decoded.leaf_cas
    older = decode_message(b'{"type":"welcome","cert":"c","proxy_id":"p","cluster":"root",'
                           b'"heartbeat_interval":10}')
    assert isinstance(older, Welcome)
    assert not older.leaf_cas
    with pytest.raises(BadParameter, match="leaf_cas"):
        decode_message(b'{"type":"welcome","cert":"c","proxy_id":"p","cluster":"root",'
                       b'"heartbeat_interval":10,"leaf_cas":"yes"}')
