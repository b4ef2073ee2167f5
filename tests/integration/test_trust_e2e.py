"""Trusted clusters end to end with real ``limen start`` processes and the stock OpenSSH client.

A root and a leaf (each a single-node cluster with its own data directory); the leaf follows
its own Git repository and joins the root by merging a TrustedCluster commit. Then, as root
users: ``lmsh clusters`` shows the leaf online within seconds, ``lmsh ls --cluster`` lists its
node, plain ``ssh`` (``lmsh config``) and ``lmsh ssh --cluster`` reach the leaf's node through
the root proxy and the leaf's tunnel (a recorded session audited on the leaf with the root
user's cluster, and on the root with the target cluster), a user whose roles map to nothing is
refused on the leaf (audited), and a commit disabling the TrustedCluster cuts the tunnel and
the access (re-enabling restores both). Last, a second leaf joins the same root: three
clusters. One root and one leaf serve the whole module; the tests run in file order.
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_git import WorkTree, bare

from .cluster import ClusterFactory, LimenCluster, LimenUser, describe, run, wait_for
from .leaf_people import join_leaf

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
DEADLINE = 30.0
"""Seconds a commit may take to change what users see (a 1 s Git poll, a handshake, a link)."""

ROOT_ROLES = f"""
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: ops}}
spec:
  allow:
    logins: [{LOGIN}]
    node_labels: {{'*': '*'}}
    cluster_labels: {{'*': '*'}}
    rules:
      - resources: [role, user, trusted_cluster]
        verbs: [list, read, create, update, delete]
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: guest}}
spec:
  allow:
    logins: [{LOGIN}]
    node_labels: {{'*': '*'}}
"""
VISITOR = f"""apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: visitor}}
spec:
  allow:
    logins: [{LOGIN}]
    node_labels: {{'*': '*'}}
"""


def trusted_cluster(root: LimenCluster, token_file: Path, ca_pin: str,
                    enabled: bool = True) -> str:
    return yaml.safe_dump({
        "apiVersion": "limen.dev/v1alpha1", "kind": "TrustedCluster",
        "metadata": {"name": root.name},
        "spec": {"enabled": enabled, "proxy_address": root.web, "ca_pin": ca_pin,
                 "token_secret_ref": {"file": token_file.name},
                 "role_map": [{"remote": "ops", "local": ["visitor"]}]}})


@dataclass
class World:
    root: LimenCluster
    leaf: LimenCluster
    repo: WorkTree
    alice: LimenUser
    """Root role ops: mapped to visitor on the leaf."""
    bob: LimenUser
    """Root role guest: mapped to nothing on the leaf."""
    token_file: Path
    ca_pin: str
    ssh_config: Path | None = None

    def commit_trust(self, enabled: bool) -> None:
        self.repo.write("trusted-clusters/root.yaml",
                        trusted_cluster(self.root, self.token_file, self.ca_pin, enabled))
        self.repo.commit(f"trusted cluster root: enabled={enabled}")


def clusters_of(user: LimenUser) -> dict[str, dict[str, Any]]:
    answer = json.loads(user.lmsh("clusters", "-o", "json").stdout)
    return {row["name"]: row for row in answer["items"]}


def leaf_state(user: LimenUser, leaf: str = "leaf") -> str:
    return str(clusters_of(user).get(leaf, {}).get("connection", "absent"))


@pytest.fixture(scope="module")
def world(module_clusters: ClusterFactory, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = module_clusters("root", "--labels", "env=root")
    root.lmctl("apply", "-f", "-", input=ROOT_ROLES)
    alice = root.signed_up_user("alice", roles=["ops"], logins=[LOGIN])
    bob = root.signed_up_user("bob", roles=["guest"], logins=[LOGIN])
    base = tmp_path_factory.mktemp("leaf-repo")
    remote = bare(base / "access.git")
    repo = WorkTree(base / "work", remote)
    repo.write("roles/visitor.yaml", VISITOR)
    repo.commit("visitor role")
    leaf = module_clusters("leaf", "--labels", "env=leaf", "--gitops", f"file://{remote}",
                           "--gitops-interval", "1s")
    token_file, ca_pin = join_leaf(root, leaf)
    world = World(root, leaf, repo, alice, bob, token_file, ca_pin)
    world.commit_trust(enabled=True)  # the pull request merged on the leaf
    alice.login()
    bob.login()
    return world


def test_root_user_sees_the_leaf_online_within_seconds(world: World) -> None:
    wait_for(lambda: leaf_state(world.alice) == "online", DEADLINE, "the leaf online")
    rows = clusters_of(world.alice)
    assert rows["root"]["type"] == "root"
    assert rows["leaf"]["type"] == "leaf"
    remote = world.root.lmctl_json("get", "remoteclusters/leaf")
    assert remote["spec"]["connection"] == "online"
    assert remote["spec"]["last_heartbeat"]
    online = world.root.audit("remote_cluster.online")
    assert any(e.get("remote_cluster") == "leaf" for e in online)
    text = world.alice.lmsh("clusters").stdout
    assert "leaf" in text
    assert "online" in text


def test_ls_lists_the_leaf_nodes(world: World) -> None:
    def listed() -> list[dict[str, Any]]:
        items = json.loads(world.alice.lmsh("ls", "--cluster", "leaf", "-o", "json").stdout)
        return [n for n in items["items"] if n["hostname"] == HOST]

    nodes = wait_for(listed, DEADLINE, "the leaf's node in lmsh ls --cluster leaf")
    assert nodes[0]["labels"] == {"env": "leaf"}
    assert nodes[0]["cluster"] == "leaf"


def test_stock_ssh_reaches_the_leaf_node_recorded_and_audited(world: World) -> None:
    config = world.alice.home / "ssh_config"
    config.write_text(world.alice.lmsh("config").stdout, encoding="utf-8")
    assert "Host *.leaf" in config.read_text()
    world.ssh_config = config
    result = run(["ssh", "-F", config, "-tt", f"{LOGIN}@{HOST}.leaf", "echo via-leaf-$((6*7))"],
                 env=world.alice.env)
    assert "via-leaf-42" in result.stdout, describe(result)

    def leaf_session() -> list[dict[str, Any]]:
        return [e for e in world.leaf.audit("session.end", user="alice") if e.get("recorded")]

    ended = wait_for(leaf_session, 15.0, "session.end of alice's session on the leaf")
    assert ended[-1]["user_cluster"] == "root"
    assert ended[-1]["cluster"] == "leaf"
    session_id = str(ended[-1]["session_id"])
    starts = [e for e in world.leaf.audit("session.start", user="alice")
              if e.get("session_id") == session_id]
    assert starts
    assert starts[0]["user_cluster"] == "root"
    cast = world.leaf.data_dir / "log" / "recordings" / f"{session_id}.cast"
    wait_for(cast.exists, 15.0, "the recording kept by the leaf")
    assert "via-leaf-42" in cast.read_text(encoding="utf-8")
    routed = [e for e in world.root.audit("session.start", user="alice")
              if e.get("target_cluster") == "leaf"]
    assert routed
    assert routed[-1]["server"] == HOST


def test_lmsh_ssh_with_the_cluster_flag(world: World) -> None:
    result = world.alice.lmsh("ssh", "--cluster", "leaf", f"{LOGIN}@{HOST}", "echo flagged")
    assert result.stdout.strip() == "flagged"


def test_a_user_whose_roles_map_to_nothing_is_refused_on_the_leaf(world: World) -> None:
    assert "leaf" in clusters_of(world.bob)  # the root lets bob see the leaf (no labels)
    result = world.bob.lmsh("ssh", "--cluster", "leaf", f"{LOGIN}@{HOST}", "true", check=False)
    assert result.returncode != 0, describe(result)
    denied = wait_for(lambda: [e for e in world.leaf.audit("access.denied", user="bob")
                               if e.get("user_cluster") == "root"], 10.0,
                      "the leaf's audit of bob's refusal")
    assert "map to no role" in denied[-1]["reason"]
    assert not [e for e in world.leaf.audit("session.start", user="bob")]


def test_disabling_by_commit_cuts_the_tunnel_and_access(world: World) -> None:
    world.commit_trust(enabled=False)
    wait_for(lambda: leaf_state(world.alice) == "offline", DEADLINE, "the leaf offline")
    assert world.ssh_config is not None
    refused = run(["ssh", "-F", world.ssh_config, f"{LOGIN}@{HOST}.leaf", "true"],
                  env=world.alice.env, check=False)
    assert refused.returncode != 0, describe(refused)
    offline = world.root.audit("remote_cluster.offline")
    assert any(e.get("remote_cluster") == "leaf" for e in offline)
    world.commit_trust(enabled=True)  # re-enabling restores the link and the access
    wait_for(lambda: leaf_state(world.alice) == "online", DEADLINE, "the leaf online again")
    again = run(["ssh", "-F", world.ssh_config, f"{LOGIN}@{HOST}.leaf", "echo back"],
                env=world.alice.env)
    assert again.stdout.strip() == "back"


def test_three_clusters_one_root_two_leaves(world: World, module_clusters: ClusterFactory
                                            ) -> None:
    leaf2 = module_clusters("leaf2", "--labels", "env=leaf2")
    leaf2.lmctl("apply", "-f", "-", input=VISITOR)
    token_file, ca_pin = join_leaf(world.root, leaf2)
    path = leaf2.root / "trust.yaml"
    path.write_text(trusted_cluster(world.root, token_file, ca_pin))
    leaf2.lmctl("apply", "-f", path)
    wait_for(lambda: leaf_state(world.alice, "leaf2") == "online", DEADLINE, "leaf2 online")
    assert leaf_state(world.alice, "leaf") == "online"
    for leaf in ("leaf", "leaf2"):
        result = world.alice.lmsh("ssh", "--cluster", leaf, f"{LOGIN}@{HOST}",
                                  f"echo hello-{leaf}")
        assert result.stdout.strip() == f"hello-{leaf}"
    assert [e for e in leaf2.audit("session.start", user="alice")
            if e.get("user_cluster") == "root"]
