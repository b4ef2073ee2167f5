"""The Git sync: poll the source, and apply each new revision all or nothing.

::

    every interval ─▶ poll (worker thread: git fetch, resolve the branch tip)
                        │ same revision as the last attempt → nothing to do
                        ▼
                      read every *.yaml/*.yml under the path ─▶ validate (all documents)
                        │ invalid → gitops.rejected (every error, with file and line);
                        │           the live revision stays applied
                        ▼
                      plan against the store (origin git: create, update, prune)
                        │ an object owned by another origin (api, kubernetes) → rejected,
                        │ re-planned at every poll until adopted (limen.dev/adopt: git) or
                        │ the document is removed
                        │ an empty tree, or more than gitops.max_prune_fraction of the
                        │ objects deleted, without Limen-Allow-Prune → rejected (prune_guard)
                        ▼
                      apply it in ONE backend transaction with its audit events, gitops.sync
                      included (AuthServer.apply: outbox records, then the audit log);
                      status /gitops/status: live revision, last attempt
                        │
                        ▼
                      AccessRequestReview documents (never stored objects): each new one
                      reviews its access request as the user who merged it
                      (``limen.gitops.reviews``); a refused review is audited and named in
                      the status, and stops nothing

A rejected revision is not read again (its content cannot change) unless it was rejected for
what the store holds (a conflict, a concurrent write): that is retried at every poll.
With several auth replicas only the one holding the Git sync's lease runs this loop
(``limen.gitops.sync_service``); its applies and status writes carry the lease as a condition
(``fence``), so a replica that lost the lease writes nothing (outcome ``standby``), and one
that takes it over starts again from the recorded status with a forced sync. A fetch
that fails is retried at every poll; its ``gitops.sync`` failure event and status are written
when the error changes, not every interval. The sync follows the branch tip, so a force-push
to an older commit applies that commit's content. Certificates are issued from the store at
login, so an applied change takes effect for the next login and connection.

Called by ``limen.gitops.sync_service`` (the daemon) and by tests and benchmarks (``sync_once``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import git

from limen.api.access_request_review import is_review
from limen.api.loader import SourceDocument
from limen.api.resources import PUBLIC_KINDS, Origin, Resource
from limen.auth.core import AuthServer
from limen.backend.base import Condition
from limen.backend.lease import LeaseLost
from limen.config import Settings
from limen.diag.metrics import Metrics
from limen.errors import (
    AlreadyExists,
    BadParameter,
    DocumentError,
    LimenError,
    NotFound,
    ValidationFailed,
)
from limen.events.event import AuditEvent, make_event
from limen.gitops.planfmt import render_plan
from limen.gitops.prune_guard import PruneRefused, check_prune
from limen.gitops.repository import Revision
from limen.gitops.reviews import MergeLookup, apply_reviews
from limen.gitops.source import Source, open_source
from limen.gitops.status import (
    Attempt,
    LiveRevision,
    ReviewOutcome,
    SyncStatus,
    load_reviews,
    load_status,
    save_status,
)
from limen.services.plan import Action, Plan

__all__ = ["ACTOR", "Fence", "GitOpsSync", "Outcome", "SyncReport"]

log = logging.getLogger(__name__)

ACTOR = "gitops"
"""The ``user`` of the per-object audit events the sync causes."""
LOG_MAX_OBJECTS = 50
"""At most this many changed objects are logged per sync (the audit log has all of them)."""
STOP_GRACE_SECONDS = 10.0
_READ_ERRORS = (LimenError, OSError, git.GitError, ValueError)

Fence = Callable[[], AbstractAsyncContextManager[Sequence[Condition]]]
"""The leader lease's conditions for one write (``limen.services.leadership``)."""


class Outcome(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    """No new revision since the last attempt."""
    REJECTED = "rejected"
    """Invalid documents, or objects another origin owns: nothing was changed."""
    FAILED = "failed"
    """The source could not be read or the store could not be written; retried."""
    STANDBY = "standby"
    """This replica does not hold the Git sync's lease (any more): nothing was written."""


@dataclass(frozen=True)
class SyncReport:
    outcome: Outcome
    revision: Revision | None = None
    plan: Plan | None = None
    errors: tuple[str, ...] = ()


class GitOpsSync:
    """Keeps the store's ``git``-owned objects equal to the source's branch tip."""

    def __init__(self, settings: Settings, auth: AuthServer, *, source: Source | None = None,
                 env: Mapping[str, str] | None = None, fence: Fence | None = None,
                 leader: str = "", metrics: Metrics | None = None) -> None:
        """``fence``: the leader lease's conditions for every write (None: this process is
        the only writer); ``leader``: this replica's lease holder name, shown in the status;
        ``metrics``: the process's (``limen_gitops_*``)."""
        self.auth = auth
        self.metrics = metrics
        self.polled: tuple[float, Outcome] | None = None
        """When (``time.monotonic()``) the last poll ended and how (``/readyz``)."""
        self._fence = fence
        self._leader = leader
        self.settings = settings.gitops
        self.interval = max(settings.gitops.interval_seconds, 0.1)
        path = settings.gitops.path
        if source is None:
            source, location = open_source(settings.gitops, settings.data_dir / "gitops", env)
            path = location.subpath if location.mode == "git" else location.remote
            log.info("gitops: syncing %s: %s", location.display, location.note)
        self.source = source
        self._path = path
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._live: LiveRevision | None = None
        self._last: Attempt | None = None
        self._attempted: str | None = None
        self._retry = False
        self._cache: tuple[str, list[Resource], dict[str, SourceDocument],
                           list[SourceDocument]] | None = None
        self._reviews: tuple[ReviewOutcome, ...] = ()
        self._reported: tuple[str, tuple[str, ...]] | None = None

    @property
    def status(self) -> SyncStatus:
        return SyncStatus(self.source.display, self.source.mode, self.settings.branch,
                          self._path, self.interval, self._live, self._last, self._leader,
                          self._reviews)

    @property
    def running(self) -> bool:
        """Is the background poll loop running (started, not paused)?"""
        return self._task is not None and not self._task.done()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> SyncReport:
        """Load the recorded status, sync once (even if the revision was applied before), then
        keep polling in the background. Also after :meth:`pause` (this replica leads again:
        what another replica applied meanwhile is in the recorded status)."""
        self._stopping = asyncio.Event()
        self._live, self._last = await load_status(self.auth.backend)
        self._reviews = await load_reviews(self.auth.backend)
        self._reported = None
        report = await self.sync_once(force=True)
        if not self._stopping.is_set():
            self._task = asyncio.create_task(self._loop(), name="gitops-sync")
        return report

    async def pause(self) -> bool:
        """Stop polling (the source stays open for a later :meth:`start`); False when a sync
        still running after the grace period had to be cancelled."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return True
        try:
            async with asyncio.timeout(STOP_GRACE_SECONDS):
                await asyncio.shield(task)
        except TimeoutError:  # a fetch is hanging; its git process is killed by its timeout
            task.cancel()
            log.warning("gitops: stopped while a sync was still running")
            return False
        return True

    async def stop(self) -> None:
        if await self.pause():
            await asyncio.to_thread(self.source.close)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                await self.sync_once()
            except Exception:  # the loop must outlive any single failure
                log.exception("gitops: sync failed")

    # -- one sync ----------------------------------------------------------------------------
    async def sync_once(self, *, force: bool = False) -> SyncReport:
        """Poll the source and apply what changed; ``force`` re-reads and re-plans the current
        revision even if it was attempted before. Counted in ``metrics`` when given."""
        started = time.monotonic()
        report = await self._sync_once(force)
        self.polled = (time.monotonic(), report.outcome)
        if self.metrics is not None and report.outcome is not Outcome.STANDBY:
            applied = report.revision if report.outcome is Outcome.APPLIED else None
            self.metrics.record_gitops_attempt(
                "failed" if report.outcome in (Outcome.FAILED, Outcome.REJECTED)
                else report.outcome.value, time.monotonic() - started, time.time(),
                _timestamp(applied.time) if applied is not None else None)
        return report

    async def _sync_once(self, force: bool) -> SyncReport:
        async with self._lock:
            try:
                revision = await asyncio.to_thread(self.source.poll)
            except _READ_ERRORS as err:
                self._retry = True  # once reachable again, re-attempt and record the outcome
                return await self._failed(None, _message(err))
            if not force and not self._retry and revision.key == self._attempted:
                return SyncReport(Outcome.UNCHANGED, revision)
            return await self._attempt(revision, reuse=not force)

    async def _attempt(self, revision: Revision, *, reuse: bool) -> SyncReport:
        self._attempted, self._retry = revision.key, False
        try:
            resources, where, reviews = await self._resources(revision, reuse)
        except ValidationFailed as err:
            return await self._reject(revision, tuple(str(e) for e in err.errors))
        except (BadParameter, NotFound) as err:
            return await self._reject(revision, (str(err),))
        except _READ_ERRORS as err:
            self._retry = True
            return await self._failed(revision, _message(err))
        try:
            allowed = await asyncio.to_thread(self._allows_prune, revision)
        except _READ_ERRORS as err:
            self._retry = True
            return await self._failed(revision, _message(err))

        def before_write(plan: Plan) -> list[AuditEvent]:
            check_prune(plan, max_fraction=self.settings.max_prune_fraction,
                        minimum=self.settings.prune_guard_min, allowed=allowed)
            return [self._sync_event(revision, plan)]

        try:
            async with self._fenced() as fence:
                plan = await self.auth.apply(resources, Origin.GIT, actor=ACTOR, prune=True,
                                             kinds=PUBLIC_KINDS, before_write=before_write,
                                             fence=fence)
        except LeaseLost:
            self._retry = True  # whoever leads next syncs it; this replica writes nothing
            return SyncReport(Outcome.STANDBY, revision)
        except PruneRefused as err:
            # Re-planned at every poll: the store may change, a marker file may appear.
            self._retry = True
            return await self._reject(revision, (str(err),))
        except AlreadyExists as err:
            self._retry = True
            return await self._reject(revision, await self._conflicts(resources, where, err))
        except LimenError as err:  # e.g. CompareFailed: changed meanwhile; retried next poll
            self._retry = True
            return await self._failed(revision, str(err))
        return await self._applied(revision, plan, reviews)

    def _allows_prune(self, revision: Revision) -> bool:
        allows = getattr(self.source, "allows_prune", None)
        return bool(allows(revision)) if allows is not None else False

    def _sync_event(self, revision: Revision, plan: Plan) -> AuditEvent:
        """``gitops.sync`` of an apply: committed in the same transaction as the plan."""
        return make_event(
            "gitops.sync", cluster=self.auth.cluster_name, **self._fields(revision),
            summary=plan.summary(), created=plan.count(Action.CREATE),
            updated=plan.count(Action.UPDATE), deleted=plan.count(Action.DELETE),
            unchanged=plan.count(Action.UNCHANGED))

    async def _resources(self, revision: Revision, reuse: bool
                         ) -> tuple[list[Resource], dict[str, SourceDocument],
                                    list[SourceDocument]]:
        """The revision's objects, where each is declared, and its review documents."""
        if reuse and self._cache is not None and self._cache[0] == revision.key:
            return self._cache[1], self._cache[2], self._cache[3]

        def load() -> tuple[list[Resource], dict[str, SourceDocument], list[SourceDocument]]:
            documents, resources = self.source.load(revision)
            reviews = [d for d in documents if is_review(d)]
            return resources, _locations([d for d in documents if not is_review(d)]), reviews

        resources, where, reviews = await asyncio.to_thread(load)
        self._cache = (revision.key, resources, where, reviews)
        return resources, where, reviews

    async def _conflicts(self, resources: list[Resource], where: dict[str, SourceDocument],
                         err: AlreadyExists) -> tuple[str, ...]:
        """The plan's conflicts, each in the validation errors' format (file, field, line)."""
        plan = await self.auth.admin.plan(resources, Origin.GIT, prune=True, kinds=PUBLIC_KINDS)
        if not plan.conflicts:
            return (str(err),)
        out = []
        for conflict in plan.conflicts:
            doc = where.get(conflict.split(" ", 1)[0])
            out.append(conflict if doc is None else str(DocumentError(
                doc.source, doc.index, "metadata.name", conflict,
                doc.line_of(("metadata", "name")))))
        return tuple(out)

    # -- outcomes ----------------------------------------------------------------------------
    async def _applied(self, revision: Revision, plan: Plan,
                       reviews: list[SourceDocument]) -> SyncReport:
        now = self.auth.now().isoformat()
        summary = plan.summary()
        self._live = LiveRevision(revision, now, summary)
        self._last = Attempt(revision, now, True, (), summary)
        await self._review(revision, reviews)
        self._reported = None
        await self._save_status()
        log.info("gitops: applied %s (%s) from %s: %s", revision.short,
                 revision.message or revision.sha, self.source.display, summary)
        if plan.changes:
            for line in render_plan(plan, max_objects=LOG_MAX_OBJECTS)[:-1]:
                log.info("gitops:   %s", line)
        return SyncReport(Outcome.APPLIED, revision, plan)

    async def _review(self, revision: Revision, reviews: list[SourceDocument]) -> None:
        """Decide the revision's new review documents (``limen.gitops.reviews``); one that
        cannot be decided now (the store is unreachable) is tried again at the next sync."""
        lookup: MergeLookup | None = getattr(self.source, "merge_of", None)
        try:
            self._reviews = tuple(await apply_reviews(
                self.auth, reviews, revision, lookup, self._reviews,
                signers_file=self.settings.review_signers_file))
        except (LimenError, OSError) as err:
            self._retry = True  # the next poll attempts this revision again
            log.warning("gitops: cannot decide the access request reviews of %s: %s",
                        revision.short, _message(err))

    async def _reject(self, revision: Revision, errors: tuple[str, ...]) -> SyncReport:
        self._last = Attempt(revision, self.auth.now().isoformat(), False, errors)
        if self._reported != (revision.key, errors):
            if not await self._save_status():
                return SyncReport(Outcome.STANDBY, revision)
            self._reported = (revision.key, errors)
            live = self._live.revision.short if self._live else "nothing"
            log.warning("gitops: rejected %s (%s); %s stays live:\n  %s", revision.short,
                        revision.message or revision.sha, live, "\n  ".join(errors))
            await self.auth.emit("gitops.rejected", success=False, **self._fields(revision),
                                 errors=list(errors),
                                 live_sha=self._live.revision.sha if self._live else None)
        return SyncReport(Outcome.REJECTED, revision, None, errors)

    async def _failed(self, revision: Revision | None, message: str) -> SyncReport:
        self._last = Attempt(revision, self.auth.now().isoformat(), False, (message,))
        key = (revision.key if revision else "", (message,))
        if self._reported != key:
            if not await self._save_status():
                return SyncReport(Outcome.STANDBY, revision)
            self._reported = key
            log.warning("gitops: %s (retrying every %gs)", message, self.interval)
            fields: dict[str, Any] = (self._fields(revision) if revision
                                      else {"source": self.source.display})
            await self.auth.emit("gitops.sync", success=False, **fields, reason=message)
        return SyncReport(Outcome.FAILED, revision, None, (message,))

    @contextlib.asynccontextmanager
    async def _fenced(self) -> AsyncIterator[list[Condition]]:
        """The lease's conditions for a write (none without a lease); :class:`LeaseLost`."""
        if self._fence is None:
            yield []
            return
        async with self._fence() as fence:
            yield list(fence)

    async def _save_status(self) -> bool:
        """Record the status, if this replica still leads; False when it does not."""
        try:
            async with self._fenced() as fence:
                await save_status(self.auth.backend, self.status, fence)
        except LeaseLost:
            return False
        return True

    def _fields(self, revision: Revision) -> dict[str, Any]:
        return {"sha": revision.sha, "author": revision.author, "message": revision.message,
                "source": self.source.display, "branch": self.settings.branch,
                **({"content_hash": revision.content_hash} if revision.content_hash else {})}


def _locations(documents: list[SourceDocument]) -> dict[str, SourceDocument]:
    """``Kind/name`` → the document that declares it."""
    out: dict[str, SourceDocument] = {}
    for doc in documents:
        metadata = doc.data.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        out[f"{doc.data.get('kind')}/{name}"] = doc
    return out


def _timestamp(iso: str) -> float | None:
    """A revision's ISO 8601 time as UNIX seconds (None when it has none)."""
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def _message(err: BaseException) -> str:
    if isinstance(err, LimenError):
        return str(err)
    if isinstance(err, git.GitCommandError):  # local commands only: fetch errors are LimenErrors
        stderr = str(err.stderr or "").strip().removeprefix("stderr:").strip(" '\n")
        return f"git failed with status {err.status}: {stderr or 'no message'}"
    return f"{type(err).__name__}: {err}"
