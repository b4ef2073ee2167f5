"""Attacks on access requests against a real `limen start` cluster, each performed with
`lmsh` as a user would and each refused with its audit event:

- self-approval (also by a user who holds review_requests for the role);
- approval by a user without review_requests;
- requesting a role no role of the user allows, and a role a deny forbids;
- reusing a denied request (approving it afterwards, logging in with it);
- tampering with the request id: another user's approved request, an id changed by one
  character, a path instead of an id.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from integration.cluster import ClusterFactory, LimenCluster, LimenUser, describe, wait_for

ROLES = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: requester}
spec:
  allow:
    request: {roles: ['db-*'], max_duration: 1h}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: no-root}
spec:
  deny:
    request: {roles: [db-root]}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: approver}
spec:
  allow:
    request: {roles: [db-admin]}
    review_requests: {roles: ['db-*']}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: db-admin}
spec:
  allow:
    db_users: [postgres]
    db_labels: {'*': '*'}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: db-root}
spec:
  allow:
    logins: [root]
    node_labels: {'*': '*'}
"""


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory) -> LimenCluster:
    cluster = module_clusters("jitsec")
    cluster.lmctl("apply", "-f", "-", input=ROLES)
    return cluster


def _user(site: LimenCluster, name: str, roles: list[str]) -> LimenUser:
    user = site.signed_up_user(name, roles=roles)
    user.login()
    return user


@pytest.fixture(scope="module")
def alice(site: LimenCluster) -> LimenUser:
    return _user(site, "alice", ["requester", "no-root"])


@pytest.fixture(scope="module")
def bob(site: LimenCluster) -> LimenUser:
    return _user(site, "bob", ["approver"])


@pytest.fixture(scope="module")
def carol(site: LimenCluster) -> LimenUser:
    return _user(site, "carol", ["requester"])


def _create(user: LimenUser, role: str = "db-admin") -> str:
    answer: dict[str, Any] = json.loads(user.lmsh(
        "request", "create", "--roles", role, "--reason", "attack", "-o", "json").stdout)
    return str(answer["id"])


def _refused(result: Any, words: str) -> None:
    assert result.returncode == 1, describe(result)
    assert words in result.stderr, describe(result)


def _audited(site: LimenCluster, event_type: str, user: str,
             match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    found = wait_for(lambda: [e for e in site.audit(event_type, user=user)
                              if e["success"] is False and match(e)], 10.0,
                     f"a refused {event_type} event of {user}")
    event: dict[str, Any] = found[-1]
    assert event["code"].endswith("W")
    return event


def test_self_approval_is_refused(site: LimenCluster, alice: LimenUser,
                                  bob: LimenUser) -> None:
    request_id = _create(alice)
    _refused(alice.lmsh("request", "review", request_id, "--approve", check=False),
             "may not review their own access request")
    _audited(site, "access_request.review", "alice", lambda e: e["request_id"] == request_id)
    # a reviewer of db-* requests may not approve their own request either
    own = _create(bob)
    _refused(bob.lmsh("request", "review", own, "--approve", check=False), "their own")
    _audited(site, "access_request.review", "bob", lambda e: e["request_id"] == own)
    _refused(alice.lmsh("login", "--request-id", request_id, check=False), "PENDING")


def test_approval_without_review_requests_is_refused(site: LimenCluster, alice: LimenUser,
                                                     carol: LimenUser) -> None:
    request_id = _create(alice)
    _refused(carol.lmsh("request", "review", request_id, "--approve", check=False),
             "may not review requests for db-admin")
    _audited(site, "access_request.review", "carol", lambda e: e["request_id"] == request_id)
    ls = json.loads(carol.lmsh("request", "ls", "-o", "json").stdout)["items"]
    assert request_id not in {r["id"] for r in ls}  # not even listed to a non-reviewer


def test_requesting_a_role_no_role_allows_is_refused(site: LimenCluster,
                                                     carol: LimenUser) -> None:
    result = carol.lmsh("request", "create", "--roles", "approver", check=False)
    _refused(result, "no role allows requesting role 'approver'")
    _audited(site, "access_request.create", "carol", lambda e: e["roles"] == ["approver"])


def test_requesting_a_role_a_deny_forbids_is_refused(site: LimenCluster,
                                                     alice: LimenUser) -> None:
    result = alice.lmsh("request", "create", "--roles", "db-root", check=False)
    _refused(result, "role 'no-root' denies requesting role 'db-root'")
    _audited(site, "access_request.create", "alice", lambda e: e["roles"] == ["db-root"])


def test_a_denied_request_cannot_be_reused(site: LimenCluster, alice: LimenUser,
                                           bob: LimenUser) -> None:
    request_id = _create(alice)
    bob.lmsh("request", "review", request_id, "--deny", "--reason", "no")
    _refused(bob.lmsh("request", "review", request_id, "--approve", check=False),
             "is DENIED and cannot be approved")
    _audited(site, "access_request.review", "bob",
             lambda e: e["request_id"] == request_id and e["state"] == "APPROVED")
    _refused(alice.lmsh("login", "--request-id", request_id, check=False), "DENIED")
    _audited(site, "access_request.use", "alice", lambda e: e["request_id"] == request_id)
    assert "db-admin" not in alice.status()["roles"]


def test_tampered_request_ids_are_refused(site: LimenCluster, alice: LimenUser,
                                          bob: LimenUser, carol: LimenUser) -> None:
    request_id = _create(alice)
    bob.lmsh("request", "review", request_id, "--approve")
    # another user's approved request
    _refused(carol.lmsh("login", "--request-id", request_id, check=False), "not carol's")
    _audited(site, "access_request.use", "carol", lambda e: e["request_id"] == request_id)
    # one character changed: no such request
    forged = request_id[:-1] + ("0" if request_id[-1] != "0" else "1")
    _refused(alice.lmsh("login", "--request-id", forged, check=False), "no access request")
    _audited(site, "access_request.use", "alice", lambda e: e["request_id"] == forged)
    # a path instead of an id reaches nothing else
    for bad in ("../../users/alice", "x" * 300):
        result = alice.lmsh("login", "--request-id", bad, check=False)
        assert result.returncode == 1, describe(result)
        _audited(site, "access_request.use", "alice",
                 lambda e, bad=bad: e["request_id"] == bad[:80])
    assert "db-admin" not in alice.status()["roles"]
    # the approved request still works for its owner
    assert "db-admin" in alice.lmsh("login", "--request-id", request_id).stdout
