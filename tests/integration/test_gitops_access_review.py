"""Access requests approved by a merged Git commit, end to end: a real ``limen start --gitops
file://REPO`` (auth, proxy and a node agent in one process) syncs a bare repository holding the
roles and users (each user's Git e-mail in the ``emails`` trait).

alice ``lmsh request create`` → a branch adds ``reviews/<id>.yaml`` → bob (review_requests)
merges it with ``git merge --no-ff`` → the sync approves it as bob → alice ``lmsh login
--request-id`` → ``lmsh ssh`` with the elevated login works (real OpenSSH) → the request
expires: the elevated certificate stops working and the id is refused. Refused: carol (no
review_requests) merging a review, and a malformed review merged with a role that is applied
all the same; each refusal audited and named by ``lmctl gitops status``. A restart of
``limen start`` decides no review again.
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gitops_git import WorkTree, bare, role
from gitops_merge import merge_branch, review_yaml

from .cluster import ClusterFactory, LimenCluster, LimenUser, describe, wait_for

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
BRIEF_SECONDS = 18
INTERVAL = 1.0
DEADLINE = INTERVAL + 14.0
ALICE = ("Alice A", "alice@example.com")
BOB = ("Bob B", "bob@example.com")
CAROL = ("Carol C", "carol@example.com")

PEOPLE = f"""\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: brief-requester}}
spec:
  allow:
    request: {{roles: [brief-admin], max_duration: {BRIEF_SECONDS}s}}
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
metadata: {{name: brief-admin}}
spec:
  allow:
    logins: [{LOGIN}]
    node_labels: {{'*': '*'}}
---
apiVersion: limen.dev/v1alpha1
kind: User
metadata: {{name: alice}}
spec: {{roles: [brief-requester], traits: {{emails: [alice@example.com]}}}}
---
apiVersion: limen.dev/v1alpha1
kind: User
metadata: {{name: bob}}
spec: {{roles: [approver], traits: {{emails: [bob@example.com]}}}}
---
apiVersion: limen.dev/v1alpha1
kind: User
metadata: {{name: carol}}
spec: {{roles: [brief-requester], traits: {{emails: [carol@example.com]}}}}
---
apiVersion: limen.dev/v1alpha1
kind: User
metadata: {{name: dave}}
spec: {{roles: [brief-requester]}}
"""


@dataclass
class Site:
    cluster: LimenCluster
    work: WorkTree
    alice: LimenUser
    dave: LimenUser
    """Requests in the refusal tests (alice's elevated certificates expire in the first)."""
    branches: int = 0

    def merge(self, files: dict[str, str], merger: tuple[str, str]) -> str:
        self.branches += 1
        sha = merge_branch(self.work.path, f"review-{self.branches}", files, author=ALICE,
                           merger=merger)
        self.work.push()
        return sha

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.cluster.lmctl_json("gitops", "status")
        return result

    def review_outcome(self, sha: str) -> dict[str, Any]:
        """The sync's outcome of the review merged by ``sha``, once it is live."""
        def decided() -> dict[str, Any] | None:
            status = self.status()
            return next((r for r in status.get("reviews") or [] if r["commit"] == sha), None)
        return wait_for(decided, DEADLINE, f"the review merged by {sha[:12]} to be decided")

    def request(self, user: LimenUser, role_name: str) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(user.lmsh(
            "request", "create", "--roles", role_name, "--reason", "INC-42", "-o",
            "json").stdout)
        return answer

    def stored_request(self, request_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.cluster.lmctl_json("get", f"accessrequests/{request_id}")
        return found


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory, tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("gitops-review")
    remote = bare(root / "access.git")
    work = WorkTree(root / "work", remote)
    work.write("people.yaml", PEOPLE)
    work.commit("People and roles")
    cluster = module_clusters("gitreview", "--labels", "env=prod", "--gitops",
                              f"file://{remote}", "--gitops-interval", f"{INTERVAL:g}s")
    people = []
    for name in ("alice", "dave"):
        person = cluster.user(name)
        person.signup(cluster.lmctl_json("users", "invite", name)["url"])
        person.login()
        people.append(person)
    return Site(cluster, work, people[0], people[1])


def _ssh(user: LimenUser) -> Any:
    return user.lmsh("ssh", f"{LOGIN}@{HOST}", "echo elevated", check=False)


def test_a_merge_by_a_reviewer_approves_until_the_request_expires(site: Site) -> None:
    alice = site.alice
    assert _ssh(alice).returncode != 0
    # from the request to the first ssh: within the request's BRIEF_SECONDS
    request = site.request(alice, "brief-admin")
    assert request["state"] == "PENDING"
    merge = site.merge({f"reviews/{request['id']}.yaml": review_yaml(request["id"])}, BOB)

    outcome = site.review_outcome(merge)
    assert outcome["ok"] is True, outcome
    assert (outcome["user"], outcome["merger"]) == ("bob", "Bob B <bob@example.com>")
    login = alice.lmsh("login", "--request-id", request["id"])
    assert "brief-admin" in login.stdout, describe(login)
    result = wait_for(lambda: (r := _ssh(alice)).returncode == 0 and r, 15.0,
                      "the node to accept alice's elevated login")
    assert result.stdout.strip() == "elevated"

    stored = site.stored_request(request["id"])
    assert stored["spec"]["state"] == "APPROVED"
    assert [(r["author"], r["commit"]) for r in stored["spec"]["reviews"]] == [("bob", merge)]
    [event] = [e for e in site.cluster.audit("access_request.review", user="bob")
               if e.get("request_id") == request["id"]]
    assert event["success"] is True
    assert event["code"] == "L1101I"
    assert (event["via"], event["commit"], event["state"]) == ("git", merge, "APPROVED")

    expires = datetime.fromisoformat(request["expires"])
    wait_for(lambda: datetime.now(UTC) > expires, BRIEF_SECONDS + 5.0,
             "the access request to expire")
    late = _ssh(alice)
    assert late.returncode != 0, describe(late)
    again = alice.lmsh("login", "--proxy", site.cluster.web, "--user", "alice",
                       "--password-stdin", "--otp", alice.take_code(), "--request-id",
                       request["id"], input=alice.password + "\n", check=False)
    assert again.returncode == 1, describe(again)
    assert "EXPIRED" in again.stderr


def test_a_merge_by_a_user_without_review_requests_is_refused(site: Site) -> None:
    request = site.request(site.dave, "brief-admin")
    merge = site.merge({f"reviews/{request['id']}.yaml": review_yaml(request["id"])}, CAROL)

    outcome = site.review_outcome(merge)
    assert outcome["ok"] is False
    assert "carol may not review requests for brief-admin" in outcome["reason"]
    assert site.stored_request(request["id"])["spec"]["state"] == "PENDING"
    [event] = [e for e in site.cluster.audit("access_request.review", user="carol")
               if e.get("request_id") == request["id"]]
    assert event["success"] is False
    assert event["code"] == "L1101W"
    assert (event["via"], event["commit"]) == ("git", merge)
    text = site.cluster.lmctl("gitops", "status").stdout
    assert f"reviews/{request['id']}.yaml[0]" in text
    assert "refused: carol may not review" in text


def test_a_malformed_review_is_refused_and_the_rest_of_the_merge_applies(site: Site) -> None:
    request = site.request(site.dave, "brief-admin")
    merge = site.merge({f"reviews/{request['id']}.yaml": review_yaml(request["id"], "YES"),
                        "roles/ops.yaml": role("ops", "ubuntu")}, BOB)

    outcome = site.review_outcome(merge)
    assert outcome["ok"] is False
    assert "malformed review" in outcome["reason"]
    assert "spec.state" in outcome["reason"]
    assert site.status()["live"]["sha"] == merge
    assert site.cluster.lmctl_json("get", "role/ops")["spec"]["allow"]["logins"] == ["ubuntu"]
    [event] = [e for e in site.cluster.audit("access_request.review")
               if e.get("commit") == merge]
    assert event["success"] is False
    assert event["merger"] == "Bob B <bob@example.com>"


def test_lmctl_apply_refuses_a_review(site: Site, tmp_path: Path) -> None:
    document = tmp_path / "review.yaml"
    document.write_text(review_yaml("0b5c7a1e-3f4d-4c1a-9e2b-7d8f6a5b4c3d"), encoding="utf-8")
    result = site.cluster.lmctl("apply", "-f", str(document), check=False)
    assert result.returncode == 1, describe(result)
    assert "accepted only from the Git sync" in result.stderr


def test_a_restart_decides_no_review_again(clusters: ClusterFactory, tmp_path: Path) -> None:
    """One approved and one refused review, then `limen start` is stopped and started again
    on the same data and a new commit lands: no review is made or audited twice."""
    remote = bare(tmp_path / "access.git")
    work = WorkTree(tmp_path / "work", remote)
    work.write("people.yaml", PEOPLE)
    work.commit("People and roles")
    cluster = clusters("gitrestart", "--gitops", f"file://{remote}", "--gitops-interval",
                       f"{INTERVAL:g}s")
    dave = cluster.user("dave")
    dave.signup(cluster.lmctl_json("users", "invite", "dave")["url"])
    dave.login()
    site = Site(cluster, work, dave, dave)
    approved = site.request(dave, "brief-admin")
    refused = site.request(dave, "brief-admin")
    first = site.merge({f"reviews/{approved['id']}.yaml": review_yaml(approved["id"])}, BOB)
    assert site.review_outcome(first)["ok"] is True
    second = site.merge({f"reviews/{refused['id']}.yaml": review_yaml(refused["id"])},
                        ("Mallory M", "mallory@example.com"))
    assert site.review_outcome(second)["ok"] is False
    before = cluster.audit("access_request.review")
    assert len(before) == 2

    cluster.stop()
    cluster.start()
    work.write("roles/later.yaml", role("later", "ubuntu"))
    later = work.commit("A later commit")
    wait_for(lambda: (site.status()["live"] or {}).get("sha") == later, DEADLINE,
             "the later commit to be live after the restart")

    assert cluster.audit("access_request.review") == before
    outcomes = {r["commit"]: r["ok"] for r in site.status()["reviews"]}
    assert outcomes == {first: True, second: False}
    reviews = site.stored_request(approved["id"])["spec"]["reviews"]
    assert [(r["author"], r["commit"]) for r in reviews] == [("bob", first)]
