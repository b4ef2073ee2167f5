"""Trusted clusters' security rules, each as an attack that must be refused AND audited.

In process, on 127.0.0.1, with real parts: two clusters' CAs ("root" and "leaf"), the root
proxy's real ``TunnelServer`` (the leaf's host CA as its remote trust), the leaf proxy's real
``TunnelAgent`` cluster link or a hand-driven SSH control connection playing a compromised leaf,
and the leaf's real node agent (``NodeSSHServer``) trusting the root's user CA under a role map.

* a certificate's cluster must match the CA that signed it: a leaf-signed proxy certificate
  claiming the root, a root-signed one claiming the leaf, a leaf-signed USER certificate
  claiming the root and a root-signed one claiming the leaf are all refused;
* a root user whose roles map to nothing on the leaf gets no session there;
* root-mapped identities cannot administer the leaf (no rules unless mapped explicitly; the
  leaf's auth API does not even accept their certificates);
* a used or an expired trusted_cluster token cannot join again;
* a compromised leaf cannot use its link to reach the root's auth or the root's nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from limen.agents.node import NodeServerConfig, NodeSSHServer, StoreAccessPolicy
from limen.api.resources import Kind, Resource
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.root_handshake import validate_trusted_cluster
from limen.auth.trusted_clusters.wire import CASet, ValidateRequest
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType, ssh_trust_map
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import (
    generate_private_key,
    private_key_to_openssh,
    private_key_to_pem,
    public_key_to_openssh,
)
from limen.ca.ssh_certs import sign_host_cert, sign_user_cert
from limen.ca.ssh_peer import host_key
from limen.config import ClusterSettings
from limen.errors import AccessDenied, ConnectionProblem
from limen.events.emitter import MemoryEmitter
from limen.events.event import AuditEvent
from limen.recording.sink import LocalDirectorySink, recordings_dir
from limen.services.resource_store import ResourceStore
from limen.trust.rolemap import map_roles
from limen.tunnel import DialRequest, TunnelAgent, TunnelAgentSettings, TunnelServer
from limen.tunnel.clusters import ClusterRecord
from limen.tunnel.protocol import (
    CONTROL_SUBSYSTEM,
    KIND_AUTH,
    KIND_NODE,
    Connect,
    Decoder,
    Dial,
    Hello,
    Welcome,
    encode,
    new_nonce,
)

HOUR = timedelta(hours=1)
LOGIN = getpass.getuser()
DEADLINE = 10.0
ROLE_MAP = [{"remote": "ops", "local": ["visitor"]}, {"remote": "boss", "local": ["admin"]}]


def _creds(ca: CertAuthority, host_id: str, role: SystemRole, *,
           user_ca: CertAuthority | None = None) -> HostCredentials:
    """Host credentials signed by ``ca`` (whose cluster the identity claims)."""
    key = generate_private_key()
    cert = sign_host_cert(ca, key.public_key(), host_id, host_id, ["127.0.0.1"], HOUR, role)
    return HostCredentials(
        cluster=ca.cluster, host_id=host_id, role=role.value,
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=b"", tls_ca_pem=b"",
        ssh_cert=cert, host_ca_keys=ca.ssh_public_keys(),
        user_ca_keys=user_ca.ssh_public_keys() if user_ca else ())


def _impostor(real: CertAuthority, claimed: str) -> CertAuthority:
    """``real``'s key signing identities of cluster ``claimed`` (forged or misissued)."""
    return CertAuthority(claimed, real.type, real.active)


@dataclass
class Clusters:
    root_host: CertAuthority
    root_user: CertAuthority
    leaf_host: CertAuthority
    leaf_user: CertAuthority
    emitter: MemoryEmitter
    server: TunnelServer
    address: str
    heartbeats: list[ClusterRecord] = field(default_factory=list)
    node_dials: list[DialRequest] = field(default_factory=list)
    agents: list[TunnelAgent] = field(default_factory=list)

    def leaf_proxy(self) -> HostCredentials:
        return _creds(self.leaf_host, "leaf-proxy", SystemRole.PROXY)

    async def link(self, creds: HostCredentials) -> TunnelAgent:
        """A leaf proxy's cluster link with ``creds`` (the root's host CA as its peer)."""
        agent = TunnelAgent(self.address, creds, None, lambda: {"nodes": [{"name": "web9"}]},
                            prepare=_never, settings=TunnelAgentSettings(
                                peer_trust={"root": self.root_host.trusted_public_keys()},
                                peer_cluster="root", heartbeat_interval=0.2))
        self.agents.append(agent)
        await agent.start()
        return agent

    async def refused(self, predicate: Callable[[AuditEvent], bool]) -> AuditEvent:
        return await self.emitter.wait_for(
            lambda e: not e.success and predicate(e), timeout=DEADLINE)


async def _never(request: DialRequest) -> Any:
    raise AccessDenied("this test's leaf serves nothing")


@pytest.fixture
async def clusters() -> AsyncIterator[Clusters]:
    root_host = CertAuthority.generate("root", CertAuthorityType.HOST)
    leaf_host = CertAuthority.generate("leaf", CertAuthorityType.HOST)

    async def remote_trust(cluster: str) -> tuple[Any, ...]:
        if cluster != "leaf":
            raise AccessDenied(f"no trusted cluster named {cluster!r} was admitted here")
        return leaf_host.trusted_public_keys()

    emitter = MemoryEmitter()
    world: Clusters
    server = TunnelServer(_creds(root_host, "root-proxy", SystemRole.PROXY), emitter=emitter,
                          remote_trust=remote_trust, dial_timeout=2.0, hello_timeout=5.0,
                          on_cluster_heartbeat=lambda r: _record(world.heartbeats, r))
    address = await server.start("127.0.0.1:0")
    world = Clusters(root_host, CertAuthority.generate("root", CertAuthorityType.USER),
                     leaf_host, CertAuthority.generate("leaf", CertAuthorityType.USER),
                     emitter, server, address)
    try:
        yield world
    finally:
        for agent in world.agents:
            await agent.stop()
        await server.stop()


async def _record(into: list[ClusterRecord], record: ClusterRecord) -> None:
    into.append(record)


# ---------------------------------------------------------------------- the cluster link


async def test_a_leaf_link_with_the_leafs_host_certificate_is_accepted(clusters: Clusters
                                                                        ) -> None:
    await clusters.link(clusters.leaf_proxy())
    await clusters.server.clusters.wait_for(lambda r: "leaf" in r, DEADLINE)
    record = clusters.server.clusters["leaf"]
    assert (record.cluster, record.proxy_id) == ("leaf", "leaf-proxy")
    assert len(clusters.server.registry) == 0  # a cluster is not a node
    await clusters.server.clusters.wait_for(lambda r: bool(r["leaf"].nodes), DEADLINE)
    assert clusters.server.clusters["leaf"].nodes[0]["name"] == "web9"


@pytest.mark.parametrize(("signer", "claimed", "why"), [
    ("leaf", "root", "signed by an untrusted CA"),   # a leaf posing as the root's proxy
    ("root", "leaf", "signed by an untrusted CA"),   # the root's key posing as the leaf
    ("leaf", "other", "no trusted cluster named 'other'"),  # a cluster never admitted
])
async def test_a_link_certificate_of_the_wrong_cluster_is_refused(
        clusters: Clusters, signer: str, claimed: str, why: str) -> None:
    real = clusters.leaf_host if signer == "leaf" else clusters.root_host
    creds = _creds(_impostor(real, claimed), "intruder", SystemRole.PROXY)
    agent = await clusters.link(creds)
    event = await clusters.refused(lambda e: e.type.value == "auth"
                                   and why in str(e.fields.get("reason")))
    assert event.fields["listener"] == "tunnel"
    assert "leaf" not in clusters.server.clusters
    assert "other" not in clusters.server.clusters
    assert not agent.connected.is_set()


async def _raw_link(address: str, creds: HostCredentials) -> tuple[Any, Any, Any]:
    """A compromised leaf: a valid cluster link driven by hand (any message it likes)."""
    host, port = address.rsplit(":", 1)
    key, _cert = host_key(creds)
    conn = await asyncssh.connect(host, int(port), username=creds.host_id, client_keys=[key],
                                  known_hosts=None, agent_path=None, config=None,
                                  preferred_auth="publickey")
    writer, reader, _err = await conn.open_session(subsystem=CONTROL_SUBSYSTEM, encoding=None)
    writer.write(encode(Hello(cert=creds.ssh_cert.decode())))
    decoder = Decoder()
    async with asyncio.timeout(DEADLINE):
        while not (messages := decoder.feed(await reader.read(65536))):
            pass
    assert isinstance(messages[0], Welcome)
    return conn, writer, reader


@pytest.mark.parametrize("request_kind", ["connect to auth", "dial a root node"])
async def test_a_compromised_leaf_cannot_use_its_link_to_reach_the_root(
        clusters: Clusters, request_kind: str) -> None:
    node = _creds(clusters.root_host, "root-node", SystemRole.NODE)

    async def root_node(sock: socket.socket, request: DialRequest) -> None:
        clusters.node_dials.append(request)
        sock.close()

    agent = TunnelAgent(clusters.address, node, root_node, lambda: {})
    clusters.agents.append(agent)
    await agent.start()
    await clusters.server.registry.wait_for(lambda r: "root-node" in r, DEADLINE)
    conn, writer, reader = await _raw_link(clusters.address, clusters.leaf_proxy())
    await clusters.server.clusters.wait_for(lambda r: "leaf" in r, DEADLINE)
    if request_kind == "connect to auth":
        writer.write(encode(Connect(1, KIND_AUTH)))
    else:
        writer.write(encode(Dial(DialRequest(kind=KIND_NODE, target="root-node",
                                             nonce=new_nonce()))))
    event = await clusters.refused(lambda e: e.type.value == "access.denied")
    assert event.fields["remote_cluster"] == "leaf"
    assert "may not ask the root for anything" in event.fields["reason"]
    async with asyncio.timeout(DEADLINE):  # the link is dropped
        while await reader.read(65536):
            pass
    conn.close()
    await clusters.server.clusters.wait_for(lambda r: "leaf" not in r, DEADLINE)
    assert clusters.node_dials == []
    assert "root-node" in clusters.server.registry  # the root's own agent is untouched


async def test_a_leaf_link_cannot_ask_for_auth_through_the_agent_api(clusters: Clusters
                                                                      ) -> None:
    """The same refusal through the real TunnelAgent's auth request."""
    agent = await clusters.link(clusters.leaf_proxy())
    await clusters.server.clusters.wait_for(lambda r: "leaf" in r, DEADLINE)
    with pytest.raises(ConnectionProblem):
        await agent.request_auth_nonce()
    await clusters.refused(lambda e: e.type.value == "access.denied"
                           and e.fields.get("request") == "connect")


# ---------------------------------------------------------------------- the leaf's node


@dataclass
class LeafNode:
    address: str
    emitter: MemoryEmitter
    host_key_line: str


def _role(name: str, allow: dict[str, Any]) -> Resource:
    return Resource(Kind.ROLE, name, spec={"allow": allow})


@pytest.fixture
async def leaf_node(clusters: Clusters, tmp_path: Path) -> AsyncIterator[LeafNode]:
    store = ResourceStore(MemoryBackend())
    await store.create(_role("visitor", {"logins": [LOGIN], "node_labels": {"*": "*"}}))
    await store.create(_role("admin", {"rules": [{"resources": ["*"], "verbs": ["*"]}]}))
    emitter = MemoryEmitter()
    creds = _creds(clusters.leaf_host, "leaf-node", SystemRole.NODE,
                   user_ca=clusters.leaf_user)
    # what the leaf's TrustCache gives its node: its own user CA and the trusted root's
    trust = ssh_trust_map([clusters.leaf_user, clusters.root_user], CertAuthorityType.USER)
    node = NodeSSHServer(
        NodeServerConfig(creds, {"env": "leaf"}, tmp_path / "node"), lambda: trust,
        StoreAccessPolicy(store, {"env": "leaf"}, cluster="leaf",
                          map_roles=lambda i: map_roles(i.roles, ROLE_MAP)
                          if i.cluster == "root" else []),
        emitter, LocalDirectorySink(recordings_dir(tmp_path / "node")))
    address = await node.listen("127.0.0.1:0")
    try:
        yield LeafNode(address, emitter, clusters.leaf_host.ssh_public_keys()[0])
    finally:
        await node.close()


async def _ssh(node: LeafNode, ca: CertAuthority, identity: Identity) -> str:
    key = generate_private_key()
    cert = sign_user_cert(ca, key.public_key(), identity, HOUR)
    host, port = node.address.rsplit(":", 1)
    async with asyncssh.connect(
            host, int(port), username=LOGIN, known_hosts=None, agent_path=None, config=None,
            client_keys=[(asyncssh.import_private_key(private_key_to_openssh(key)),
                          asyncssh.import_certificate(cert))]) as conn:
        result = await conn.run("echo inside", check=False)
        return str(result.stdout)


@pytest.mark.parametrize(("signer", "claimed"), [("leaf", "root"), ("root", "leaf")])
async def test_a_user_certificate_of_the_wrong_cluster_is_refused_by_the_leaf_node(
        clusters: Clusters, leaf_node: LeafNode, signer: str, claimed: str) -> None:
    real = clusters.leaf_user if signer == "leaf" else clusters.root_user
    forged = Identity("mallory", claimed, roles=("ops",), logins=(LOGIN,))
    with pytest.raises(asyncssh.PermissionDenied):
        await _ssh(leaf_node, _impostor(real, claimed), forged)
    event = await leaf_node.emitter.wait_for(lambda e: e.type.value == "auth"
                                             and not e.success, timeout=DEADLINE)
    assert f"claims cluster {claimed!r} but is signed by the user CA of {signer!r}" in \
        event.fields["reason"]


async def test_a_mapped_root_user_gets_a_session_on_the_leaf(clusters: Clusters,
                                                             leaf_node: LeafNode) -> None:
    alice = Identity("alice", "root", roles=("ops",), logins=(LOGIN,))
    assert (await _ssh(leaf_node, clusters.root_user, alice)).strip() == "inside"
    start = await leaf_node.emitter.wait_for(lambda e: e.type.value == "session.start",
                                             timeout=DEADLINE)
    assert (start.user, start.fields["user_cluster"]) == ("alice", "root")


async def test_a_root_user_whose_roles_map_to_nothing_gets_nothing(clusters: Clusters,
                                                                   leaf_node: LeafNode) -> None:
    bob = Identity("bob", "root", roles=("dev", "guest"), logins=(LOGIN,))
    with contextlib.suppress(asyncssh.Error):
        assert (await _ssh(leaf_node, clusters.root_user, bob)).strip() != "inside"
    denied = await leaf_node.emitter.wait_for(lambda e: e.type.value == "access.denied",
                                              timeout=DEADLINE)
    assert denied.user == "bob"
    assert "not mapped to roles of this cluster" in denied.fields["reason"]
    assert not [e for e in leaf_node.emitter.events if e.type.value == "session.start"]


async def test_root_mapped_identities_cannot_administer_the_leaf() -> None:
    store = ResourceStore(MemoryBackend())
    await store.create(_role("visitor", {"logins": [LOGIN], "node_labels": {"*": "*"}}))
    await store.create(_role("admin", {"rules": [{"resources": ["*"], "verbs": ["*"]}]}))
    await store.create(_role("ops", {"rules": [{"resources": ["*"], "verbs": ["*"]}]}))
    policy = StoreAccessPolicy(store, {}, cluster="leaf",
                               map_roles=lambda i: map_roles(i.roles, ROLE_MAP))
    # "ops" is an admin role on the leaf too, but a root "ops" maps to visitor only
    root_ops = await policy.role_set(Identity("alice", "root", roles=("ops",)))
    assert root_ops is not None
    for kind in (Kind.ROLE, Kind.USER, Kind.TRUSTED_CLUSTER, Kind.RESOURCE, "token"):
        for verb in ("list", "create", "delete"):
            assert not root_ops.check_rule(kind, verb).allowed
    # only an explicit mapping to a leaf role with rules grants them
    boss = await policy.role_set(Identity("carol", "root", roles=("boss",)))
    assert boss is not None
    assert boss.check_rule(Kind.ROLE, "create").allowed


async def test_the_leaf_auth_api_refuses_a_root_users_certificate(tmp_path: Path) -> None:
    """The leaf's auth API (and any mutual-TLS endpoint of the leaf) trusts only the leaf's
    TLS CA: a root user's client certificate does not complete the handshake."""
    from limen.auth.auth_service import AuthService
    from limen.config import Listeners, Settings
    from limen.events.filelog import FileLog

    leaf_dir, root_dir = tmp_path / "leaf", tmp_path / "root"
    logs = []
    services = []
    for name, data in (("leaf", leaf_dir), ("root", root_dir)):
        data.mkdir()
        log = FileLog(data / "events")
        logs.append(log)
        settings = Settings(data_dir=data, cluster=ClusterSettings(name=name),
                            listeners=Listeners(auth="127.0.0.1:0"))
        service = AuthService(settings, MemoryBackend(), log)
        await service.start()
        services.append(service)
    leaf, root = services
    try:
        key = generate_private_key()
        cert = root.server.issue_admin_cert(public_key_to_openssh(key.public_key()), HOUR)
        host, port = leaf.address.rsplit(":", 1)
        context = ssl.create_default_context(cadata=leaf.server.authorities.get(
            CertAuthorityType.TLS).pem_bundle())
        key_file, cert_file = tmp_path / "k.pem", tmp_path / "c.pem"
        key_file.write_bytes(private_key_to_pem(key).encode())
        cert_file.write_bytes(cert)
        context.load_cert_chain(cert_file, key_file)
        context.check_hostname = False
        reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
        writer.write(b"GET /v1/status HTTP/1.1\r\nHost: leaf\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(ssl.SSLError, ConnectionResetError):
            answer = await asyncio.wait_for(reader.read(), DEADLINE)
            assert not answer.startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        for service in services:
            await service.stop()
        for log in logs:
            log.close()


# ---------------------------------------------------------------------- the join token


async def test_a_used_or_expired_token_cannot_join_again() -> None:
    now = [1_900_000_000.0]
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(clock=lambda: now[0], sweep_interval=None),
                      ClusterSettings(name="root"), emitter, clock=lambda: now[0])
    await auth.start()
    cas = {t: CertAuthority.generate("leaf", t).public_only()
           for t in (CertAuthorityType.USER, CertAuthorityType.HOST, CertAuthorityType.TLS)}
    leaf_cas = CASet.of(cas)
    used, _ = await auth.create_token("trusted_cluster", timedelta(hours=1), actor="admin")
    await validate_trusted_cluster(auth, ValidateRequest(used, "leaf", leaf_cas))
    with pytest.raises(AccessDenied):  # used: another leaf cannot join with it
        await validate_trusted_cluster(auth, ValidateRequest(used, "leaf2", leaf_cas))
    expired, _ = await auth.create_token("trusted_cluster", timedelta(minutes=1),
                                         actor="admin")
    now[0] += 120
    with pytest.raises(AccessDenied):
        await validate_trusted_cluster(auth, ValidateRequest(expired, "leaf3", leaf_cas))
    refused = [e for e in emitter.events if e.type.value == "join" and not e.success]
    assert [e.fields["leaf_cluster"] for e in refused] == ["leaf2", "leaf3"]
    assert all(e.fields["reason"] for e in refused)
    assert await auth.store.find(Kind.REMOTE_CLUSTER, "leaf2") is None
    assert await auth.store.find(Kind.REMOTE_CLUSTER, "leaf3") is None
