"""Pure parts of trusted-cluster links and routing: the cluster suffix of a target, the root's
tunnel address from its ping, a leaf heartbeat's node list, the claimed cluster of a
certificate, the dial's certificate field on the wire; and the root auth's record of its leaves
(online/offline with audit, visibility by cluster_labels, node lists)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from limen.api.resources import Kind, Resource
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters import root_leaves
from limen.auth.trusted_clusters.root_handshake import validate_trusted_cluster
from limen.auth.trusted_clusters.wire import CASet, ValidateRequest
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key
from limen.ca.ssh_certs import sign_host_cert
from limen.client.clusters import cluster_rows, known_hosts_lines, leaf_host
from limen.client.profile import Profile
from limen.config import ClusterSettings
from limen.errors import BadParameter, NotFound
from limen.events.emitter import MemoryEmitter
from limen.proxy.trust_leaf_links import tunnel_address_from_ping
from limen.proxy.trust_root_routes import split_cluster_suffix
from limen.rbac.roleset import RoleSet
from limen.tunnel.clusters import claimed_cluster, parse_nodes
from limen.tunnel.protocol import KIND_NODE, Decoder, Dial, DialRequest, encode, new_nonce


@pytest.mark.parametrize(("host", "clusters", "expected"), [
    ("web1.leaf", ["leaf"], ("web1", "leaf")),
    ("web1.eu.leaf", ["leaf", "eu.leaf"], ("web1", "eu.leaf")),   # the longest name wins
    ("web1.example.com", ["leaf"], ("web1.example.com", None)),
    ("leaf", ["leaf"], ("leaf", None)),                           # a bare name is a host
    (".leaf", ["leaf"], (".leaf", None)),
])
def test_split_cluster_suffix(host: str, clusters: list[str],
                              expected: tuple[str, str | None]) -> None:
    assert split_cluster_suffix(host, clusters) == expected


@pytest.mark.parametrize(("proxy", "tunnel", "expected"), [
    ("root.example:3080", "0.0.0.0:3024", "root.example:3024"),
    ("10.1.2.3:443", "[::]:3024", "10.1.2.3:3024"),
    ("root.example:3080", "127.0.0.1:41000", "127.0.0.1:41000"),
])
def test_tunnel_address_from_ping(proxy: str, tunnel: str, expected: str) -> None:
    assert tunnel_address_from_ping(proxy, {"tunnel": tunnel}) == expected


def test_a_ping_without_a_tunnel_says_what_to_set() -> None:
    with pytest.raises(BadParameter, match=r"spec\.tunnel_address"):
        tunnel_address_from_ping("root:3080", {"cluster": "root"})


def test_parse_nodes_keeps_names_and_string_labels_only() -> None:
    nodes = parse_nodes({"nodes": [
        {"name": "web1", "hostname": "web1", "host_id": "h1", "labels": {"env": "dev", "n": 3},
         "address": "10.0.0.1:22"},
        {"hostname": "nameless"}, "garbage", {"name": "x" * 300}]})
    assert nodes[0] == {"name": "web1", "hostname": "web1", "host_id": "h1",
                        "labels": {"env": "dev"}}
    assert len(nodes) == 2
    assert len(nodes[1]["name"]) == 256
    assert parse_nodes({"nodes": "no"}) == ()


def test_claimed_cluster_reads_the_unverified_claim() -> None:
    ca = CertAuthority.generate("leaf", CertAuthorityType.HOST)
    cert = sign_host_cert(ca, generate_private_key().public_key(), "p1", "p1", [],
                          timedelta(hours=1), SystemRole.PROXY)
    assert claimed_cluster(cert.decode()) == "leaf"
    assert claimed_cluster("ssh-ed25519 AAAA") == ""


def test_the_users_certificate_travels_with_a_dial() -> None:
    dial = Dial(DialRequest(kind=KIND_NODE, target="web1:3022", user="alice",
                            cert="ssh-ed25519-cert-v01@openssh.com AAAA", nonce=new_nonce()))
    (decoded,) = Decoder().feed(encode(dial))
    assert decoded == dial
    legacy = encode(Dial(DialRequest(kind=KIND_NODE, nonce=new_nonce())))
    (old,) = Decoder().feed(legacy)
    assert isinstance(old, Dial)
    assert old.request.cert == ""


def test_client_side_names() -> None:
    assert leaf_host("web1", "leaf") == "web1.leaf"
    assert leaf_host("web1.leaf", "leaf") == "web1.leaf"
    leaves = [{"name": "leaf", "connection": "online", "labels": {"env": "x"},
               "host_ca_keys": ["ssh-ed25519 AAAAkey"]}]
    assert known_hosts_lines(leaves) == ["@cert-authority *.leaf ssh-ed25519 AAAAkey"]
    profile = Profile(proxy="p:1", user="alice", cluster="root", expires="2100-01-01T00:00:00")
    rows = cluster_rows(profile, leaves)
    assert [(r["name"], r["type"], r["connection"]) for r in rows] == [
        ("root", "root", "online"), ("leaf", "leaf", "online")]


# ---------------------------------------------------------------------- root auth


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def root() -> tuple[AuthServer, MemoryEmitter, Clock]:
    clock = Clock()
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(clock=clock, sweep_interval=None),
                      ClusterSettings(name="root"), emitter, clock=clock)
    await auth.start()
    cas = CASet.of({t: CertAuthority.generate("leaf", t).public_only() for t in
                    (CertAuthorityType.USER, CertAuthorityType.HOST, CertAuthorityType.TLS)})
    token, _ = await auth.create_token("trusted_cluster", timedelta(hours=1), actor="admin",
                                       labels={"env": "prod"})
    await validate_trusted_cluster(auth, ValidateRequest(token, "leaf", cas))
    return auth, emitter, clock


def _types(emitter: MemoryEmitter, kind: str) -> list[dict[str, Any]]:
    return [dict(e.fields) for e in emitter.events if e.type.value == kind]


async def test_heartbeats_keep_a_leaf_online_until_they_stop(
        root: tuple[AuthServer, MemoryEmitter, Clock]) -> None:
    auth, emitter, clock = root
    remote = await auth.store.get(Kind.REMOTE_CLUSTER, "leaf")
    assert root_leaves.connection_of(remote, auth.now()) == "offline"
    await root_leaves.cluster_heartbeat(auth, "leaf", "proxy-1", [{"name": "web1"}])
    await root_leaves.cluster_heartbeat(auth, "leaf", "proxy-1", [{"name": "web1"}])
    remote = await auth.store.get(Kind.REMOTE_CLUSTER, "leaf")
    assert remote.spec["connection"] == "online"
    assert root_leaves.connection_of(remote, auth.now()) == "online"
    assert len(_types(emitter, "remote_cluster.online")) == 1  # only the transition
    clock.now += root_leaves.REMOTE_TTL + 1  # a dead root proxy cannot keep it online
    assert root_leaves.connection_of(remote, auth.now()) == "offline"
    await root_leaves.cluster_heartbeat(auth, "leaf", "proxy-1", [])
    await root_leaves.cluster_offline(auth, "leaf", "proxy-2")  # not the link holder
    remote = await auth.store.get(Kind.REMOTE_CLUSTER, "leaf")
    assert remote.spec["connection"] == "online"
    await root_leaves.cluster_offline(auth, "leaf", "proxy-1")
    remote = await auth.store.get(Kind.REMOTE_CLUSTER, "leaf")
    assert root_leaves.connection_of(remote, auth.now()) == "offline"
    assert _types(emitter, "remote_cluster.offline") == [
        {"remote_cluster": "leaf", "proxy": "proxy-1"}]


async def test_a_heartbeat_for_an_unknown_leaf_is_not_found(
        root: tuple[AuthServer, MemoryEmitter, Clock]) -> None:
    auth, _emitter, _clock = root
    with pytest.raises(NotFound):
        await root_leaves.cluster_heartbeat(auth, "stranger", "proxy-1", [])


def _roles(*allow_labels: dict[str, Any]) -> RoleSet:
    return RoleSet.from_roles([Resource(Kind.ROLE, f"r{i}", spec={"allow": {
        "cluster_labels": labels, "logins": ["x"]}}) for i, labels in enumerate(allow_labels)],
        {})


async def test_users_see_the_leaves_their_cluster_labels_allow(
        root: tuple[AuthServer, MemoryEmitter, Clock]) -> None:
    auth, _emitter, _clock = root
    await root_leaves.cluster_heartbeat(auth, "leaf", "proxy-1",
                                            [{"name": "web1", "labels": {"env": "prod"}}])
    alice = Identity("alice", "root", roles=("r0",))
    (leaf,) = await root_leaves.visible_clusters(auth, alice, _roles({"env": "prod"}))
    assert (leaf["name"], leaf["connection"], leaf["labels"]) == ("leaf", "online",
                                                                  {"env": "prod"})
    assert leaf["host_ca_keys"][0].startswith("ssh-ed25519 ")
    (node,) = await root_leaves.cluster_nodes(auth, alice, _roles({"env": "prod"}), "leaf")
    assert (node["hostname"], node["cluster"], node["logins"]) == ("web1", "leaf", [])
    assert await root_leaves.visible_clusters(auth, alice, _roles({"env": "dev"})) == []
    with pytest.raises(NotFound):  # hidden exactly like an unknown cluster
        await root_leaves.cluster_nodes(auth, alice, _roles({"env": "dev"}), "leaf")
    assert len(await root_leaves.visible_clusters(auth, alice, None)) == 1  # admin
