"""Attack: one commit that deletes every document prunes every user, role and resource.

A mistaken empty branch, a bad merge or a malicious pull request emptied the cluster in one
transaction. The sync now refuses an empty tree, and a commit deleting more than
``gitops.max_prune_fraction`` of what it owns (past ``gitops.prune_guard_min`` objects),
unless the commit carries ``Limen-Allow-Prune: yes`` or a ``limen-allow-prune`` file sits at
the synced path. A refusal writes nothing, is one ``gitops.rejected`` event and the status's
last attempt, and is re-checked at every poll.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gitops_git import WorkTree, bare, role
from limen.api.resources import Kind, Origin
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.config import ClusterSettings, GitOpsSettings, Settings, load_settings
from limen.errors import BadParameter
from limen.events.emitter import MemoryEmitter
from limen.gitops.prune_guard import check_prune, trailer_allows
from limen.gitops.status import load_status
from limen.gitops.sync import GitOpsSync, Outcome
from limen.services.plan import compute_plan


@dataclass
class Site:
    work: WorkTree
    auth: AuthServer
    emitter: MemoryEmitter
    sync: GitOpsSync

    async def roles(self) -> list[str]:
        return sorted(r.name for r in await self.auth.store.list(Kind.ROLE)
                      if r.origin is Origin.GIT)

    def events(self, event_type: str) -> list[Any]:
        return [e for e in self.emitter.events if e.type == event_type]


async def make_site(tmp_path: Path, source: str | None = None, **options: Any) -> Site:
    remote = bare(tmp_path / "access.git")
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), emitter)
    await auth.start()
    settings = Settings(data_dir=tmp_path / "data", gitops=GitOpsSettings(
        source=source or str(remote), interval_seconds=0.2, **options))
    return Site(WorkTree(tmp_path / "work", remote), auth, emitter,
                GitOpsSync(settings, auth, env={}))


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    made = await make_site(tmp_path)
    yield made
    await made.sync.stop()


NAMES = [f"r{i:02d}" for i in range(20)]


async def seed(site: Site, names: list[str] = NAMES) -> None:
    for name in names:
        site.work.write(f"roles/{name}.yaml", role(name, "alice"))
    site.work.commit("seed")
    assert (await site.sync.sync_once()).outcome is Outcome.APPLIED


async def assert_refused(site: Site, report: Any, text: str, kept: list[str]) -> None:
    assert report.outcome is Outcome.REJECTED, report
    assert any(text in e for e in report.errors), report.errors
    assert await site.roles() == kept  # nothing applied
    [rejected] = site.events("gitops.rejected")
    assert any(text in e for e in rejected.fields["errors"])
    _live, last = await load_status(site.auth.backend)
    assert last is not None
    assert not last.ok
    assert any(text in e for e in last.errors)


async def test_an_empty_tree_is_refused(site: Site) -> None:
    await seed(site, NAMES[:2])  # even below prune_guard_min
    for name in NAMES[:2]:
        site.work.remove(f"roles/{name}.yaml")
    site.work.write("README.md", "nothing here\n")
    site.work.commit("Delete everything")
    report = await site.sync.sync_once()
    await assert_refused(site, report, "declares no object and would delete all 2", NAMES[:2])
    assert len(site.events("gitops.sync")) == 1  # the seed only: nothing was applied


async def test_a_big_prune_is_refused_and_a_small_one_applied(site: Site) -> None:
    await seed(site)
    for name in NAMES[:11]:
        site.work.remove(f"roles/{name}.yaml")
    site.work.commit("Drop most roles")
    report = await site.sync.sync_once()
    await assert_refused(site, report, "would delete 11 of the 20 objects", NAMES)
    assert "gitops.max_prune_fraction" in report.errors[0]
    assert "Limen-Allow-Prune: yes" in report.errors[0]

    site.work.write("roles/r00.yaml", role("r00", "alice"))  # now 10 of 20: allowed
    site.work.commit("Drop half")
    assert (await site.sync.sync_once()).outcome is Outcome.APPLIED
    assert await site.roles() == ["r00", *NAMES[11:]]


async def test_the_commit_trailer_allows_it_for_that_commit(site: Site) -> None:
    await seed(site)
    for name in NAMES:
        site.work.remove(f"roles/{name}.yaml")
    site.work.write("README.md", "emptied on purpose\n")
    site.work.commit("Empty the cluster\n\nLimen-Allow-Prune: yes\n")
    report = await site.sync.sync_once()
    assert report.outcome is Outcome.APPLIED, report.errors
    assert await site.roles() == []
    assert len(site.events("role.deleted")) == 20


async def test_the_marker_file_allows_it(site: Site) -> None:
    await seed(site)
    for name in NAMES[:15]:
        site.work.remove(f"roles/{name}.yaml")
    site.work.commit("Drop most")
    assert (await site.sync.sync_once()).outcome is Outcome.REJECTED
    site.work.write("limen-allow-prune", "we mean it\n")
    site.work.commit("Allow the prune")
    assert (await site.sync.sync_once()).outcome is Outcome.APPLIED
    assert await site.roles() == NAMES[15:]


async def test_a_directory_source_is_rechecked_when_the_marker_appears(tmp_path: Path) -> None:
    directory = tmp_path / "plain"
    directory.mkdir()
    made = await make_site(tmp_path, source=str(directory))
    try:
        for name in NAMES[:12]:
            path = directory / "roles" / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(role(name, "alice"))
        assert (await made.sync.sync_once()).outcome is Outcome.APPLIED
        for name in NAMES[:12]:
            (directory / "roles" / f"{name}.yaml").unlink()
        assert (await made.sync.sync_once()).outcome is Outcome.REJECTED
        assert await made.roles() == NAMES[:12]
        (directory / "limen-allow-prune").write_text("")
        assert (await made.sync.sync_once()).outcome is Outcome.APPLIED
        assert await made.roles() == []
    finally:
        await made.sync.stop()


async def test_the_fraction_is_a_setting(tmp_path: Path) -> None:
    made = await make_site(tmp_path, max_prune_fraction=0.1, prune_guard_min=3)
    try:
        await seed(made, NAMES[:5])
        made.work.remove("roles/r00.yaml")
        made.work.commit("Drop one of five")
        report = await made.sync.sync_once()
        assert report.outcome is Outcome.REJECTED
        assert "would delete 1 of the 5 objects the sync owns (20%" in report.errors[0]
    finally:
        await made.sync.stop()


def test_settings_and_trailers(tmp_path: Path) -> None:
    config = tmp_path / "limen.yaml"
    config.write_text("gitops: {max_prune_fraction: 0.25, prune_guard_min: 100}\n")
    settings = load_settings(config, env={})
    assert settings.gitops.max_prune_fraction == 0.25
    assert settings.gitops.prune_guard_min == 100
    config.write_text("gitops: {max_prune_fraction: 2}\n")
    with pytest.raises(BadParameter):
        load_settings(config, env={})
    assert trailer_allows("Empty it\n\nSigned-off-by: a\nLimen-Allow-Prune: yes\n")
    assert not trailer_allows("Limen-Allow-Prune: no\n")
    assert not trailer_allows("Empty it, Limen-Allow-Prune: yes please")


def test_other_origins_and_plans_without_deletes_pass() -> None:
    plan = compute_plan([], [], Origin.API, prune=True)
    check_prune(plan, max_fraction=0.5, minimum=0, allowed=False)
    check_prune(compute_plan([], [], Origin.GIT, prune=True), max_fraction=0.5, minimum=0,
                allowed=False)
