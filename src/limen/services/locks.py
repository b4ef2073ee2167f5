"""The one lock view every enforcement point asks: which locks are in force, and for whom.

::

    auth process:   backend watch ──▶ StoreLockFeed ──▶ LockView ◀── issuance, node/db/kube
                                                          │          agents in the process
                                                          ▼
                                             GET /v1/locks (long poll, limen.auth.http.locks)
                                                          │ through the agent's tunnel
    agent apart:                    limen.agents.lock_feed ──▶ LockView ◀── that agent

:class:`LockView` holds the current locks (expired ones are ignored, whatever the store still
holds) and answers :meth:`LockView.is_locked`: a lock applies when every field of its target
matches (user name, one of the identity's roles, the node's host id or name, the login).
:meth:`LockView.check` raises :class:`Locked` (``locked: <message>``) and, when the view has
not been refreshed for longer than its bound (an agent cut off from auth), raises
:class:`LocksUnknown` for callers in ``lock: strict`` mode; others keep the locks last known.
Every change wakes :attr:`LockView.changed` so open sessions are re-checked at once.
:class:`StoreLockFeed` keeps a view in step with the resource store (auth's own process).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from limen.aio.changed import Changed
from limen.api.lock import Lock
from limen.api.resources import Kind, Resource
from limen.ca.identity import Identity
from limen.errors import AccessDenied, BadParameter
from limen.services.resource_store import ResourceStore

__all__ = ["DEFAULT_MAX_STALENESS", "LockView", "Locked", "LocksUnknown", "StoreLockFeed",
           "lock_fields"]

log = logging.getLogger(__name__)

DEFAULT_MAX_STALENESS = 30.0
"""Seconds an agent apart from auth trusts its last copy of the locks under ``lock: strict``."""


class Locked(AccessDenied):
    """The connection's user, role, node or login is locked."""

    def __init__(self, lock: Lock) -> None:
        super().__init__(lock.refusal())
        self.lock = lock


class LocksUnknown(AccessDenied):
    """``lock: strict`` and the view is too old to say whether a lock is in force."""

    def __init__(self) -> None:
        super().__init__("cannot verify locks: auth unreachable")


def lock_fields(err: BaseException) -> dict[str, Any]:
    """Audit fields naming the lock behind a refusal (none for other errors)."""
    return err.lock.to_fields() if isinstance(err, Locked) else {}


class LockView:
    """See the module doc. ``max_staleness`` None: never stale (fed from the local store)."""

    def __init__(self, *, max_staleness: float | None = DEFAULT_MAX_STALENESS,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.max_staleness = max_staleness
        self._clock = clock
        self._now = now
        self._locks: dict[str, Lock] = {}
        self._fresh_at: float | None = None
        self.revision = 0
        """The store revision the view reflects (0: never loaded)."""
        self.changed = Changed()
        """Notified whenever the set of locks changes."""

    # -- feeding ---------------------------------------------------------------------------

    def replace(self, resources: Iterable[Resource], revision: int) -> None:
        """The whole set of locks as of store ``revision``; marks the view fresh."""
        locks = {}
        for resource in resources:
            lock = _parse(resource)
            if lock is not None:
                locks[lock.name] = lock
        changed = locks != self._locks
        self._locks = locks
        self.revision = max(self.revision, revision)
        self.mark_fresh()
        if changed:
            self.changed.notify()

    def put(self, resource: Resource, revision: int) -> None:
        lock = _parse(resource)
        if lock is None:
            self.remove(resource.name, revision)
            return
        self.revision = max(self.revision, revision)
        if self._locks.get(lock.name) != lock:
            self._locks[lock.name] = lock
            self.changed.notify()

    def remove(self, name: str, revision: int) -> None:
        self.revision = max(self.revision, revision)
        if self._locks.pop(name, None) is not None:
            self.changed.notify()

    def mark_fresh(self) -> None:
        self._fresh_at = self._clock()

    # -- reading ---------------------------------------------------------------------------

    @property
    def stale(self) -> bool:
        """True when no refresh came within ``max_staleness`` (or none ever came)."""
        if self.max_staleness is None:
            return False
        return self._fresh_at is None or self._clock() - self._fresh_at > self.max_staleness

    def current(self) -> list[Lock]:
        """The locks in force (not expired), by name."""
        now = self._now()
        return sorted((lock for lock in self._locks.values() if not lock.expired(now)),
                      key=lambda lock: lock.name)

    def is_locked(self, identity: Identity, *, roles: Sequence[str] | None = None,
                  node: str | Iterable[str] | None = None,
                  login: str | None = None) -> Lock | None:
        """The first lock in force on this identity (its user, any of ``roles`` — default its
        certificate's roles — on ``node``, as ``login``), or None."""
        return self.find(identity.username, identity.roles if roles is None else roles,
                         node=node, login=login)

    def find(self, user: str, roles: Iterable[str], *, node: str | Iterable[str] | None = None,
             login: str | None = None) -> Lock | None:
        """:meth:`is_locked` by names (certificate issuance has no identity yet)."""
        role_names = set(roles)
        nodes = {node} if isinstance(node, str) else set(node or ())
        for lock in self.current():
            if _matches(lock, user, role_names, nodes, login):
                return lock
        return None

    def check_names(self, user: str, roles: Iterable[str]) -> None:
        """Raise :class:`Locked` when a lock targets ``user`` or one of ``roles``."""
        lock = self.find(user, roles)
        if lock is not None:
            raise Locked(lock)

    def check(self, identity: Identity, *, roles: Sequence[str] | None = None,
              node: str | Iterable[str] | None = None, login: str | None = None,
              strict: bool = False) -> None:
        """Raise :class:`Locked` for a lock in force, :class:`LocksUnknown` when ``strict``
        and the view is stale."""
        if strict and self.stale:
            raise LocksUnknown()
        lock = self.is_locked(identity, roles=roles, node=node, login=login)
        if lock is not None:
            raise Locked(lock)


def _matches(lock: Lock, user: str, roles: set[str], nodes: set[str],
             login: str | None) -> bool:
    target = lock.target
    if "mfa_device" in target:  # certificates name no MFA device: such locks bind at login
        return False
    return (("user" not in target or target["user"] == user)
            and ("role" not in target or target["role"] in roles)
            and ("node" not in target or target["node"] in nodes)
            and ("login" not in target or target["login"] == login))


def _parse(resource: Resource) -> Lock | None:
    try:
        return Lock.from_resource(resource)
    except BadParameter as err:
        log.warning("lock %s ignored: %s", resource.name, err)
        return None


class StoreLockFeed:
    """Keeps a :class:`LockView` equal to the store's locks: a full list, then the watch;
    lists again whenever the watch ends or fails."""

    def __init__(self, store: ResourceStore, view: LockView, *, retry: float = 0.5) -> None:
        self.store = store
        self.view = view
        self.retry = retry
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        revision = await self.store.backend.current_revision()
        self.view.replace(await self.store.list(Kind.LOCK), revision)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.load()
                async for change in self.store.watch(Kind.LOCK, after=self.view.revision):
                    if change.resource is None:
                        self.view.remove(change.name, change.revision)
                    else:
                        self.view.put(change.resource, change.revision)
                    self.view.mark_fresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # the backend failed: list again after a pause
                log.exception("lock watch failed; listing the locks again")
            await asyncio.sleep(self.retry)
