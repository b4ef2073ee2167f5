"""A root's user CA rotation reaches its leaf cluster (issue #18), with real ``limen start``
processes and OpenSSH.

A root and a leaf (each all in one process, with a node); the leaf trusts the root (a
TrustedCluster applied with a root token), alice of the root reaches the leaf's node through
the root (``lmsh ssh --cluster leaf``: OpenSSH, the root proxy, the leaf's cluster link). The
root's user CA is rotated by hand with ``lmctl auth rotate`` through every phase while a
long-running ssh session to the leaf's node stays open:

* ``init``: the new key reaches the leaf (audited there, ``trusted_cluster.cas``) and the
  certificate from before still works;
* ``update_clients``: a new login gives a certificate of the new key, which works at the leaf
  (so the leaf trusted the new key before any certificate of it existed), as does the old one;
* ``standby``: the leaf drops the old key when the root does; a certificate of the dropped key
  is refused by the leaf's own node (presented to it directly, audited there), while the new
  one works there and through the root.

The root's host CA is rotated alongside: its new key reaches the leaf in ``init`` too, so the
leaf keeps taking updates signed by the root proxy's renewed certificate (``update_servers``)
and drops the old host key at ``standby``. The open session survives the whole rotation.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .cluster import (
    ClusterFactory,
    LimenCluster,
    LimenUser,
    describe,
    inspect_ssh_cert,
    run,
    wait_for,
)
from .echo_session import EchoSession

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
DEADLINE = 30.0
"""Seconds the leaf may take to join and its link to come up."""
PROPAGATION = 10.0
"""Seconds a root CA change may take to reach the leaf (a 1 s poll, the link, the store)."""
ROOT_ROLE = f"""apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: ops}}
spec:
  allow:
    logins: [{LOGIN}]
    node_labels: {{'*': '*'}}
    cluster_labels: {{'*': '*'}}
"""
LEAF_ROLE = f"""apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: visitor}}
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
    trust: Path
    """The leaf's TrustedCluster document."""

    def trust_enabled(self, enabled: bool) -> None:
        doc = yaml.safe_load(self.trust.read_text())
        doc["spec"]["enabled"] = enabled
        self.trust.write_text(yaml.safe_dump(doc))
        self.leaf.lmctl("apply", "-f", self.trust)

    def rotate(self, *args: str) -> None:
        """Move the root's user and host CAs to the same phase."""
        for ca_type in ("user", "host"):
            self.root.lmctl("auth", "rotate", "--type", ca_type, *args)

    def root_renewals(self) -> list[dict[str, Any]]:
        """The host certificates the root renewed (its proxy and node: one process)."""
        return [e for e in self.root.audit("cert.create") if e.get("renewal")
                and e.get("success") is not False]

    def ca_updates(self) -> list[dict[str, Any]]:
        """The leaf's audit of the root's CA updates it applied."""
        return [e for e in self.leaf.audit("trusted_cluster.cas")
                if e.get("success") and e.get("root_cluster") == "root"]

    def keys_changed(self, ca_type: str, change: str) -> list[str]:
        """Fingerprints of the root's ``ca_type`` CA keys the leaf ``added`` or ``removed``."""
        return [key for e in self.ca_updates()
                for key in e["cas"].get(ca_type, {}).get(change, [])]


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


def _direct(user: LimenUser, node: str, marker: str) -> subprocess.CompletedProcess[str]:
    """OpenSSH straight to the leaf's node with ``user``'s root certificate (no proxy): what
    the leaf itself decides about the certificate."""
    host, port = node.rsplit(":", 1)
    return run(["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
                "-o", f"IdentityFile={user.key_dir / user.name}",
                "-o", f"CertificateFile={user.ssh_cert_path('root')}", "-p", port,
                f"{LOGIN}@{host}", f"echo {marker}"], env=user.env, check=False)


def _snapshot(user: LimenUser, into: Path) -> LimenUser:
    """A copy of ``user``'s lmsh state: the certificates they hold now, kept for later."""
    shutil.copytree(user.home, into)
    return LimenUser(user.name, into, user.proxy, password=user.password)


@pytest.fixture(scope="module")
def world(module_clusters: ClusterFactory) -> World:
    root = module_clusters("root", "--labels", "env=root")
    root.lmctl("apply", "-f", "-", input=ROOT_ROLE)
    alice = root.signed_up_user("alice", roles=["ops"], logins=[LOGIN])
    leaf = module_clusters("leaf", "--labels", "env=leaf")
    leaf.lmctl("apply", "-f", "-", input=LEAF_ROLE)
    issued = root.lmctl_json("tokens", "add", "--type", "trusted_cluster", "--ttl", "1h")
    token_file = leaf.data_dir / "secrets" / "root.token"
    token_file.write_text(issued["token"] + "\n")
    token_file.chmod(0o600)
    trust = leaf.root / "trust.yaml"
    trust.write_text(yaml.safe_dump({
        "apiVersion": "limen.dev/v1alpha1", "kind": "TrustedCluster",
        "metadata": {"name": "root"},
        "spec": {"proxy_address": root.web, "ca_pin": issued["ca_pin"],
                 "token_secret_ref": {"file": token_file.name},
                 "role_map": [{"remote": "ops", "local": ["visitor"]}]}}))
    leaf.lmctl("apply", "-f", trust)
    alice.login()
    world = World(root, leaf, alice, trust)
    wait_for(lambda: _ssh_ok(alice, "ready"), DEADLINE, "alice reaching the leaf's node")
    return world


def test_a_root_user_ca_rotation_reaches_the_leaf(world: World, tmp_path: Path) -> None:
    alice, leaf_node = world.alice, world.leaf.listeners["node_ssh"]
    before = _snapshot(alice, tmp_path / "before")
    old_key = inspect_ssh_cert(before.ssh_cert_path("root")).signing_ca
    session = EchoSession(alice, "--cluster", "leaf", f"{LOGIN}@{HOST}")
    try:
        session.echo("start")

        world.rotate("--manual")  # init: the new keys are trusted at the root, and at the leaf
        [new_key] = wait_for(lambda: world.keys_changed("user", "added"), PROPAGATION,
                             "the leaf's audit of the root's new user CA key")
        wait_for(lambda: world.keys_changed("host", "added"), PROPAGATION,
                 "the leaf's audit of the root's new host CA key")
        assert new_key != old_key
        assert all(e["signer"] for e in world.ca_updates())  # the root proxy that signed
        _works(before, "init-old", "the certificate from before, in init")
        session.echo("init")

        world.rotate("--phase", "update_clients")  # users get certificates of the new key
        alice.login()
        assert inspect_ssh_cert(alice.ssh_cert_path("root")).signing_ca == new_key
        _works(alice, "clients-new", "a certificate of the new key at the leaf")
        _works(before, "clients-old", "the certificate from before, in update_clients")
        session.echo("clients")

        renewed = len(world.root_renewals())
        world.rotate("--phase", "update_servers")  # the root proxy renews its host cert
        wait_for(lambda: len(world.root_renewals()) >= renewed + 2, PROPAGATION,
                 "the root's proxy and node to renew their host certificates")  # as an admin
        # waits before standby (lmctl auth rotate --grace-period)
        _works(alice, "servers-new", "a certificate of the new key, in update_servers")
        session.echo("servers")

        world.rotate("--phase", "standby")  # the old keys are dropped at the root and the leaf
        wait_for(lambda: old_key in world.keys_changed("user", "removed"), PROPAGATION,
                 "the leaf's audit of the root's old user CA key dropped")
        wait_for(lambda: world.keys_changed("host", "removed"), PROPAGATION,
                 "the leaf's audit of the root's old host CA key dropped")
        refused = _direct(before, leaf_node, "old-direct")
        assert refused.returncode != 0, describe(refused)
        assert "old-direct" not in refused.stdout
        denied = wait_for(lambda: [e for e in world.leaf.audit("auth") if e.get("success")
                                   is False and "untrusted" in str(e.get("reason"))],
                          10.0, "the leaf node's audit of the dropped key's certificate")
        assert denied
        accepted = _direct(alice, leaf_node, "new-direct")
        assert accepted.stdout.strip() == "new-direct", describe(accepted)
        _works(alice, "standby-new", "a certificate of the new key after standby")
        assert not _ssh_ok(before, "standby-old")  # and through the root: refused there
        session.echo("standby")  # the session opened before the rotation is still open
    finally:
        session.close()


def test_the_link_reconnects_to_the_renewed_root_proxy(world: World) -> None:
    """After the rotation the leaf holds only the root's new host key: a new link (disabled,
    then enabled again: no handshake) verifies the root proxy's renewed certificate with it.
    Follows the rotation above (the tests run in file order)."""
    assert world.keys_changed("host", "removed")
    world.trust_enabled(False)
    wait_for(lambda: not _ssh_ok(world.alice, "down"), PROPAGATION, "the link stopped")
    world.trust_enabled(True)
    _works(world.alice, "reconnected", "alice through a new link after the rotation")
