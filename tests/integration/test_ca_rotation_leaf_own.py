"""A leaf's own host CA rotation reaches its root (issue #18, the leaf → root direction), with
real ``limen start`` processes and OpenSSH.

A root and a leaf (each all in one process, with a node); the leaf trusts the root
(``leaf_people``: a TrustedCluster applied with a root token, root ``ops`` mapped to the
leaf's ``leaf-dev``), alice of the root reaches the leaf's node through the root (``lmsh ssh
--cluster leaf``: OpenSSH checks the node's host certificate against the leaf host CA keys
the root hands out for ``*.leaf``). The LEAF's host CA is rotated by hand with ``lmctl auth
rotate`` at the leaf through every phase while a long-running ssh session to the leaf's node
stays open:

* ``init``: the leaf proxy sends the new key over its cluster link and the root stores it
  (audited at the root, ``trusted_cluster.cas``, direction ``leaf_to_root``); ssh works;
* ``update_servers``: the leaf's proxy and node renew their host certificates with the new
  key; alice's ssh verifies the node's new certificate (the root gave her the new key);
* ``standby``: the root drops the old key as the leaf does; alice's known_hosts follows (each
  ``lmsh ssh --cluster`` asks the root) and verifies the node's certificate with the new key
  only; a new cluster
  link (the TrustedCluster disabled and enabled again: no handshake) presents the leaf
  proxy's renewed certificate, which the root verifies with the new key only.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from .cluster import ClusterFactory, LimenCluster, LimenUser, describe, wait_for
from .echo_session import EchoSession
from .leaf_people import join_leaf, trusted_cluster

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
DEADLINE = 30.0
"""Seconds the leaf may take to join and its link to come up."""
PROPAGATION = 10.0
"""Seconds a leaf CA change may take to reach the root (a 1 s poll, the link, the store)."""
ROOT_ROLE = f"""apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: ops}}
spec:
  allow:
    logins: [{LOGIN}]
    cluster_labels: {{'*': '*'}}
"""
LEAF_ROLE = f"""apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: leaf-dev}}
spec:
  allow:
    logins: [{LOGIN}]
    node_labels: {{'*': '*'}}
"""
LAST: list[subprocess.CompletedProcess[str]] = []
"""The last ssh attempt, shown when a wait for one times out."""


@dataclass
class World:
    root: LimenCluster
    leaf: LimenCluster
    alice: LimenUser
    trust: str
    """The leaf's TrustedCluster document."""

    def rotate(self, *args: str) -> None:
        self.leaf.lmctl("auth", "rotate", "--type", "host", *args)

    def leaf_renewals(self) -> list[dict[str, Any]]:
        """The host certificates the leaf renewed (its proxy and node: one process)."""
        return [e for e in self.leaf.audit("cert.create") if e.get("renewal")
                and e.get("success") is not False]

    def ca_updates(self) -> list[dict[str, Any]]:
        """The root's audit of the leaf's CA updates it applied."""
        return [e for e in self.root.audit("trusted_cluster.cas")
                if e.get("success") and e.get("leaf_cluster") == "leaf"]

    def host_keys_changed(self, change: str) -> list[str]:
        """Fingerprints of the leaf's host CA keys the root ``added`` or ``removed``."""
        return [key for e in self.ca_updates()
                for key in e["cas"].get("host", {}).get(change, [])]

    def trust_enabled(self, enabled: bool) -> None:
        doc = yaml.safe_load(self.trust)
        doc["spec"]["enabled"] = enabled
        self.leaf.lmctl("apply", "-f", "-", input=yaml.safe_dump(doc))

    def leaf_known_hosts(self) -> list[str]:
        return [line for line in (self.alice.home / "known_hosts").read_text().splitlines()
                if line.startswith("@cert-authority *.leaf ")]


def _ssh_ok(user: LimenUser, marker: str) -> bool:
    result = user.lmsh("ssh", "--cluster", "leaf", f"{LOGIN}@{HOST}", f"echo {marker}",
                       check=False)
    LAST[:] = [result]
    return result.returncode == 0 and result.stdout.strip() == marker


def _works(user: LimenUser, marker: str, what: str) -> None:
    try:
        wait_for(lambda: _ssh_ok(user, marker), PROPAGATION, what)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{describe(LAST[0])}") from None


@pytest.fixture(scope="module")
def world(module_clusters: ClusterFactory) -> World:
    root = module_clusters("root", "--labels", "env=root")
    root.lmctl("apply", "-f", "-", input=ROOT_ROLE)
    alice = root.signed_up_user("alice", roles=["ops"], logins=[LOGIN])
    leaf = module_clusters("leaf", "--labels", "env=leaf")
    leaf.lmctl("apply", "-f", "-", input=LEAF_ROLE)
    token_file, ca_pin = join_leaf(root, leaf)
    trust = trusted_cluster(root, token_file, ca_pin)
    leaf.lmctl("apply", "-f", "-", input=trust)
    alice.login()
    world = World(root, leaf, alice, trust)
    _works(alice, "ready", "alice reaching the leaf's node")
    return world


def test_a_leaf_host_ca_rotation_reaches_the_root(world: World) -> None:
    alice = world.alice
    [old_line] = world.leaf_known_hosts()
    session = EchoSession(alice, "--cluster", "leaf", f"{LOGIN}@{HOST}")
    try:
        session.echo("start")

        world.rotate("--manual")  # init: the leaf's new host key is trusted, and at the root
        [new_key] = wait_for(lambda: world.host_keys_changed("added"), PROPAGATION,
                             "the root's audit of the leaf's new host CA key")
        [event] = world.ca_updates()
        assert event["direction"] == "leaf_to_root"
        assert event["signer"]  # the leaf proxy that signed it
        assert event["proxy"]  # the root proxy that relayed it
        _works(alice, "init", "alice at the leaf in init")
        assert len(world.leaf_known_hosts()) == 2  # lmsh got the new key from the root
        session.echo("init")

        world.rotate("--phase", "update_clients")
        _works(alice, "clients", "alice at the leaf in update_clients")

        renewed = len(world.leaf_renewals())
        world.rotate("--phase", "update_servers")  # the leaf's proxy and node renew
        wait_for(lambda: len(world.leaf_renewals()) >= renewed + 2, PROPAGATION,
                 "the leaf's proxy and node to renew their host certificates")
        _works(alice, "servers", "alice verifying the node's renewed certificate")
        session.echo("servers")

        world.rotate("--phase", "standby")  # the old key is dropped at the leaf and the root
        [old_key] = wait_for(lambda: world.host_keys_changed("removed"), PROPAGATION,
                             "the root's audit of the leaf's old host CA key dropped")
        assert old_key != new_key
        _works(alice, "standby", "alice verifying the node with the leaf's new key only")
        [new_line] = world.leaf_known_hosts()  # what the root hands out now: the new key
        assert new_line != old_line
        session.echo("standby")  # the session opened before the rotation is still open
    finally:
        session.close()


def test_the_root_verifies_a_new_link_with_the_leafs_new_host_key(world: World) -> None:
    """After the rotation the root holds only the leaf's new host key: a new link (disabled,
    then enabled again: no handshake) presents the leaf proxy's renewed certificate and is
    verified with it. Follows the rotation above (the tests run in file order)."""
    assert world.host_keys_changed("removed")
    world.trust_enabled(False)
    wait_for(lambda: not _ssh_ok(world.alice, "down"), PROPAGATION, "the link stopped")
    world.trust_enabled(True)
    _works(world.alice, "reconnected", "alice through a new link after the rotation")
    refused = [e for e in world.root.audit("auth") if e.get("success") is False
               and "cluster link" in str(e.get("reason"))]
    assert not refused, refused
