"""Access request reviews merged in Git (limen.gitops.reviews) against an in-process auth
server (memory backend, a clock the test moves) and real Git repositories: the merger of a
`git merge --no-ff` is the reviewer; every refusal (self-review, no review_requests, an
e-mail no user has, an unknown or expired request, a malformed document) is audited, named
in the sync status and stops nothing; a decided review is not decided again."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gitops_git import WorkTree, bare, role
from gitops_merge import git_as, merge_branch, review_yaml, ssh_key
from limen.api.access_request import AccessRequest, RequestState
from limen.api.resources import Kind
from limen.auth.core import AuthServer
from limen.auth.store_keys import GITOPS_STATUS_KEY
from limen.backend.memory import MemoryBackend
from limen.ca.identity import Identity
from limen.config import ClusterSettings, GitOpsSettings, Settings
from limen.errors import AccessDenied
from limen.events.emitter import MemoryEmitter
from limen.gitops.sync import GitOpsSync, Outcome

START = 1_800_000_000.0
ALICE = ("Alice A", "alice@example.com")
BOB = ("Bob B", "Bob@Example.COM")  # the trait says bob@example.com: case-insensitive
CAROL = ("Carol C", "carol@example.com")
MALLORY = ("Mallory M", "mallory@example.com")

PEOPLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: requester}
spec:
  allow:
    request: {roles: [db-admin], max_duration: 1h}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: reviewer}
spec:
  allow:
    review_requests: {roles: [db-admin]}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: db-admin}
spec:
  allow:
    logins: [postgres]
---
apiVersion: limen.dev/v1alpha1
kind: User
metadata: {name: alice}
spec: {roles: [requester, reviewer], traits: {emails: [alice@example.com]}}
---
apiVersion: limen.dev/v1alpha1
kind: User
metadata: {name: bob}
spec: {roles: [reviewer], traits: {emails: [bob@example.com, b.b@corp.example]}}
---
apiVersion: limen.dev/v1alpha1
kind: User
metadata: {name: carol@example.com}
spec: {roles: [requester]}
"""


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Site:
    work: WorkTree
    auth: AuthServer
    emitter: MemoryEmitter
    sync: GitOpsSync
    settings: Settings
    clock: Clock
    branches: int = 0

    def reviews_audited(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.emitter.events if e.type == "access_request.review"]

    async def request(self, user: str = "alice") -> AccessRequest:
        return await self.auth.access_requests.create(
            Identity(username=user, cluster="unit"), ["db-admin"], "INC-42")

    async def state(self, request_id: str) -> AccessRequest:
        return AccessRequest.from_resource(
            await self.auth.store.get(Kind.ACCESS_REQUEST, request_id))

    def merge(self, files: dict[str, str], merger: tuple[str, str],
              author: tuple[str, str] = ALICE, sign_with: Path | None = None) -> str:
        """A branch adds ``files`` (committed by ``author``); ``merger`` merges it with
        ``git merge --no-ff`` and pushes; the merge commit's sha."""
        self.branches += 1
        merged = merge_branch(self.work.path, f"review-{self.branches}", files, author=author,
                              merger=merger, sign_with=sign_with)
        self.work.push()
        return merged

    async def status(self) -> dict[str, Any]:
        item = await self.auth.backend.get(GITOPS_STATUS_KEY)
        assert item is not None
        status: dict[str, Any] = json.loads(item.value)
        return status

    async def restart_sync(self) -> None:
        await self.sync.stop()
        self.sync = GitOpsSync(self.settings, self.auth, env={})
        report = await self.sync.start()
        assert report.outcome is Outcome.APPLIED
        await self.sync.pause()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with started_site(tmp_path) as started:
        yield started


@contextlib.asynccontextmanager
async def started_site(tmp_path: Path, **gitops: Any) -> AsyncIterator[Site]:
    remote = bare(tmp_path / "access.git")
    emitter = MemoryEmitter()
    clock = Clock()
    auth = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), emitter, clock=clock)
    await auth.start()
    work = WorkTree(tmp_path / "work", remote)
    work.write("people.yaml", PEOPLE)
    work.commit("People")
    settings = Settings(data_dir=tmp_path / "data", gitops=GitOpsSettings(
        source=str(remote), interval_seconds=60, **gitops))
    sync = GitOpsSync(settings, auth, env={})
    assert (await sync.sync_once()).outcome is Outcome.APPLIED
    site = Site(work, auth, emitter, sync, settings, clock)
    yield site
    await site.sync.stop()


async def test_the_merger_approves_and_the_review_records_the_commit(site: Site) -> None:
    request = await site.request()
    merge = site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id)}, BOB)

    assert (await site.sync.sync_once()).outcome is Outcome.APPLIED

    stored = await site.state(request.id)
    assert stored.state is RequestState.APPROVED
    [review] = stored.reviews
    assert (review.author, review.commit, review.reason) == ("bob", merge, "INC-42 ok")
    approved = await site.auth.access_requests.approved_for("alice", request.id)
    assert approved.roles == ("db-admin",)
    [event] = site.reviews_audited()
    assert event["success"] is True
    assert event["user"] == "bob"
    assert (event["via"], event["commit"], event["state"]) == ("git", merge, "APPROVED")
    [outcome] = (await site.status())["reviews"]
    assert outcome["ok"] is True
    assert outcome["file"] == f"reviews/{request.id}.yaml[0]"
    assert outcome["merger"] == "Bob B <Bob@Example.COM>"
    assert outcome["user"] == "bob"


async def test_a_decided_review_is_not_decided_again(site: Site) -> None:
    request = await site.request()
    site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id)}, BOB)
    await site.sync.sync_once()
    site.work.write("roles/extra.yaml", role("extra", "ubuntu"))
    site.work.commit("Unrelated change")

    assert (await site.sync.sync_once()).outcome is Outcome.APPLIED
    await site.restart_sync()

    assert len(site.reviews_audited()) == 1
    assert len((await site.state(request.id)).reviews) == 1
    assert (await site.status())["reviews"][0]["ok"] is True


async def test_a_deny_by_git(site: Site) -> None:
    request = await site.request()
    merge = site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id, "DENIED",
                                                                   "not now")}, BOB)
    await site.sync.sync_once()

    stored = await site.state(request.id)
    assert stored.state is RequestState.DENIED
    assert stored.reviews[0].commit == merge
    with pytest.raises(AccessDenied, match="DENIED"):
        await site.auth.access_requests.approved_for("alice", request.id)
    assert site.reviews_audited()[-1]["state"] == "DENIED"


async def test_a_commit_pushed_straight_to_the_branch_is_reviewed_by_its_committer(
        site: Site) -> None:
    """No merge commit: the committer made it part of the branch (here bob commits a file
    alice wrote)."""
    request = await site.request()
    site.work.write(f"reviews/{request.id}.yaml", review_yaml(request.id))
    git_as(site.work.path, ALICE, "add", "--all")
    git_as(site.work.path, ALICE, "commit", "--quiet", "-m", "review", committer=BOB)
    site.work.push()
    await site.sync.sync_once()

    assert (await site.state(request.id)).reviews[0].author == "bob"


async def _refused(site: Site, request_id: str, words: str) -> dict[str, Any]:
    """The refused review's audit event, the request untouched, the status naming it."""
    event = site.reviews_audited()[-1]
    assert event["success"] is False
    assert event["via"] == "git"
    assert words in event["reason"]
    outcome = (await site.status())["reviews"][-1]
    assert outcome["ok"] is False
    assert words in outcome["reason"]
    found = await site.auth.store.find(Kind.ACCESS_REQUEST, request_id)
    if found is not None:
        assert AccessRequest.from_resource(found).reviews == ()
    return event


async def test_the_requester_merging_the_review_of_her_own_request_is_refused(
        site: Site) -> None:
    """alice holds review_requests for db-admin, but not for her own request; the role the
    same merge adds is applied all the same."""
    request = await site.request()
    merge = site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id),
                        "roles/ops.yaml": role("ops", "ubuntu")}, ALICE, author=BOB)
    assert (await site.sync.sync_once()).outcome is Outcome.APPLIED

    event = await _refused(site, request.id, "may not review their own access request")
    assert event["user"] == "alice"
    assert event["commit"] == merge
    assert (await site.state(request.id)).state is RequestState.PENDING
    assert await site.auth.store.find(Kind.ROLE, "ops") is not None


async def test_a_merger_without_review_requests_is_refused(site: Site) -> None:
    """carol's user name is her e-mail address; she has no review_requests."""
    request = await site.request()
    site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id)}, CAROL)
    await site.sync.sync_once()

    event = await _refused(site, request.id, "may not review requests for db-admin")
    assert event["user"] == "carol@example.com"


async def test_an_email_no_user_has_is_refused(site: Site) -> None:
    request = await site.request()
    merge = site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id)}, MALLORY)
    await site.sync.sync_once()

    event = await _refused(site, request.id, "no Limen user has the e-mail address")
    assert event["merger"] == "Mallory M <mallory@example.com>"
    assert event["commit"] == merge
    assert event["request_id"] == request.id


async def test_an_email_two_users_claim_is_refused(site: Site) -> None:
    request = await site.request()
    site.work.write("eve.yaml", "apiVersion: limen.dev/v1alpha1\nkind: User\n"
                    "metadata: {name: eve}\nspec: {roles: [reviewer], traits: "
                    "{emails: [BOB@example.com]}}\n")
    site.work.commit("eve claims bob's address")
    site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id)}, BOB)
    await site.sync.sync_once()

    await _refused(site, request.id, "belongs to several users (bob, eve)")


async def test_an_unknown_request_is_refused(site: Site) -> None:
    unknown = "0b5c7a1e-3f4d-4c1a-9e2b-7d8f6a5b4c3d"
    site.merge({f"reviews/{unknown}.yaml": review_yaml(unknown)}, BOB)
    await site.sync.sync_once()

    await _refused(site, unknown, "no access request")


async def test_an_expired_request_is_refused(site: Site) -> None:
    request = await site.request()
    site.clock.now += timedelta(hours=2).total_seconds()
    site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id)}, BOB)
    await site.sync.sync_once()

    await _refused(site, request.id, "is EXPIRED and cannot be approved")


async def test_a_malformed_review_is_refused_and_the_rest_applies(site: Site) -> None:
    request = await site.request()
    site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id, "MAYBE"),
                "roles/ops.yaml": role("ops", "ubuntu")}, BOB)
    assert (await site.sync.sync_once()).outcome is Outcome.APPLIED

    event = await _refused(site, request.id, "malformed review")
    assert "spec.state" in event["reason"]
    assert await site.auth.store.find(Kind.ROLE, "ops") is not None


async def test_a_refusal_is_audited_once(site: Site) -> None:
    request = await site.request()
    site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id)}, MALLORY)
    await site.sync.sync_once()
    site.work.write("roles/extra.yaml", role("extra", "ubuntu"))
    site.work.commit("Unrelated change")
    await site.sync.sync_once()
    await site.restart_sync()

    assert len([e for e in site.reviews_audited() if e["success"] is False]) == 1


async def test_changing_a_merged_review_makes_its_merger_the_reviewer(site: Site) -> None:
    """mallory's merge is refused; bob merging a change to the same file approves."""
    request = await site.request()
    site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id)}, MALLORY)
    await site.sync.sync_once()
    merge = site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id, reason="ok")},
                       BOB)
    await site.sync.sync_once()

    stored = await site.state(request.id)
    assert stored.state is RequestState.APPROVED
    assert (stored.reviews[0].author, stored.reviews[0].commit) == ("bob", merge)


@dataclass
class Keys:
    bob: Path
    carol: Path
    mallory: Path
    """Not in the allowed signers file."""


@pytest.fixture
async def signed(tmp_path: Path) -> AsyncIterator[tuple[Site, Keys]]:
    """A sync with gitops.review_signers_file listing bob's and carol's keys."""
    keys = Keys(tmp_path / "bob", tmp_path / "carol", tmp_path / "mallory")
    lines = [f'bob@example.com namespaces="git" {ssh_key(keys.bob)}',
             f'carol@example.com namespaces="git" {ssh_key(keys.carol)}']
    ssh_key(keys.mallory)
    signers = tmp_path / "allowed_signers"
    signers.write_text("\n".join(lines) + "\n", encoding="utf-8")
    async with started_site(tmp_path, review_signers_file=str(signers)) as started:
        yield started, keys


async def test_a_merge_signed_by_the_mergers_key_approves(
        signed: tuple[Site, Keys]) -> None:
    site, keys = signed
    request = await site.request()
    merge = site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id)}, BOB,
                       sign_with=keys.bob)
    await site.sync.sync_once()

    stored = await site.state(request.id)
    assert stored.state is RequestState.APPROVED
    assert (stored.reviews[0].author, stored.reviews[0].commit) == ("bob", merge)


@pytest.mark.parametrize(("key", "words"), [
    (None, "has no good SSH signature by a key of the allowed signers file"),
    ("mallory", "has no good SSH signature by a key of the allowed signers file"),
    ("carol", "is signed by carol@example.com's key, but names Bob@Example.COM"),
])
async def test_a_merge_not_signed_by_the_merger_is_refused(
        signed: tuple[Site, Keys], key: str | None, words: str) -> None:
    """Unsigned, signed by an unknown key, or carol signing a merge that names bob."""
    site, keys = signed
    request = await site.request()
    site.merge({f"reviews/{request.id}.yaml": review_yaml(request.id)}, BOB,
               sign_with=getattr(keys, key) if key else None)
    assert (await site.sync.sync_once()).outcome is Outcome.APPLIED

    await _refused(site, request.id, words)
    assert (await site.state(request.id)).state is RequestState.PENDING


async def test_a_review_in_a_plain_directory_is_refused(site: Site, tmp_path: Path) -> None:
    """A directory that is not in Git has no merge: its reviews are refused, its objects
    applied."""
    request = await site.request()
    directory = tmp_path / "plain"
    (directory / "reviews").mkdir(parents=True)
    (directory / "reviews" / "r.yaml").write_text(review_yaml(request.id), encoding="utf-8")
    (directory / "people.yaml").write_text(PEOPLE, encoding="utf-8")
    await site.sync.stop()
    site.sync = GitOpsSync(Settings(data_dir=tmp_path / "data2", gitops=GitOpsSettings(
        source=str(directory), interval_seconds=60)), site.auth, env={})

    assert (await site.sync.sync_once()).outcome is Outcome.APPLIED

    await _refused(site, request.id, "reviews need a Git source")
