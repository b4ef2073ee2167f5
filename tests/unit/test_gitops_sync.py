"""The Git sync against an in-process auth server (memory backend) and real Git repositories:
apply, prune, rejection of invalid and secret-bearing commits, ownership conflicts and
adoption, force-pushes, fetch failures, restarts, directory sources and the background loop."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gitops_git import WorkTree, bare, role, user
from limen.api.loader import SourceDocument
from limen.api.resources import ADOPT_ANNOTATION, ORIGIN_LABEL, PUBLIC_KINDS, Kind, Origin
from limen.api.validation import SECRET_HINT, validate
from limen.auth.core import AuthServer
from limen.auth.store_keys import GITOPS_STATUS_KEY
from limen.backend.memory import MemoryBackend
from limen.config import ClusterSettings, GitOpsSettings, Settings
from limen.events.emitter import MemoryEmitter
from limen.events.event import AuditEvent
from limen.gitops.source import WORKING_TREE
from limen.gitops.sync import ACTOR, GitOpsSync, Outcome

BAD_ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata:
  name: bad
spec:
  options:
    max_session_ttl: forever
"""
SECRET_TRUSTED_CLUSTER = """\
apiVersion: limen.dev/v1alpha1
kind: TrustedCluster
metadata:
  name: root
spec:
  enabled: false
  proxy_address: root.example.com:3080
  token_secret_ref: {file: root.token}
  join_token: 7f3c9a1e5b2d4c6f8a0b1c2d3e4f5a6b
"""


@dataclass
class Site:
    work: WorkTree
    remote: Path
    auth: AuthServer
    emitter: MemoryEmitter
    sync: GitOpsSync
    data_dir: Path

    def events(self, event_type: str) -> list[AuditEvent]:
        return [e for e in self.emitter.events if e.type == event_type]

    async def logins(self) -> dict[str, list[str]]:
        return {r.name: r.spec["allow"]["logins"] for r in await self.auth.store.list(Kind.ROLE)}

    async def snapshot(self) -> list[dict[str, Any]]:
        return [r.to_document() for kind in PUBLIC_KINDS
                for r in await self.auth.store.list(kind)]

    async def stored_status(self) -> dict[str, Any]:
        item = await self.auth.backend.get(GITOPS_STATUS_KEY)
        assert item is not None
        status: dict[str, Any] = json.loads(item.value)
        return status


def make_sync(auth: AuthServer, data_dir: Path, source: str, **options: Any) -> GitOpsSync:
    settings = Settings(data_dir=data_dir, gitops=GitOpsSettings(
        source=source, interval_seconds=options.pop("interval_seconds", 0.2), **options))
    return GitOpsSync(settings, auth, env={})


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    remote = bare(tmp_path / "access.git")
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), emitter)
    await auth.start()
    sync = make_sync(auth, tmp_path / "data", str(remote))
    yield Site(WorkTree(tmp_path / "work", remote), remote, auth, emitter, sync,
               tmp_path / "data")
    await sync.stop()


async def test_a_commit_is_applied_with_origin_git_and_recorded(site: Site) -> None:
    site.work.write("roles/dev.yaml", role("dev", "alice"))
    site.work.write("users/bob.yaml", user("bob", "dev"))
    sha = site.work.commit("Add dev and bob", author="Bo Dee <bo@example.com>")

    report = await site.sync.sync_once()

    assert report.outcome is Outcome.APPLIED
    stored = await site.auth.store.get(Kind.ROLE, "dev")
    assert stored.labels[ORIGIN_LABEL] == "git"
    assert (await site.auth.store.get(Kind.USER, "bob")).spec["roles"] == ["dev"]
    status = await site.stored_status()
    assert status["live"]["sha"] == sha
    assert status["live"]["author"] == "Bo Dee <bo@example.com>"
    assert status["live"]["message"] == "Add dev and bob"
    assert status["last_attempt"]["ok"] is True
    assert status["last_attempt"]["errors"] == []
    [synced] = site.events("gitops.sync")
    assert synced.success
    assert synced.fields["sha"] == sha
    assert synced.fields["created"] == 2
    [created] = site.events("role.created")
    assert created.user == ACTOR
    assert created.fields["origin"] == "git"

    again = await site.sync.sync_once()
    assert again.outcome is Outcome.UNCHANGED
    assert len(site.events("gitops.sync")) == 1


async def test_changes_and_deleted_files_follow_the_commits(site: Site) -> None:
    site.work.write("roles/dev.yaml", role("dev", "alice"))
    site.work.write("roles/ops.yaml", role("ops", "root"))
    site.work.commit()
    await site.sync.sync_once()

    site.work.write("roles/dev.yaml", role("dev", "alice", "ubuntu"))
    site.work.remove("roles/ops.yaml")
    site.work.commit("dev gets ubuntu; ops goes")
    report = await site.sync.sync_once()

    assert report.outcome is Outcome.APPLIED
    assert report.plan is not None
    assert report.plan.summary() == \
        "0 created, 1 updated, 1 deleted, 0 unchanged"
    assert await site.logins() == {"dev": ["alice", "ubuntu"]}
    assert [e.fields["name"] for e in site.events("role.deleted")] == ["ops"]


async def test_an_invalid_commit_changes_nothing_and_is_reported_once(site: Site) -> None:
    site.work.write("roles/dev.yaml", role("dev", "alice"))
    good = site.work.commit("good")
    await site.sync.sync_once()
    before = await site.snapshot()

    site.work.write("roles/dev.yaml", role("dev", "alice", "root"))  # valid on its own
    site.work.write("roles/bad.yaml", BAD_ROLE)
    bad = site.work.commit("bad")
    report = await site.sync.sync_once()

    assert report.outcome is Outcome.REJECTED
    assert await site.snapshot() == before
    [error] = report.errors
    assert error.startswith("roles/bad.yaml[0]")
    assert "spec.options.max_session_ttl" in error
    assert "forever" in error
    status = await site.stored_status()
    assert status["live"]["sha"] == good
    assert status["last_attempt"]["sha"] == bad
    assert status["last_attempt"]["ok"] is False
    assert status["last_attempt"]["errors"] == [error]
    [rejected] = site.events("gitops.rejected")
    assert rejected.code == "L8001W"
    assert not rejected.success
    assert rejected.fields["errors"] == [error]
    assert rejected.fields["sha"] == bad
    assert rejected.fields["live_sha"] == good

    assert (await site.sync.sync_once()).outcome is Outcome.UNCHANGED
    assert len(site.events("gitops.rejected")) == 1

    site.work.remove("roles/bad.yaml")
    fixed = site.work.commit("fix")
    assert (await site.sync.sync_once()).outcome is Outcome.APPLIED
    assert await site.logins() == {"dev": ["alice", "root"]}
    assert (await site.stored_status())["live"]["sha"] == fixed


async def test_a_commit_that_holds_a_secret_is_rejected(site: Site) -> None:
    site.work.write("roles/dev.yaml", role("dev", "alice"))
    site.work.write("trusted-clusters/root.yaml", SECRET_TRUSTED_CLUSTER)
    site.work.commit("oops, a token")

    report = await site.sync.sync_once()

    assert report.outcome is Outcome.REJECTED
    assert any(e.startswith("trusted-clusters/root.yaml[0]") and "spec.join_token" in e
               and SECRET_HINT in e for e in report.errors), report.errors
    assert await site.snapshot() == []
    logged = json.dumps([e.to_dict() for e in site.emitter.events])
    assert "7f3c9a1e5b2d4c6f8a0b1c2d3e4f5a6b" not in logged + json.dumps(report.errors)


async def test_an_object_of_another_origin_is_a_conflict_until_adopted(site: Site) -> None:
    api_dev = validate([SourceDocument("<api>", 0, 1, _doc(role("dev", "admin")))])
    await site.auth.apply(api_dev, Origin.API, actor="admin")
    site.work.write("roles/dev.yaml", role("dev", "alice"))
    site.work.write("roles/ops.yaml", role("ops", "root"))
    site.work.commit()

    report = await site.sync.sync_once()

    assert report.outcome is Outcome.REJECTED
    assert report.errors == (
        "roles/dev.yaml[0] metadata.name: Role/dev is owned by origin api; annotate it with "
        "limen.dev/adopt: git to hand it over (line 4)",)
    assert await site.logins() == {"dev": ["admin"]}  # untouched, and ops not half-applied
    assert (await site.auth.store.get(Kind.ROLE, "dev")).origin is Origin.API
    assert (await site.sync.sync_once()).outcome is Outcome.REJECTED  # re-planned every poll
    assert len(site.events("gitops.rejected")) == 1  # but reported once

    handed_over = validate([SourceDocument("<api>", 0, 1, _doc(
        role("dev", "admin", annotations={ADOPT_ANNOTATION: "git"})))])
    await site.auth.apply(handed_over, Origin.API, actor="admin")
    report = await site.sync.sync_once()

    assert report.outcome is Outcome.APPLIED
    assert await site.logins() == {"dev": ["alice"], "ops": ["root"]}
    assert (await site.auth.store.get(Kind.ROLE, "dev")).origin is Origin.GIT


async def test_a_document_can_adopt_an_object_with_the_annotation(site: Site) -> None:
    await site.auth.apply(validate([SourceDocument("<api>", 0, 1, _doc(role("dev", "x")))]),
                          Origin.API, actor="admin")
    site.work.write("roles/dev.yaml", role("dev", "alice",
                                           annotations={ADOPT_ANNOTATION: "git"}))
    site.work.commit("adopt dev")

    assert (await site.sync.sync_once()).outcome is Outcome.APPLIED
    assert (await site.auth.store.get(Kind.ROLE, "dev")).origin is Origin.GIT


async def test_a_force_push_to_an_older_commit_is_followed(site: Site) -> None:
    site.work.write("roles/dev.yaml", role("dev", "alice"))
    old = site.work.commit("old")
    await site.sync.sync_once()
    site.work.write("roles/dev.yaml", role("dev", "mallory"))
    site.work.write("roles/evil.yaml", role("evil", "root"))
    site.work.commit("newer")
    await site.sync.sync_once()
    assert await site.logins() == {"dev": ["mallory"], "evil": ["root"]}

    site.work.reset_hard(old)
    site.work.push(force=True)
    report = await site.sync.sync_once()

    assert report.outcome is Outcome.APPLIED
    assert await site.logins() == {"dev": ["alice"]}
    assert (await site.stored_status())["live"]["sha"] == old


async def test_a_vanished_path_is_rejected_instead_of_pruning_everything(
        tmp_path: Path, site: Site) -> None:
    sync = make_sync(site.auth, tmp_path / "data-access", str(site.remote), path="access/")
    try:
        site.work.write("access/roles/dev.yaml", role("dev", "alice"))
        site.work.commit()
        assert (await sync.sync_once()).outcome is Outcome.APPLIED
        shutil.move(site.work.path / "access", site.work.path / "acl")
        site.work.commit("rename the directory")
        report = await sync.sync_once()
    finally:
        await sync.stop()
    assert report.outcome is Outcome.REJECTED
    assert report.revision is not None
    assert report.errors == (f"path 'access' does not exist at commit {report.revision.sha[:12]}",)
    assert await site.logins() == {"dev": ["alice"]}


async def test_fetch_failures_are_recorded_once_and_recovered_from(site: Site) -> None:
    site.work.write("roles/dev.yaml", role("dev", "alice"))
    sha = site.work.commit()
    await site.sync.sync_once()
    moved = site.remote.with_name("moved.git")
    site.remote.rename(moved)

    first = await site.sync.sync_once()
    second = await site.sync.sync_once()

    assert first.outcome is second.outcome is Outcome.FAILED
    assert "cannot fetch" in first.errors[0]
    failures = [e for e in site.events("gitops.sync") if not e.success]
    assert len(failures) == 1
    assert failures[0].code == "L8000E"
    status = await site.stored_status()
    assert status["live"]["sha"] == sha
    assert status["last_attempt"]["ok"] is False
    assert status["last_attempt"]["sha"] is None

    moved.rename(site.remote)
    assert (await site.sync.sync_once()).outcome is Outcome.APPLIED
    assert (await site.stored_status())["last_attempt"]["ok"] is True


async def test_a_restart_keeps_the_live_commit_even_when_the_remote_is_gone(
        site: Site) -> None:
    site.work.write("roles/dev.yaml", role("dev", "alice"))
    sha = site.work.commit()
    await site.sync.sync_once()

    restarted = make_sync(site.auth, site.data_dir, str(site.remote))
    try:
        report = await restarted.start()
        assert report.outcome is Outcome.APPLIED
        assert report.plan is not None
        assert report.plan.changes == ()
    finally:
        await restarted.stop()

    shutil.rmtree(site.remote)  # a local path must exist at start; a URL may be unreachable
    unreachable = make_sync(site.auth, site.data_dir, f"file://{site.remote}")
    try:
        assert (await unreachable.start()).outcome is Outcome.FAILED
    finally:
        await unreachable.stop()
    status = await site.stored_status()
    assert status["live"]["sha"] == sha
    assert status["last_attempt"]["ok"] is False
    assert await site.logins() == {"dev": ["alice"]}


async def test_the_background_loop_applies_new_commits(site: Site) -> None:
    site.work.write("roles/dev.yaml", role("dev", "alice"))
    site.work.commit()
    assert (await site.sync.start()).outcome is Outcome.APPLIED

    site.work.write("roles/dev.yaml", role("dev", "alice", "ubuntu"))
    sha = site.work.commit()

    event = await site.emitter.wait_for(
        lambda e: e.type == "gitops.sync" and e.fields.get("sha") == sha, timeout=10)
    assert event.fields["updated"] == 1
    assert await site.logins() == {"dev": ["alice", "ubuntu"]}


async def test_a_plain_directory_is_synced_from_disk_by_content(tmp_path: Path) -> None:
    directory = tmp_path / "access"
    (directory / "roles").mkdir(parents=True)
    (directory / "roles" / "dev.yaml").write_text(role("dev", "alice"), encoding="utf-8")
    auth = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), MemoryEmitter())
    await auth.start()
    sync = make_sync(auth, tmp_path / "data", str(directory))
    try:
        assert (await sync.sync_once()).outcome is Outcome.APPLIED
        assert (await sync.sync_once()).outcome is Outcome.UNCHANGED
        (directory / "roles" / "dev.yaml").write_text(role("dev", "bob"), encoding="utf-8")
        assert (await sync.sync_once()).outcome is Outcome.APPLIED
    finally:
        await sync.stop()
    assert (await auth.store.get(Kind.ROLE, "dev")).spec["allow"]["logins"] == ["bob"]
    status = sync.status.to_dict()
    assert status["mode"] == "directory"
    assert status["live"]["sha"] == WORKING_TREE
    assert status["live"]["content_hash"].startswith("sha256:")


def _doc(text: str) -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded
