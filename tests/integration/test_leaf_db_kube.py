"""Databases and Kubernetes clusters of a trusted leaf cluster, reached by root users through
the root's proxy, end to end.

Real ``limen start`` processes: a root (auth, proxy, node) and a leaf (auth, proxy, node, db,
kube) trusting the root by a TrustedCluster whose role_map sends root ``ops`` to leaf
``leaf-dev`` (a database and a kube cluster) and root ``guest`` to leaf ``visitor`` (no
database, no kube cluster). Behind the leaf's agents: the session's real PostgreSQL (its TLS
configured with the leaf's database CA here, and put back as found) and the Kubernetes API
emulator. Root users run ``lmsh db|kube ls|login --cluster leaf`` at the root's proxy; the
root's fronts forward to the leaf's proxy over its cluster link. One root and one leaf serve
the module; the tests run in file order (the last one disables the trust):

* the leaf lists what the MAPPED roles allow (ops: the database and the kube cluster; guest:
  nothing), the root lists none of it as its own;
* kubectl of a root user reaches the leaf's kube cluster as that user with the groups of the
  mapped role, audited at the leaf (``kube.request``) and at the root (the forwarding);
* a root user whose roles map to a leaf role with no database / no kube cluster is refused at
  the leaf with a certificate the root signed (psql, kubectl), audited there with
  ``user_cluster`` and the mapped roles, and the kube refusal at the root too;
* an unknown leaf is refused at the root (listing, certificate), audited;
* once the leaf disables its TrustedCluster, a certificate routed to it is refused at the root,
  audited.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dbservers import PostgresServer
from k8s_emulator.fixtures import KubeAPI
from limen.client.kubeconfig import KubeEntry, merge_entry
from limen.client.profile import ProfileStore
from limen.client.webapi import WebApi
from limen.errors import NotFound
from limen.net.address import parse_address

from .cluster import ClusterFactory, LimenCluster, command, describe, wait_for
from .kube_env import RBAC
from .leaf_people import Person, join_leaf, ready_person, routed_login, trusted_cluster

DEADLINE = 30.0

ROOT_ROLES = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: ops}
spec:
  allow: {cluster_labels: {'*': '*'}}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: guest}
spec:
  allow: {cluster_labels: {'*': '*'}}
"""

LEAF_ROLES = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: leaf-dev}
spec:
  allow:
    db_labels: {env: leaf}
    db_users: [alice]
    db_names: [app, postgres]
    kubernetes_labels: {env: leaf}
    kubernetes_groups: [developers]
    kubernetes_resources:
    - {kind: configmap, namespace: default, verbs: ['*']}
    - {kind: pod, namespace: default, verbs: ['*']}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: visitor}
spec:
  allow: {node_labels: {'*': '*'}}
"""


def leaf_config(kubeconfig: Path) -> str:
    return f"""
db:
  resources: [{{labels: {{served-by: cluster}}}}]
kube:
  clusters: [{{name: emu-leaf, labels: {{env: leaf}}, kubeconfig: "{kubeconfig}"}}]
"""


def leaf_database(pg: PostgresServer) -> str:
    return f"""
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: pg-leaf, labels: {{env: leaf, served-by: cluster}}}}
spec: {{kind: db, protocol: postgres, address: "127.0.0.1:{pg.port}"}}
"""


@dataclass
class World:
    root: LimenCluster
    leaf: LimenCluster
    alice: Person
    """Root role ops: leaf-dev on the leaf (database pg-leaf as alice, kube emu-leaf)."""
    bob: Person
    """Root role guest: visitor on the leaf (no database, no kube cluster)."""
    ca_pin: str


@pytest.fixture(scope="module")
def world(module_clusters: ClusterFactory, postgres_server: PostgresServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("leafdbkube")
    api = KubeAPI(base / "k8s", authenticate=True).start()
    found = postgres_server.tls_config
    try:
        api.create_namespace("limen")
        agent = api.service_account("limen", "kube-agent")
        for document in RBAC:
            api.create(document)
        kubeconfig = base / "agent.kubeconfig"
        shutil.copy(agent.kubeconfig, kubeconfig)
        config = base / "leaf.yaml"
        config.write_text(leaf_config(kubeconfig))
        root = module_clusters("root")
        leaf = module_clusters("leaf", "--roles", "auth,proxy,node,db,kube", "-c", str(config))
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
        token_file, ca_pin = join_leaf(root, leaf)
        leaf.lmctl("apply", "-f", "-", input=trusted_cluster(root, token_file, ca_pin))
        world = World(root, leaf, ready_person(root, "alice", "ops"),
                      ready_person(root, "bob", "guest"), ca_pin)
        wait_for(lambda: {d["name"] for d in _listed(world.alice, "db")} == {"pg-leaf"},
                 DEADLINE, "the leaf's database listed through the root")
        yield world
    finally:
        try:
            if found is not None:
                postgres_server.configure_tls(*found[:2], list(found[2]))
        finally:
            api.stop()


def _listed(person: Person, what: str) -> list[dict[str, Any]]:
    result = person.lmsh(what, "ls", "--cluster", "leaf", "-o", "json", check=False)
    return list(json.loads(result.stdout)["items"]) if result.returncode == 0 else []


def _leaf_audit(world: World, event_type: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in world.leaf.audit(event_type)
            if all(e.get(k) == v for k, v in match.items())]


def test_the_leaf_lists_what_the_mapped_roles_allow(world: World) -> None:
    [db] = world.alice.ls("db")
    assert db["name"] == "pg-leaf"
    assert db["protocol"] == "postgres"
    assert db["db_users"] == ["alice"]
    assert db["cluster"] == "leaf"
    [kube] = world.alice.ls("kube")
    assert kube["name"] == "emu-leaf"
    assert kube["kubernetes_groups"] == ["developers"]
    assert world.bob.ls("db") == []  # visitor: no database, no kube cluster on the leaf
    assert world.bob.ls("kube") == []
    # the root's own listing does not show the leaf's
    own = json.loads(world.alice.lmsh("db", "ls", "-o", "json").stdout)["items"]
    assert own == []


def test_psql_from_the_root_reaches_the_leaf_database_audited_at_both(world: World) -> None:
    world.alice.lmsh("db", "login", "--cluster", "leaf", "pg-leaf", "--db-name", "app")
    result = world.alice.psql("leaf-pg-leaf", "SELECT current_user, current_database()",
                              check=False)
    assert result.stdout.strip() == "alice|app", describe(result)
    started = wait_for(lambda: _leaf_audit(world, "db.session.start", user="alice",
                                           success=True), 15.0, "the leaf's db.session.start")
    assert started[-1]["user_cluster"] == "root"  # the user's, as the certificate says
    assert started[-1]["cluster"] == "leaf"
    queries = wait_for(lambda: [e for e in _leaf_audit(world, "db.session.query", user="alice")
                                if "current_database" in str(e.get("query", ""))],
                       15.0, "the leaf's audit of alice's query")
    assert queries
    forwarded = [e for e in world.root.audit("db.session.start", user="alice")
                 if e.get("target_cluster") == "leaf"]
    assert forwarded
    assert forwarded[-1]["success"] is True


def test_ctrl_c_in_psql_cancels_a_leaf_query_through_the_root(
        world: World, postgres_server: PostgresServer) -> None:
    """psql's cancel request reaches the root's front with the key it gave; the root sends it
    over the cluster link, the leaf's proxy and db agent pass it to the database."""
    world.alice.lmsh("db", "login", "--cluster", "leaf", "pg-leaf", "--db-name", "app")
    proc = subprocess.Popen(
        ["psql", "-X", "service=leaf-pg-leaf", "-c", "select pg_sleep(61)"],
        env=world.alice.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: postgres_server.sql(
            "select count(*) from pg_stat_activity where query = 'select pg_sleep(61)' "
            "and state = 'active'") == "1", 15.0, "the query to run at the leaf's database")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert "canceling statement due to user request" in err
    assert time.monotonic() - started < 10
    sent = wait_for(lambda: _leaf_audit(world, "db.session.cancel", success=True), 15.0,
                    "the leaf's db.session.cancel")
    assert sent[-1]["db_service"] == "pg-leaf"
    forwarded = [e for e in world.root.audit("db.session.cancel", user="alice")
                 if e.get("target_cluster") == "leaf"]
    assert forwarded
    assert forwarded[-1]["success"] is True


def test_kubectl_from_the_root_reaches_the_leaf_cluster_audited_at_both(world: World) -> None:
    world.alice.lmsh("kube", "login", "--cluster", "leaf", "emu-leaf")
    whoami = world.alice.kubectl("auth", "whoami", "-o", "json", check=False)
    assert whoami.returncode == 0, describe(whoami)
    status = json.loads(whoami.stdout)["status"]["userInfo"]
    assert status["username"] == "alice"
    assert "developers" in status["groups"]  # granted by the leaf's mapped role
    world.alice.kubectl("get", "configmaps", "-n", "default")
    served = wait_for(lambda: [e for e in _leaf_audit(world, "kube.request", user="alice")
                               if e.get("success") and e.get("response_code") == 200],
                      15.0, "the leaf's kube.request of alice")
    assert served[-1]["user_cluster"] == "root"  # the user's, as the certificate says
    assert served[-1]["cluster"] == "leaf"  # written for the agent's cluster
    forwarded = [e for e in world.root.audit("kube.request", user="alice")
                 if e.get("target_cluster") == "leaf"]
    assert forwarded


def test_a_role_map_granting_no_database_refuses_at_the_leaf(world: World) -> None:
    section = routed_login(world.bob, "pg-leaf", "alice")
    result = world.bob.psql(section, "SELECT 1", check=False)
    assert result.returncode != 0, describe(result)
    assert "denied" in result.stderr, describe(result)
    denied = wait_for(lambda: [e for e in _leaf_audit(world, "access.denied", user="bob")
                               if e.get("user_cluster") == "root" and e.get("action") == "db"],
                      15.0, "the leaf's audit of bob's refusal")
    assert denied[-1]["roles"] == ["visitor"]
    assert "pg-leaf" in denied[-1]["reason"]


def test_a_role_map_granting_no_kube_cluster_refuses_at_the_leaf(world: World) -> None:
    listed = world.bob.lmsh("kube", "login", "--cluster", "leaf", "emu-leaf", check=False)
    assert listed.returncode != 0  # the leaf lists nothing for visitor
    # the kubeconfig entry lmsh kube login would write (kubectl's exec plugin asks the root
    # for a certificate routed to the leaf whatever the leaf lists)
    store = ProfileStore(world.bob.user.home)
    profile = store.current_valid()
    host, port = parse_address(world.root.listeners["kube"])
    entry = KubeEntry(limen_cluster="leaf", name="emu-leaf", server=f"https://{host}:{port}",
                      ca_pem=store.ca_path(profile.proxy, profile.cluster).read_bytes(),
                      proxy=profile.proxy, command=command("lmsh"),
                      limen_home=str(world.bob.user.home), leaf="leaf")
    merge_entry(Path(world.bob.env["KUBECONFIG"]), entry)
    result = world.bob.kubectl("get", "pods", "-n", "default", check=False)
    assert result.returncode != 0, describe(result)
    denied = wait_for(lambda: [e for e in _leaf_audit(world, "access.denied", user="bob")
                               if e.get("user_cluster") == "root"
                               and e.get("action") == "kube"],
                      15.0, "the leaf's audit of bob's kube refusal")
    assert denied[-1]["roles"] == ["visitor"]
    refused = [e for e in world.root.audit("kube.request", user="bob")
               if e.get("target_cluster") == "leaf" and e.get("success") is False]
    assert refused


def test_unknown_leaf_is_refused_at_the_root_and_audited(world: World) -> None:
    result = world.alice.lmsh("db", "ls", "--cluster", "nosuch", check=False)
    assert result.returncode != 0
    assert "unknown cluster 'nosuch'" in result.stderr, describe(result)
    store = ProfileStore(world.alice.user.home)
    profile = store.current_valid()

    async def ask() -> None:
        api = WebApi.for_profile(store, profile)
        try:
            await api.as_user_post("db/certs", {"service": "pg-leaf", "db_user": "alice",
                                                "cluster": "nosuch"})
        finally:
            await api.close()

    with pytest.raises(NotFound):
        asyncio.run(ask())
    denied = [e for e in world.root.audit("access.denied", user="alice")
              if e.get("target_cluster") == "nosuch"]
    assert denied
    assert denied[-1]["action"] == "db.login"


def test_a_leaf_that_no_longer_trusts_the_root_refuses(world: World) -> None:
    """Last: the leaf disables its TrustedCluster; a certificate routed to it is refused at
    the root (the link is gone), audited there."""
    section = routed_login(world.alice, "pg-leaf", "alice")
    world.leaf.lmctl("apply", "-f", "-", input=trusted_cluster(
        world.root, world.leaf.data_dir / "secrets" / "root.token", world.ca_pin).replace(
            "enabled: true", "enabled: false"))
    wait_for(lambda: _listed(world.alice, "db") == [], DEADLINE,
             "the leaf's listing refused once the trust is disabled")
    result = world.alice.psql(section, "SELECT 1", check=False)
    assert result.returncode != 0, describe(result)
    refused = [e for e in world.root.audit("db.session.start", user="alice")
               if e.get("target_cluster") == "leaf" and e.get("success") is False]
    assert refused, world.root.audit("db.session.start", user="alice")
