"""Locks over SSH, end to end: a real ``limen start --gitops`` (auth, proxy and node "solo" in
one process) and a node agent apart from auth ("apart", fed by the long poll of /v1/locks
through its tunnel). ``lmctl lock`` ends open ``lock: strict`` sessions of the target on both
nodes within 2 s and refuses new sessions and logins with ``locked: <message>``; a node lock
refuses sessions to that node only; a lock with a short expiry lifts on its own; a Lock
committed to the Git repository works the same; locks of other users leave a session alone.
"""

from __future__ import annotations

import getpass
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitops_git import git

from .cluster import ClusterFactory, LimenCluster, LimenUser, command, describe, wait_for

LOGIN = getpass.getuser()
ROLE = f"""\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: lock-strict}}
spec:
  options: {{lock: strict}}
  allow:
    logins: [{LOGIN}]
    node_labels: {{env: dev}}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: lock-best-effort}}
spec:
  options: {{lock: best_effort}}
  allow:
    logins: [{LOGIN}]
    node_labels: {{env: dev}}
"""
ENDED_WITHIN = 2.0
"""How soon an open strict session must end after lmctl lock returns (the brief's bound)."""


@dataclass
class Site:
    cluster: LimenCluster
    repo: Path
    apart: LimenCluster


def _commit(work: Path, message: str) -> None:
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "--allow-empty", "-m", message)
    git(work, "push", "--quiet", "origin", "HEAD:refs/heads/main")


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("locks")
    remote, work = root / "access.git", root / "work"
    remote.mkdir()
    work.mkdir()
    git(remote, "init", "--quiet", "--bare", "--initial-branch=main")
    git(work, "init", "--quiet", "--initial-branch=main")
    git(work, "remote", "add", "origin", str(remote))
    (work / "roles.yaml").write_text(ROLE, encoding="utf-8")
    _commit(work, "roles")
    cluster = module_clusters("locks", "--gitops", f"file://{remote}", "--gitops-interval",
                              "0.5s", "--nodename", "solo", "--labels", "env=dev")
    token = cluster.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
    apart = LimenCluster(root / "apart", "locks", [
        "--roles", "node", "--nodename", "apart", "--labels", "env=dev",
        "--proxy", cluster.web, "--token", token["token"], "--ca-pin", token["ca_pin"]])
    try:
        apart.start()
        wait_for(lambda: len(cluster.lmctl_json("nodes", "ls")["items"]) == 2, 30.0,
                 "solo and apart heartbeating")
        yield Site(cluster, work, apart)
    finally:
        apart.kill()


@pytest.fixture(scope="module")
def people(site: Site) -> dict[str, LimenUser]:
    """Everyone the module locks, signed up and logged in at once (in parallel)."""
    users = [*site.cluster.signed_up_users("bob", "bystander", "dave", "erin", "frank",
                                           roles=["lock-strict"]),
             site.cluster.signed_up_user("carol", roles=["lock-best-effort"])]
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda user: user.login(), users))
    return {user.name: user for user in users}


def _open(user: LimenUser, node: str) -> subprocess.Popen[bytes]:
    session = subprocess.Popen(
        [command("lmsh"), "ssh", f"{LOGIN}@{node}", "echo started; sleep 60"],
        env=user.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert session.stdout is not None
    assert session.stdout.readline() == b"started\n", session.stderr.read() if \
        session.stderr else ""
    return session


def _close(*sessions: subprocess.Popen[bytes]) -> None:
    for session in sessions:
        session.kill()
        session.communicate()


def _ssh(user: LimenUser, node: str) -> subprocess.CompletedProcess[str]:
    return user.lmsh("ssh", f"{LOGIN}@{node}", "echo in", check=False)


def _refused(user: LimenUser, node: str) -> subprocess.CompletedProcess[str] | None:
    result = _ssh(user, node)
    return result if result.returncode != 0 else None


def _lock(site: Site, *args: str) -> str:
    return site.cluster.lmctl("lock", *args).stdout.strip()


def test_a_user_lock_ends_strict_sessions_on_both_nodes_and_refuses_new_ones(
        site: Site, people: dict[str, LimenUser]) -> None:
    bob, bystander = people["bob"], people["bystander"]
    sessions = [_open(bob, "solo"), _open(bob, "apart")]
    other = _open(bystander, "solo")
    try:
        name = _lock(site, "--user", "bob", "--message", "incident 7")
        locked_at = time.monotonic()
        wait_for(lambda: all(s.poll() is not None for s in sessions), ENDED_WITHIN,
                 "both of bob's sessions to be ended")
        assert time.monotonic() - locked_at <= ENDED_WITHIN
        assert other.poll() is None  # a lock on bob leaves others alone
        for node in ("solo", "apart"):
            refused = _ssh(bob, node)
            assert refused.returncode != 0, describe(refused)
            assert "locked: incident 7" in refused.stderr, describe(refused)
        login = bob.login(check=False)
        assert login.returncode != 0, describe(login)
        assert "locked: incident 7" in login.stderr, describe(login)
        events = site.cluster.audit("access.denied", user="bob")
        assert {e.get("lock") for e in events} == {name}
        refused_at_proxy = [e for e in events if e.get("proxy") and e.get("lock") == name]
        assert {e["server"] for e in refused_at_proxy} == {"solo", "apart"}
        assert len({e.get("server_id") for e in events if e.get("action") == "session"}) == 2
        [cert] = [e for e in site.cluster.audit("cert.create", user="bob")
                  if e.get("lock") == name]
        assert cert["reason"] == "locked: incident 7"
        created = site.cluster.audit("lock.created")
        assert [e["name"] for e in created if e["name"] == name] == [name]
        table = site.cluster.lmctl("get", "locks").stdout
        row = next(line for line in table.splitlines() if line.startswith(name))
        assert row.split()[1:3] == ["user=bob", "incident"]

        site.cluster.lmctl("rm", f"lock/{name}")
        wait_for(lambda: _ssh(bob, "apart").returncode == 0, 5.0, "the lock to be lifted")
        assert _ssh(bob, "solo").returncode == 0
        assert [e["name"] for e in site.cluster.audit("lock.deleted")] == [name]
    finally:
        _close(*sessions, other)


def test_best_effort_sessions_end_at_the_next_check(
        site: Site, people: dict[str, LimenUser]) -> None:
    carol = people["carol"]
    session = _open(carol, "solo")
    try:
        name = _lock(site, "--user", "carol")
        wait_for(lambda: session.poll() is not None, 8.0, "the next periodic check")
        assert "locked:" in _ssh(carol, "solo").stderr
    finally:
        _close(session)
        site.cluster.lmctl("rm", f"lock/{name}")


def test_a_node_lock_refuses_that_node_only_and_expires_on_its_own(
        site: Site, people: dict[str, LimenUser]) -> None:
    dave = people["dave"]
    name = _lock(site, "--node", "apart", "--ttl", "8s", "--message", "patching")
    refused = wait_for(lambda: _refused(dave, "apart"), 5.0,
                       "the node lock to reach the node apart from auth")
    assert "locked: patching" in refused.stderr, describe(refused)
    assert _ssh(dave, "solo").returncode == 0
    wait_for(lambda: _ssh(dave, "apart").returncode == 0, 20.0, "the lock to expire")
    # auth's sweep (every 30 s) deletes it once expired: listed until then, then audited
    listed = site.cluster.lmctl("get", f"lock/{name}", check=False)
    swept = [e for e in site.cluster.audit("lock.deleted") if e["name"] == name]
    assert listed.returncode == 0 or swept[0]["reason"] == "expired", describe(listed)


def test_a_lock_committed_to_git_works_the_same(
        site: Site, people: dict[str, LimenUser]) -> None:
    erin = people["erin"]
    session = _open(erin, "apart")
    try:
        (site.repo / "locks.yaml").write_text(
            "apiVersion: limen.dev/v1alpha1\nkind: Lock\nmetadata: {name: erin-out}\n"
            "spec:\n  target: {user: erin}\n  message: offboarded\n", encoding="utf-8")
        _commit(site.repo, "lock erin")
        wait_for(lambda: session.poll() is not None, 10.0, "the Git lock to end the session")
        assert "locked: offboarded" in _ssh(erin, "solo").stderr
        lock = site.cluster.lmctl_json("get", "lock/erin-out")
        assert lock["metadata"]["labels"]["limen.dev/origin"] == "git"
        (site.repo / "locks.yaml").unlink()
        _commit(site.repo, "unlock erin")
        wait_for(lambda: _ssh(erin, "solo").returncode == 0, 10.0, "the lock to be removed")
    finally:
        _close(session)


def test_an_expired_lock_from_git_locks_nobody(
        site: Site, people: dict[str, LimenUser]) -> None:
    frank = people["frank"]
    (site.repo / "expired.yaml").write_text(
        "apiVersion: limen.dev/v1alpha1\nkind: Lock\nmetadata: {name: frank-old}\n"
        "spec:\n  target: {user: frank}\n  expires: '2020-01-01T00:00:00Z'\n",
        encoding="utf-8")
    _commit(site.repo, "an old lock")
    wait_for(lambda: site.cluster.lmctl("get", "lock/frank-old", check=False).returncode == 0,
             10.0, "the sync")
    assert _ssh(frank, "apart").returncode == 0
    assert _ssh(frank, "solo").returncode == 0
