"""Finding (critical): a node join token bought a TLS server certificate for any name. The
joiner chose the SANs (``proxy.example.com``, ``127.0.0.1``, ``10.66.66.66``, ``localhost``);
with that certificate a fake "proxy" served the cluster's CA chain and ``lmsh login`` sent
alice's password to it.

Against a real ``limen start --random-ports``: a node joining through the proxy and asking for
the proxy's names gets none of them (auth names a host by its id and ``hostname.<cluster>``,
and only a proxy gets the configured public names), and the join event records the ignored
addresses; a node token cannot join as a proxy (refused, audited). Then a fake proxy (a tiny
TLS server recording every byte it reads) presents a node certificate with the cluster's CA
chain and answers pings with the real CA: ``lmsh login --ca-pin`` refuses it before writing
the password, both with the certificate a join gives today and with a node certificate that
names 127.0.0.1, as joins issued them before this fix (signed here with the cluster's CA from
the stopped cluster's data directory: such certificates stay valid for 30 days).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from integration.cluster import ClusterFactory, LimenCluster, LimenUser, inspect_ssh_cert
from limen.auth.core import AuthServer
from limen.backend.factory import open_backend
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.config import ClusterSettings
from limen.events.emitter import MemoryEmitter

from .join_attacks import FakeProxy, join, sans

PROXY_NAMES = ["proxy.example.com", "127.0.0.1", "10.66.66.66", "localhost"]
NAME = "names"


@dataclass
class Site:
    cluster: LimenCluster
    alice: LimenUser
    pin: str
    ca_pem: str
    legacy_cert: str
    """A node certificate naming 127.0.0.1 and localhost, as joins issued them before."""
    legacy_key: ed25519.Ed25519PrivateKey


async def _legacy_node_certificate(cluster: LimenCluster) -> tuple[str, ed25519.Ed25519PrivateKey]:
    backend = open_backend(cluster.data_dir)
    try:
        server = AuthServer(backend, ClusterSettings(name=NAME), MemoryEmitter())
        await server.start(initialize=False)
        key = generate_private_key()
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        certs = server.issue_host_certs(str(uuid.uuid4()), "old-node", SystemRole.NODE,
                                        public_key_to_openssh(key.public_key()),
                                        PROXY_NAMES)  # what a join certified before the fix
        return certs.tls_cert.decode(), key
    finally:
        await backend.close()


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory) -> Site:
    cluster = module_clusters(NAME)
    cluster.stop()
    legacy_cert, legacy_key = asyncio.run(_legacy_node_certificate(cluster))
    cluster.start()
    alice = cluster.signed_up_user("alice", roles=("access",))
    status = cluster.status()
    ca_pem = (cluster.data_dir / "admin" / "cas.pem").read_text(encoding="utf-8")
    return Site(cluster, alice, status["ca_fingerprints"]["tls"], ca_pem, legacy_cert,
               legacy_key)


def _node_token(cluster: LimenCluster) -> str:
    token: str = cluster.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")["token"]
    return token


def test_a_node_token_buys_none_of_the_names_it_asks_for(site: Site) -> None:
    cluster = site.cluster
    key = ed25519.Ed25519PrivateKey.generate()
    status, answer = join(cluster, _node_token(cluster), hostname="evil", key=key,
                          addresses=[*PROXY_NAMES, cluster.web.rpartition(":")[0]])
    assert status == 200, answer
    host_id = answer["host_id"]
    assert sans(answer["tls_cert"]) == {host_id, f"evil.{NAME}"}
    principals = set(inspect_ssh_cert(_write(cluster, answer["ssh_cert"])).principals)
    assert principals == {host_id, f"{host_id}.{NAME}", "evil", f"evil.{NAME}"}
    [event] = [e for e in cluster.audit("join") if e.get("hostname") == "evil"]
    assert event["success"] is True
    assert event["dns_names"] == [host_id, f"evil.{NAME}"]
    assert event["ignored_addresses"][:4] == PROXY_NAMES


def test_a_node_token_does_not_join_as_a_proxy(site: Site) -> None:
    cluster = site.cluster
    status, answer = join(cluster, _node_token(cluster), role="proxy", hostname="fakeproxy",
                          addresses=PROXY_NAMES)
    assert status == 403, answer
    assert "join token is of type node, not proxy" in answer["error"]["message"]
    [event] = [e for e in cluster.audit("join") if e.get("hostname") == "fakeproxy"]
    assert (event["success"], event["role"]) == (False, "proxy")
    assert "type node" in event["reason"]


@pytest.mark.parametrize("which", ["joined today", "issued before the fix"])
def test_lmsh_refuses_a_fake_proxy_with_a_node_certificate(site: Site, which: str) -> None:
    cluster = site.cluster
    if which == "joined today":
        key = ed25519.Ed25519PrivateKey.generate()
        status, answer = join(cluster, _node_token(cluster), hostname="thief", key=key,
                              addresses=PROXY_NAMES)
        assert status == 200, answer
        cert = answer["tls_cert"]
    else:
        cert, key = site.legacy_cert, site.legacy_key
        assert {"127.0.0.1", "localhost"} <= sans(cert)
    victim = LimenUser("alice", site.alice.home.parent / f"alice-{which[:6]}",
                       cluster.web, password=site.alice.password)
    with FakeProxy(cert, key, site.ca_pem, NAME) as fake:
        result = victim.lmsh("login", "--proxy", fake.address, "--user", "alice",
                             "--password-stdin", "--otp", "123456", "--ca-pin", site.pin,
                             input=victim.password + "\n", check=False)
        assert result.returncode != 0, result.stdout
        assert fake.received, "the fake proxy was never reached"
        assert victim.password.encode() not in fake.everything
        assert all(r.startswith(b"GET /v1/webapi/ping") for r in fake.received)
    line = result.stderr.strip()
    assert "Traceback" not in line
    if which == "issued before the fix":
        assert f"{fake.address} is not the cluster's proxy" in line, line
        assert "a node's" in line
    assert not (victim.home / "keys").exists() or not any((victim.home / "keys").rglob("*cert*"))


def _write(cluster: LimenCluster, ssh_cert: str) -> Path:
    path = cluster.root / f"join-{uuid.uuid4().hex[:8]}-cert.pub"
    path.write_text(ssh_cert, encoding="utf-8")
    return path
