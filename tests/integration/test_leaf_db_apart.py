"""A leaf's database served by a db agent run apart from the leaf's auth, reached by root
users through the root's proxy (real processes).

::

    psql ──▶ root (auth, proxy, node) ──cluster link──▶ leaf (auth, proxy, node)
                                                          ▲ reverse tunnel
                                  leaf db agent (limen start --roles db --proxy LEAF)
                                                          ──▶ the session's PostgreSQL

The leaf trusts the root by a TrustedCluster whose role_map sends root ``ops`` to leaf
``leaf-dev`` (database pg-apart as alice). The db agent apart learns the root's TLS CA and
the role_map from the leaf's auth (``limen.trust.roots_poller.RemoteTrustCache``), verifies
the root user's certificate against that CA and decides with the mapped role:

* psql of root user alice reaches the database; the leaf audits the session (started by the
  agent apart, with the root user's name and cluster) and the query;
* a root user whose roles map to nothing (carol, role ``stranger``) is refused at the leaf,
  audited there with ``user_cluster`` root;
* a database certificate of a cluster nobody trusts, claiming to be the root's alice, is
  refused at the root's front and at the leaf's own front, audited at both.

The agent's own refusals (roles mapped to nothing, untrusted or forged CAs, the wrong CA
type, expiry, a certificate routed elsewhere, a trust disabled) are the unit test
``tests/unit/test_db_agent_root_users.py``: behind the leaf's proxy they cannot be reached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from dbservers import PostgresServer
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, RouteToDatabase
from limen.ca.keys import generate_private_key, private_key_to_pem
from limen.ca.x509_certs import sign_client_cert
from limen.net.address import parse_address

from .cluster import ClusterFactory, LimenCluster, describe, run, wait_for
from .leaf_people import (
    ROOT_ROLES,
    Person,
    ready_person,
    routed_login,
    start_agent_apart,
    trust_root_ops_only,
)

DEADLINE = 30.0
DATABASE = "pg-apart"

LEAF_ROLES = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: leaf-dev}
spec:
  allow:
    db_labels: {env: leaf}
    db_users: [alice]
    db_names: [app]
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: visitor}
spec:
  allow: {node_labels: {'*': '*'}}
"""


def leaf_database(pg: PostgresServer) -> str:
    return f"""
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: {DATABASE}, labels: {{env: leaf, served-by: apart}}}}
spec: {{kind: db, protocol: postgres, address: "127.0.0.1:{pg.port}"}}
"""


@dataclass
class World:
    root: LimenCluster
    leaf: LimenCluster
    agent: LimenCluster
    alice: Person
    """Root role ops: leaf-dev on the leaf."""
    carol: Person
    """Root role stranger: not in the role_map."""
    base: Path

    def leaf_audit(self, event_type: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.leaf.audit(event_type)
                if all(e.get(k) == v for k, v in match.items())]


def _listed(person: Person) -> set[str]:
    result = person.lmsh("db", "ls", "--cluster", "leaf", "-o", "json", check=False)
    if result.returncode != 0:
        return set()
    return {d["name"] for d in json.loads(result.stdout)["items"]}


@pytest.fixture(scope="module")
def world(module_clusters: ClusterFactory, postgres_server: PostgresServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("leafdbapart")
    found = postgres_server.tls_config
    try:
        root = module_clusters("root")
        leaf = module_clusters("leaf")
        root.lmctl("apply", "-f", "-", input=ROOT_ROLES)
        leaf.lmctl("apply", "-f", "-", input=LEAF_ROLES)
        server = base / "server"
        leaf.lmctl("auth", "sign", "--format", "db", "--host", "localhost,127.0.0.1",
                   "--out", server)
        cert, key, cas = (Path(f"{server}.{ext}").read_bytes() for ext in ("crt", "key", "cas"))
        postgres_server.configure_tls(cert, key, [cas, *(found[2] if found else ())])
        postgres_server.create_user("alice")
        postgres_server.create_database("app", owner="alice")
        leaf.lmctl("apply", "-f", "-", input=leaf_database(postgres_server))
        trust_root_ops_only(root, leaf)
        agent = start_agent_apart(module_clusters, base, leaf, "db",
                                  "db: {resources: [{labels: {served-by: apart}}]}\n")
        world = World(root, leaf, agent, ready_person(root, "alice", "ops"),
                      ready_person(root, "carol", "stranger"), base)
        wait_for(lambda: _listed(world.alice) == {DATABASE}, DEADLINE,
                 "the leaf's database (served by the agent apart) listed through the root")
        yield world
    finally:
        if found is not None:
            postgres_server.configure_tls(*found[:2], list(found[2]))


def test_psql_of_a_root_user_reaches_a_database_served_apart_audited_at_the_leaf(
        world: World) -> None:
    world.alice.lmsh("db", "login", "--cluster", "leaf", DATABASE, "--db-name", "app")

    def served() -> Any:  # the agent polls the root's trust: it may be a poll behind
        result = world.alice.psql(f"leaf-{DATABASE}", "SELECT current_user, current_database()",
                                  check=False)
        return result if result.returncode == 0 else None

    result = wait_for(served, DEADLINE, "psql through the root to the agent apart")
    assert result.stdout.strip() == "alice|app", describe(result)
    started = wait_for(lambda: world.leaf_audit("db.session.start", user="alice",
                                                db_service=DATABASE, success=True),
                       15.0, "the agent's db.session.start at the leaf")
    assert started[-1]["user_cluster"] == "root"  # the user's, as the certificate says
    assert started[-1]["cluster"] == "leaf"
    assert not str(started[-1]["server_id"]).endswith("-db")  # the agent apart
    queries = wait_for(lambda: [e for e in world.leaf_audit("db.session.query", user="alice",
                                                            db_service=DATABASE)
                                if "current_database" in str(e.get("query", ""))],
                       15.0, "the leaf's audit of alice's query")
    assert queries[-1]["user_cluster"] == "root"
    assert queries[-1]["server_id"] == started[-1]["server_id"]


def test_a_root_user_whose_roles_map_to_nothing_is_refused_at_the_leaf(world: World) -> None:
    section = routed_login(world.carol, DATABASE, "alice")
    result = world.carol.psql(section, "SELECT 1", check=False)
    assert result.returncode != 0, describe(result)
    assert "map to no role" in result.stderr, describe(result)
    denied = wait_for(lambda: [e for e in world.leaf_audit("access.denied", user="carol")
                               if e.get("user_cluster") == "root" and e.get("action") == "db"],
                      15.0, "the leaf's audit of carol's refusal")
    assert "map to no role" in denied[-1]["reason"]
    assert world.leaf_audit("db.session.start", user="carol", success=True) == []


def _forged(base: Path) -> tuple[Path, Path]:
    """A database certificate for alice of cluster root routed to the leaf, signed by a CA
    nobody trusts (named root), and its key (0600)."""
    ca = CertAuthority.generate("root", CertAuthorityType.TLS)
    key = generate_private_key()
    identity = Identity("alice", "root", roles=("ops",), route_to_cluster="leaf",
                        route_to_db=RouteToDatabase(DATABASE, "alice", "app"), usage=("db",))
    cert = sign_client_cert(ca, key.public_key(), identity, timedelta(hours=1),
                            now=datetime.now(UTC))
    cert_file, key_file = base / "forged.crt", base / "forged.key"
    cert_file.write_bytes(cert.public_bytes(Encoding.PEM))
    key_file.write_text(private_key_to_pem(key))
    key_file.chmod(0o600)
    return cert_file, key_file


def _psql_at(cluster: LimenCluster, cert: Path, key: Path, home: Path) -> Any:
    host, port = parse_address(cluster.listeners["postgres"])
    conninfo = (f"host={host} port={port} user=alice dbname=app sslmode=require "
                f"sslcert={cert} sslkey={key}")
    return run(["psql", "-X", conninfo, "-At", "-c", "SELECT 1"],
               env={"PATH": "/usr/bin:/bin", "HOME": str(home)}, check=False)


def _refused_certificates(cluster: LimenCluster) -> list[dict[str, Any]]:
    return [e for e in cluster.audit("db.session.start")
            if e.get("success") is False and "certificate" in str(e.get("reason", ""))]


def test_a_certificate_of_an_untrusted_cluster_is_refused_at_root_and_leaf(
        world: World) -> None:
    cert, key = _forged(world.base)
    home = world.base / "attacker"
    home.mkdir(exist_ok=True)
    for cluster in (world.root, world.leaf):
        before = len(_refused_certificates(cluster))
        result = _psql_at(cluster, cert, key, home)
        assert result.returncode != 0, describe(result)
        assert "alice|" not in result.stdout

        def audited(at: LimenCluster = cluster, seen: int = before) -> bool:
            return len(_refused_certificates(at)) > seen

        wait_for(audited, 15.0, f"{cluster.name}'s audit of the forged certificate")
