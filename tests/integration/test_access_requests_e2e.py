"""Access requests end to end through `limen start` (auth, proxy and a node agent in one
process): alice holds no login on the node and may only request `node-admin`; bob reviews.
`lmsh request create` → `lmsh request review --approve` by bob → `lmsh login --request-id`
→ `lmsh ssh` with the elevated login (real OpenSSH client behind `lmsh`'s ProxyCommand and
the node's SSH server) works and its session events name the request; without the request
the node is refused; a short request expires: the old certificate stops working on its own
and a login with the id is refused."""

from __future__ import annotations

import getpass
import json
import socket
from datetime import UTC, datetime
from typing import Any

import pytest

from .cluster import ClusterFactory, LimenCluster, LimenUser, describe, run, wait_for

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
BRIEF_SECONDS = 20

ROLES = f"""\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: requester}}
spec:
  allow:
    request: {{roles: [node-admin], max_duration: 1h}}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: brief-requester}}
spec:
  allow:
    request: {{roles: ['^brief-.*$'], max_duration: {BRIEF_SECONDS}s}}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: approver}}
spec:
  allow:
    review_requests: {{roles: ['*-admin']}}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: node-admin}}
spec:
  allow:
    logins: [{LOGIN}]
    node_labels: {{'*': '*'}}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: brief-admin}}
spec:
  allow:
    logins: [{LOGIN}]
    node_labels: {{'*': '*'}}
"""


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory) -> LimenCluster:
    cluster = module_clusters("jit", "--labels", "env=prod")
    cluster.lmctl("apply", "-f", "-", input=ROLES)
    return cluster


def _user(site: LimenCluster, name: str, roles: list[str]) -> LimenUser:
    user = site.signed_up_user(name, roles=roles)
    user.login()
    return user


@pytest.fixture(scope="module")
def bob(site: LimenCluster) -> LimenUser:
    return _user(site, "bob", ["approver"])


def _create(user: LimenUser, role: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(user.lmsh(
        "request", "create", "--roles", role, "--reason", "INC-42", "-o", "json").stdout)
    return answer


def _ssh(user: LimenUser) -> Any:
    return user.lmsh("ssh", f"{LOGIN}@{HOST}", "echo elevated", check=False)


def test_request_approve_login_and_ssh(site: LimenCluster, bob: LimenUser) -> None:
    alice = _user(site, "alice", ["requester"])
    refused = _ssh(alice)
    assert refused.returncode != 0, describe(refused)

    request = _create(alice, "node-admin")
    assert request["state"] == "PENDING"
    assert request["user"] == "alice"
    listed = json.loads(bob.lmsh("request", "ls", "-o", "json").stdout)["items"]
    assert [r["id"] for r in listed] == [request["id"]]
    review = bob.lmsh("request", "review", request["id"], "--approve", "--reason", "ok")
    assert "is now APPROVED" in review.stdout

    login = alice.lmsh("login", "--request-id", request["id"])
    assert "node-admin" in login.stdout, describe(login)
    status = alice.status()
    assert set(status["roles"]) == {"requester", "node-admin"}
    assert status["logins"] == [LOGIN]
    result = wait_for(lambda: (r := _ssh(alice)).returncode == 0 and r, 20.0,
                      "the node to accept alice's elevated login")
    assert result.stdout.strip() == "elevated"

    execs = wait_for(lambda: [e for e in site.audit("exec", user="alice")
                              if e.get("access_requests") == [request["id"]]], 15.0,
                     "the node's exec event naming the access request")
    assert execs[-1]["login"] == LOGIN
    [created] = site.audit("access_request.create", user="alice")
    assert created["request_id"] == request["id"]
    assert created["code"] == "L1100I"
    [approved] = site.audit("access_request.review", user="bob")
    assert approved["state"] == "APPROVED"
    assert approved["requester"] == "alice"
    [used] = site.audit("access_request.use", user="alice")
    assert used["request_id"] == request["id"]
    stored = site.lmctl_json("get", "accessrequests")["items"]
    assert [(d["metadata"]["name"], d["spec"]["state"]) for d in stored] == [
        (request["id"], "APPROVED")]


def test_expiry_ends_the_elevation(site: LimenCluster, bob: LimenUser) -> None:
    erin = _user(site, "erin", ["brief-requester"])
    config = erin.home / "ssh_config"  # the same before and after the elevation
    config.write_text(erin.lmsh("config").stdout, encoding="utf-8")
    target = f"{LOGIN}@{HOST}.{site.name}"
    # from here to the first ssh: four commands within the request's BRIEF_SECONDS
    request = _create(erin, "brief-admin")
    expires = datetime.fromisoformat(request["expires"])
    bob.lmsh("request", "review", request["id"], "--approve")
    erin.lmsh("login", "--request-id", request["id"])
    first = run(["ssh", "-F", config, target, "echo ok"], env=erin.env, check=False)
    assert first.returncode == 0, describe(first)
    assert (expires - datetime.fromisoformat(request["created"])).total_seconds() == \
        BRIEF_SECONDS
    assert datetime.fromisoformat(erin.status()["expires"]) <= expires

    wait_for(lambda: datetime.now(UTC) > expires, BRIEF_SECONDS + 5.0,
             "the access request to expire")
    # the certificate expired on its own: stock ssh with it is refused
    late = run(["ssh", "-F", config, target, "echo ok"], env=erin.env, check=False)
    assert late.returncode != 0, describe(late)
    # and the request cannot be used again: a fresh password login with its id is refused
    again = erin.lmsh("login", "--proxy", site.web, "--user", "erin", "--password-stdin",
                      "--otp", erin.take_code(), "--request-id", request["id"],
                      input=erin.password + "\n", check=False)
    assert again.returncode == 1, describe(again)
    assert "EXPIRED" in again.stderr
    refusals = wait_for(lambda: [e for e in site.audit("access_request.use", user="erin")
                                 if e["success"] is False], 10.0, "the refused use")
    assert refusals[-1]["request_id"] == request["id"]
    assert site.audit("access_request.expire", user="erin")[-1]["request_id"] == request["id"]
