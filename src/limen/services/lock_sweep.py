"""Expired locks are deleted: :class:`LockSweep`, run by auth (``limen.auth.auth_service``).

Every ``interval`` seconds (and once at start) the sweep lists the Lock objects and deletes
those whose ``spec.expires`` has passed, each audited as ``lock.deleted`` with
``reason: expired``. The delete is conditional on the revision the sweep read: with several
auth replicas on one backend (PostgreSQL) exactly one of them deletes a given lock and audits
it, the others' deletes fail their condition and say nothing (no lease is needed), and a lock
changed meanwhile (its expiry moved) is left alone. Locks owned by a declarative source (Git,
Kubernetes) are not deleted: the source would write them again; they stay ignored by the lock
view (``limen.services.locks``) and ``lmctl get locks`` lists them with their past expiry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from limen.aio.tasks import cancel_and_wait
from limen.api.lock import Lock
from limen.api.resources import Kind, Origin
from limen.errors import BadParameter, CompareFailed, LimenError, NotFound
from limen.services.resource_store import ResourceStore, resource_key

__all__ = ["SWEEP_INTERVAL", "LockSweep"]

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 30.0
"""Seconds between sweeps (an expired lock is already ignored everywhere: this only tidies)."""
KEPT_ORIGINS = frozenset({Origin.GIT, Origin.KUBERNETES})
"""Sources that would write a deleted lock again: their expired locks stay."""
Emit = Callable[..., Awaitable[None]]


class LockSweep:
    """``emit(event_type, **fields)``: the auth server's audit (``AuthServer.emit``)."""

    def __init__(self, store: ResourceStore, emit: Emit, *, interval: float = SWEEP_INTERVAL,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.emit, self.interval, self._now = store, emit, interval, now
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> list[str]:
        """Delete the expired locks no declarative source owns; the names deleted."""
        now = self._now()
        deleted = []
        for resource in await self.store.list(Kind.LOCK):
            try:
                lock = Lock.from_resource(resource)
            except BadParameter:
                continue  # the lock view ignores it too; its owner fixes or removes it
            if not lock.expired(now) or resource.origin in KEPT_ORIGINS:
                continue
            try:
                await self.store.backend.delete(resource_key(Kind.LOCK, lock.name),
                                                expected_revision=resource.revision)
            except (CompareFailed, NotFound):
                continue  # another replica swept it, or it changed since the list
            deleted.append(lock.name)
            fields: dict[str, Any] = {"name": lock.name, "kind": Kind.LOCK.value,
                                      "reason": "expired", "expires": lock.expires.isoformat()
                                      if lock.expires else None, **lock.to_fields()}
            if resource.origin is not None:
                fields["origin"] = resource.origin.value
            await self.emit("lock.deleted", **fields)
        return deleted

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lock sweep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except (LimenError, OSError) as err:
                log.warning("lock sweep failed (tried again in %.0f s): %s", self.interval, err)
            await asyncio.sleep(self.interval)  # the next periodic sweep
