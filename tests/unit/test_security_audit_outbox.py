"""Attack (or accident): a crash right after an apply's store commit leaves applied objects
with no audit event.

The events of an apply were written to the audit log after the store transaction: a kill -9
in between left created objects and no ``*.created`` / ``gitops.sync`` event. They are now
committed in the same transaction as outbox records and delivered afterwards; auth's start
delivers what a crash left, skipping events the log already holds, so each event appears
exactly once. The crash is injected in-process: the emitter dies after the commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gitops_git import WorkTree, bare, role
from limen.api.resources import Kind, Origin, Resource
from limen.auth.core import AuthServer
from limen.backend.factory import open_backend
from limen.config import ClusterSettings, GitOpsSettings, Settings
from limen.events.event import AuditEvent
from limen.events.filelog import FileLog
from limen.events.search import search
from limen.gitops.sync import GitOpsSync, Outcome
from limen.services.audit_in_transaction import OUTBOX_PREFIX, AuditOutbox


class Crash(Exception):
    """Stands for the process dying (kill -9) at this point."""


class DyingLog(FileLog):
    """A FileLog that dies before it writes anything."""

    async def emit_many(self, events: Sequence[AuditEvent]) -> None:
        raise Crash


def roles(count: int) -> list[Resource]:
    return [Resource(kind=Kind.ROLE, name=f"r{i:03d}",
                     spec={"allow": {"logins": ["alice"]}}) for i in range(count)]


async def restart(data: Path) -> tuple[AuthServer, FileLog]:
    log = FileLog(data / "events", fsync=False)
    auth = AuthServer(open_backend(data), ClusterSettings(name="unit"), log)
    await auth.start()
    return auth, log


async def close(auth: AuthServer, log: FileLog) -> None:
    await log.aclose()
    await auth.backend.close()


def created_names(data: Path) -> Counter[str]:
    return Counter(e["name"] for e in search(data / "events", "role.created"))


async def test_a_crash_after_the_commit_loses_no_event(tmp_path: Path) -> None:
    dying = DyingLog(tmp_path / "events", fsync=False)
    auth = AuthServer(open_backend(tmp_path), ClusterSettings(name="unit"), dying)
    await auth.start()
    with pytest.raises(Crash):
        await auth.apply(roles(50), Origin.API, actor="admin")
    assert len(await auth.store.list(Kind.ROLE)) >= 50  # committed
    assert created_names(tmp_path) == Counter()  # but not audited yet
    assert len(await auth.backend.list(OUTBOX_PREFIX)) == 50
    await close(auth, dying)

    auth, log = await restart(tmp_path)
    assert created_names(tmp_path) == Counter({f"r{i:03d}": 1 for i in range(50)})
    assert await auth.backend.list(OUTBOX_PREFIX) == []
    await close(auth, log)

    auth, log = await restart(tmp_path)  # a second restart writes nothing again
    assert sum(created_names(tmp_path).values()) == 50
    await close(auth, log)


async def test_a_crash_after_the_log_write_writes_no_duplicate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def die(self: AuditOutbox, keys: Sequence[str]) -> None:
        raise Crash

    auth, log = await restart(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(AuditOutbox, "_delete", die)
        with pytest.raises(Crash):
            await auth.apply(roles(30), Origin.API, actor="admin")
    assert sum(created_names(tmp_path).values()) == 30  # written, records still there
    assert len(await auth.backend.list(OUTBOX_PREFIX)) == 30
    await close(auth, log)

    auth, log = await restart(tmp_path)
    assert created_names(tmp_path) == Counter({f"r{i:03d}": 1 for i in range(30)})
    assert await auth.backend.list(OUTBOX_PREFIX) == []
    await close(auth, log)


async def test_a_normal_apply_leaves_no_record(tmp_path: Path) -> None:
    auth, log = await restart(tmp_path)
    plan = await auth.apply(roles(3), Origin.API, actor="admin")
    assert len(plan.changes) == 3
    assert sum(created_names(tmp_path).values()) == 3
    assert await auth.backend.list(OUTBOX_PREFIX) == []
    await close(auth, log)


async def test_a_git_sync_killed_after_its_commit_gets_its_events_and_one_sync(
        tmp_path: Path) -> None:
    remote = bare(tmp_path / "access.git")
    work = WorkTree(tmp_path / "work", remote)
    for i in range(40):
        work.write(f"roles/r{i:03d}.yaml", role(f"r{i:03d}", "alice"))
    sha = work.commit("Forty roles")
    settings = Settings(data_dir=tmp_path / "data", gitops=GitOpsSettings(source=str(remote)))

    dying = DyingLog(tmp_path / "events", fsync=False)
    auth = AuthServer(open_backend(tmp_path), ClusterSettings(name="unit"), dying)
    await auth.start()
    sync = GitOpsSync(settings, auth, env={})
    with pytest.raises(Crash):
        await sync.sync_once()
    await sync.stop()
    await close(auth, dying)

    auth, log = await restart(tmp_path)
    synced: list[dict[str, Any]] = search(tmp_path / "events", "gitops.sync")
    assert [(e["sha"], e["created"]) for e in synced] == [(sha, 40)]
    assert created_names(tmp_path) == Counter({f"r{i:03d}": 1 for i in range(40)})
    sync = GitOpsSync(settings, auth, env={})
    report = await sync.sync_once(force=True)  # the restarted sync: nothing left to do
    assert report.outcome is Outcome.APPLIED
    assert report.plan is not None
    assert not report.plan.changes
    await sync.stop()
    await close(auth, log)
