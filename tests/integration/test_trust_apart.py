"""Trusted clusters when the leaf's proxy and node run apart from its auth (real processes).

::

    root (limen start: auth+proxy+node)  ◀──cluster link──  leaf proxy (--roles proxy)
                                                               ▲ reverse tunnel
    leaf auth (--roles auth, --gitops: the TrustedCluster)     leaf node (--roles node)

The leaf's auth handshakes with the root from its Git repository; the separate proxy and node
learn the root's CAs and role_map from auth (``GET /v1/trust/roots``): the proxy dials the
root, the node trusts the root's user CA under the role_map. A root user then reaches the
separate leaf node with stock ``ssh`` through ``lmsh config`` (``node.leaf``); the session is
audited on the leaf (its events reach leaf auth through the node's outbox, stamped with the
node's host id) and its recording is uploaded there; a commit disabling the TrustedCluster
cuts the link and the access. One layout serves the module; the tests run in file order.
"""

from __future__ import annotations

import getpass
import json
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_git import WorkTree, bare

from .cluster import ClusterFactory, LimenCluster, LimenUser, describe, run, wait_for

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
DEADLINE = 30.0
"""Seconds a commit may take to change what users see (Git poll, handshake, trust poll, link)."""

ROOT_ROLES = f"""
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: ops}}
spec:
  allow:
    logins: [{LOGIN}]
    node_labels: {{'*': '*'}}
    cluster_labels: {{'*': '*'}}
"""
VISITOR = f"""apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: visitor}}
spec:
  allow:
    logins: [{LOGIN}]
    node_labels: {{'*': '*'}}
"""


@dataclass
class World:
    root: LimenCluster
    auth: LimenCluster
    proxy: LimenCluster
    node: LimenCluster
    repo: WorkTree
    alice: LimenUser
    token_file: Path
    ca_pin: str

    def commit_trust(self, enabled: bool) -> None:
        self.repo.write("trusted-clusters/root.yaml", yaml.safe_dump({
            "apiVersion": "limen.dev/v1alpha1", "kind": "TrustedCluster",
            "metadata": {"name": "root"},
            "spec": {"enabled": enabled, "proxy_address": self.root.web, "ca_pin": self.ca_pin,
                     "token_secret_ref": {"file": self.token_file.name},
                     "role_map": [{"remote": "ops", "local": ["visitor"]}]}}))
        self.repo.commit(f"trusted cluster root: enabled={enabled}")

    def ssh(self, *args: str, check: bool = True) -> Any:
        return run(["ssh", "-F", self.alice.home / "ssh_config", *args], env=self.alice.env,
                   check=check)


def _config(path: Path, tree: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def leaf_state(user: LimenUser) -> str:
    answer = json.loads(user.lmsh("clusters", "-o", "json").stdout)
    rows = {row["name"]: row for row in answer["items"]}
    return str(rows.get("leaf", {}).get("connection", "absent"))


@pytest.fixture(scope="module")
def world(module_clusters: ClusterFactory, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    base = tmp_path_factory.mktemp("trust-apart")
    root = module_clusters("root", "--labels", "env=root")
    root.lmctl("apply", "-f", "-", input=ROOT_ROLES)
    alice = root.signed_up_user("alice", roles=["ops"], logins=[LOGIN])
    issued = root.lmctl_json("tokens", "add", "--type", "trusted_cluster", "--ttl", "1h")
    secrets_dir = base / "leaf-secrets"  # trust.secrets_dir in the leaf auth's limen.yaml
    secrets_dir.mkdir(mode=0o700)
    token_file = secrets_dir / "root.token"
    token_file.write_text(issued["token"] + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    remote = bare(base / "access.git")
    repo = WorkTree(base / "work", remote)
    repo.write("roles/visitor.yaml", VISITOR)
    repo.commit("visitor role")
    proxy_token = secrets.token_hex(24)
    proxy_token_file = base / "proxy-token"
    proxy_token_file.write_text(proxy_token + "\n", encoding="utf-8")
    proxy_token_file.chmod(0o600)
    auth = LimenCluster(base / "auth", "leaf", [
        "--roles", "auth", "-c", str(_config(base / "auth.yaml", {
            "auth": {"proxy_token_file": str(proxy_token_file)},
            "trust": {"secrets_dir": str(secrets_dir)}})),
        "--gitops", f"file://{remote}", "--gitops-interval", "1s"])
    started: list[LimenCluster] = []
    try:
        started.append(auth.start())
        node_token = auth.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
        pin = node_token["ca_pin"]
        proxy = LimenCluster(base / "proxy", "leaf", [
            "--roles", "proxy", "--auth-server", auth.auth, "--token", proxy_token,
            "--ca-pin", pin])
        started.append(proxy.start())
        node = LimenCluster(base / "node", "leaf", [
            "--roles", "node", "--labels", "env=leaf", "--proxy", proxy.web,
            "--token", node_token["token"], "--ca-pin", pin])
        started.append(node.start())
        world = World(root, auth, proxy, node, repo, alice, token_file, str(issued["ca_pin"]))
        world.commit_trust(enabled=True)  # the pull request merged on the leaf
        alice.login()
        yield world
    finally:
        for process in reversed(started):
            process.kill()


def test_the_separate_leaf_proxy_links_to_the_root(world: World) -> None:
    wait_for(lambda: leaf_state(world.alice) == "online", DEADLINE, "the leaf online")

    def listed() -> list[dict[str, Any]]:
        items = json.loads(world.alice.lmsh("ls", "--cluster", "leaf", "-o", "json").stdout)
        return [n for n in items["items"] if n["hostname"] == HOST]

    nodes = wait_for(listed, DEADLINE, "the separate leaf node in lmsh ls --cluster leaf")
    assert nodes[0]["labels"] == {"env": "leaf"}


def test_stock_ssh_reaches_the_separate_leaf_node_audited_on_the_leaf(world: World) -> None:
    config = world.alice.home / "ssh_config"
    config.write_text(world.alice.lmsh("config").stdout, encoding="utf-8")
    assert "Host *.leaf" in config.read_text(encoding="utf-8")
    # the node apart learns the root's user CA from its leaf auth's trust roots, which it
    # polls (every 3 s): "Permission denied (publickey)" until then
    attempts: list[str] = []

    def reached() -> bool:
        result = world.ssh("-tt", f"{LOGIN}@{HOST}.leaf", "echo apart-$((6*7))", check=False)
        attempts.append(describe(result))
        return "apart-42" in result.stdout
    try:
        wait_for(reached, DEADLINE, "stock ssh to the leaf node", interval=0.5)
    except AssertionError:
        raise AssertionError("\n".join(attempts[-2:]) + world.node.output()) from None

    def ended() -> list[dict[str, Any]]:
        return [e for e in world.auth.audit("session.end", user="alice") if e.get("recorded")]

    event = wait_for(ended, DEADLINE, "the node's session.end at leaf auth (its outbox)")[-1]
    node_id = (world.node.data_dir / "host_uuid").read_text(encoding="utf-8").strip()
    assert event["user_cluster"] == "root"
    assert event["cluster"] == "leaf"
    assert event["server_id"] == node_id
    cast = world.auth.data_dir / "log" / "recordings" / f"{event['session_id']}.cast"
    wait_for(cast.exists, DEADLINE, "the recording uploaded to leaf auth")
    assert "apart-42" in cast.read_text(encoding="utf-8")
    routed = [e for e in world.root.audit("session.start", user="alice")
              if e.get("target_cluster") == "leaf"]
    assert routed


def test_disabling_by_commit_cuts_the_link_and_the_access(world: World) -> None:
    world.commit_trust(enabled=False)
    wait_for(lambda: leaf_state(world.alice) == "offline", DEADLINE, "the leaf offline")
    refused = world.ssh(f"{LOGIN}@{HOST}.leaf", "echo still-in", check=False)
    assert refused.returncode != 0, describe(refused)
    assert "still-in" not in refused.stdout
