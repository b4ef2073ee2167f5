"""A root cluster's locks on its own users, enforced at a leaf cluster, end to end.

Real ``limen start`` processes (a root and a leaf, each auth, proxy and node in one process),
the leaf trusting the root by a TrustedCluster (role_map: root ``ops`` → leaf ``visitor``, with
``lock: strict``; root ``dev`` → leaf ``helper``, ``best_effort``), and ``lmsh ssh --cluster``.
The root proxy pushes its locks on users, roles and logins through the leaf's cluster link; the
leaf proxy refuses new sessions of a locked root user and cuts the open ones, and the leaf's
node refuses a locked login, audited on the leaf. A leaf user with the same name as a locked
root user is untouched; removing the lock at the root restores access. One root and one leaf
serve the module; the tests run in file order.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from .cluster import ClusterFactory, LimenCluster, LimenUser, command, describe, wait_for
from .leaf_people import join_leaf

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
WITHIN = 2.0
"""Seconds within which a root lock must refuse at the leaf / end a strict session there."""

ROOT_ROLES = f"""
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: ops}}
spec:
  allow: {{logins: [{LOGIN}], node_labels: {{'*': '*'}}, cluster_labels: {{'*': '*'}}}}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: dev}}
spec:
  allow: {{logins: [{LOGIN}], node_labels: {{'*': '*'}}, cluster_labels: {{'*': '*'}}}}
"""
LEAF_ROLES = f"""
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: visitor}}
spec:
  options: {{lock: strict}}
  allow: {{logins: [{LOGIN}], node_labels: {{'*': '*'}}}}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: helper}}
spec:
  options: {{lock: best_effort}}
  allow: {{logins: [{LOGIN}], node_labels: {{'*': '*'}}}}
"""


@dataclass
class World:
    root: LimenCluster
    leaf: LimenCluster
    bob: LimenUser
    """Root user, role ops (leaf: visitor, strict)."""
    carl: LimenUser
    """Root user, role dev (leaf: helper, best_effort)."""
    leaf_bob: LimenUser
    """A LEAF user also named bob (leaf role visitor)."""


@pytest.fixture(scope="module")
def world(module_clusters: ClusterFactory) -> World:
    root = module_clusters("root")
    root.lmctl("apply", "-f", "-", input=ROOT_ROLES)
    leaf = module_clusters("leaf", "--labels", "env=leaf")
    leaf.lmctl("apply", "-f", "-", input=LEAF_ROLES)
    token_file, ca_pin = join_leaf(root, leaf)
    trust = leaf.root / "trust.yaml"
    trust.write_text(f"""
apiVersion: limen.dev/v1alpha1
kind: TrustedCluster
metadata: {{name: root}}
spec:
  enabled: true
  proxy_address: {root.web}
  ca_pin: {ca_pin}
  token_secret_ref: {{file: {token_file.name}}}
  role_map:
    - {{remote: ops, local: [visitor]}}
    - {{remote: dev, local: [helper]}}
""")
    leaf.lmctl("apply", "-f", trust)
    with ThreadPoolExecutor(max_workers=3) as pool:  # sign-ups and logins in parallel
        bob, carl, leaf_bob = pool.map(lambda args: ready_person(*args), [
            (root, "bob", "ops"), (root, "carl", "dev"), (leaf, "bob", "visitor")])
    world = World(root, leaf, bob, carl, leaf_bob)
    wait_for(lambda: _leaf_ssh(bob).returncode == 0, 30.0, "the leaf reachable from the root")
    return world


def ready_person(cluster: LimenCluster, name: str, role: str) -> LimenUser:
    user = cluster.signed_up_user(name, roles=[role], logins=[LOGIN])
    user.login()
    return user


def _leaf_ssh(user: LimenUser) -> subprocess.CompletedProcess[str]:
    return user.lmsh("ssh", "--cluster", "leaf", f"{LOGIN}@{HOST}", "echo in", check=False)


def _local_ssh(user: LimenUser) -> subprocess.CompletedProcess[str]:
    return user.lmsh("ssh", f"{LOGIN}@{HOST}", "echo in", check=False)


def _open(user: LimenUser) -> subprocess.Popen[bytes]:
    session = subprocess.Popen(
        [command("lmsh"), "ssh", "--cluster", "leaf", f"{LOGIN}@{HOST}",
         "echo started; sleep 60"],
        env=user.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert session.stdout is not None
    assert session.stdout.readline() == b"started\n", session.stderr.read() if \
        session.stderr else ""
    return session


def _close(session: subprocess.Popen[bytes]) -> None:
    session.kill()
    session.communicate()


def _denied_at_leaf(world: World, user: str, lock: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in world.leaf.audit("access.denied", user=user)
            if e.get("user_cluster") == "root" and e.get("lock") == lock
            and all(e.get(k) == v for k, v in match.items())]


def test_a_root_lock_on_a_root_user_ends_a_strict_session_and_refuses_new_ones_at_the_leaf(
        world: World) -> None:
    session = _open(world.bob)
    try:
        name = world.root.lmctl("lock", "--user", "bob", "--message",
                                "INC-9 review").stdout.strip()
        locked_at = time.monotonic()
        wait_for(lambda: session.poll() is not None, WITHIN, "bob's leaf session to end")
        assert time.monotonic() - locked_at <= WITHIN
        [ended] = _denied_at_leaf(world, "bob", name, action="session")
        assert ended["mode"] == "strict"
        assert ended["reason"] == "locked: INC-9 review"
        assert ended["lock_target"] == "user=bob"

        refused = _leaf_ssh(world.bob)
        assert refused.returncode != 0, describe(refused)
        assert "locked: INC-9 review" in refused.stderr, describe(refused)
        assert _denied_at_leaf(world, "bob", name, rule="lock", via="cluster link")

        # the leaf's own user bob is another person: the root's lock does not touch them
        assert _local_ssh(world.leaf_bob).returncode == 0
        assert _leaf_ssh(world.carl).returncode == 0

        world.root.lmctl("rm", f"lock/{name}")
        wait_for(lambda: _leaf_ssh(world.bob).returncode == 0, 5.0, "the lock lifted at the leaf")
    finally:
        _close(session)


def test_a_root_role_lock_applies_to_the_root_role_and_best_effort_ends_at_the_next_check(
        world: World) -> None:
    session = _open(world.carl)
    try:
        name = world.root.lmctl("lock", "--role", "dev").stdout.strip()
        wait_for(lambda: session.poll() is not None, 5.0, "carl's best-effort session to end")
        [ended] = _denied_at_leaf(world, "carl", name, action="session")
        assert ended["mode"] == "best_effort"
        refused = wait_for(lambda: _leaf_ssh(world.carl).returncode != 0, WITHIN,
                           "carl refused at the leaf")
        assert refused
        assert _leaf_ssh(world.bob).returncode == 0  # ops, not dev
        world.root.lmctl("rm", f"lock/{name}")
        wait_for(lambda: _leaf_ssh(world.carl).returncode == 0, 5.0, "the role lock lifted")
    finally:
        _close(session)


def test_a_root_login_lock_is_enforced_by_the_leaf_node(world: World) -> None:
    """The leaf proxy relays the SSH session sealed; the leaf's node sees the login."""
    name = world.root.lmctl("lock", "--user", "carl", "--login", LOGIN, "--message",
                            "no shell").stdout.strip()
    try:
        refused = wait_for(lambda: (r := _leaf_ssh(world.carl)).returncode != 0 and r,
                           WITHIN + 3.0, "carl's login refused at the leaf node")
        assert "locked: no shell" in refused.stderr, describe(refused)
        assert _denied_at_leaf(world, "carl", name, login=LOGIN)
        assert _leaf_ssh(world.bob).returncode == 0
    finally:
        world.root.lmctl("rm", f"lock/{name}")
    wait_for(lambda: _leaf_ssh(world.carl).returncode == 0, 5.0, "the login lock lifted")
