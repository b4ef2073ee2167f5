"""Open sessions of root users at a leaf that a root's lock now targets are ended.

The leaf proxy's cluster links (``limen.proxy.trust_leaf_links``) track every session a root
user opens through them (:meth:`RootSessionGuard.track`: the root identity, its lock mode at
the leaf, an ``end(reason, fields)`` coroutine that cuts the session and audits it) and
untrack it when it ends. The guard re-checks them against :class:`~limen.trust.root_locks.
RootLocks`, as ``limen.agents.session_locks`` does for local locks:

* at once when some root's locks change: sessions in ``lock: strict`` mode that a lock
  now targets end (within the delivery of the root's push, well under 2 s);
* every ``interval`` seconds: sessions of any mode that a lock targets end (``best_effort``
  ends at this next check), and ``lock: strict`` ones whose root's locks are stale.

A daemon task started and stopped with the cluster links.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from limen.aio.changed import wait_event
from limen.aio.task_service import TaskService
from limen.ca.identity import Identity
from limen.errors import AccessDenied, LimenError
from limen.services.locks import lock_fields
from limen.trust.root_locks import RootLocks

__all__ = ["End", "RootSessionGuard"]

log = logging.getLogger(__name__)

End = Callable[[str, dict[str, Any]], Awaitable[None]]
"""Ends one session: ``(reason, audit fields)``."""


class RootSessionGuard(TaskService):
    name = "root-session-locks"

    def __init__(self, locks: RootLocks, *, interval: float = 2.0) -> None:
        self.locks = locks
        self.interval = interval
        self._tracked: dict[int, tuple[Identity, str, End]] = {}
        self._ids = itertools.count()

    def track(self, identity: Identity, mode: str | None, end: End) -> Callable[[], None]:
        """Watch one session of root ``identity``; returns the call that stops watching it."""
        key = next(self._ids)
        self._tracked[key] = (identity, mode or "best_effort", end)

        def untrack() -> None:
            self._tracked.pop(key, None)
        return untrack

    @property
    def tracked(self) -> int:
        return len(self._tracked)

    async def start(self) -> dict[str, str]:
        # the event taken now: a lock landing before the task first runs is seen
        self._task = asyncio.create_task(self._watch(self.locks.changed.event),
                                         name=self.name)
        return {}

    async def recheck(self, *, every_mode: bool = True) -> int:
        """End what the root locks no longer allow; returns how many. ``every_mode`` False:
        only ``lock: strict`` sessions (a change of the locks)."""
        ended = 0
        for key, (identity, mode, end) in list(self._tracked.items()):
            strict = mode == "strict"
            if not (strict or every_mode):
                continue
            try:
                self.locks.check(identity, strict=strict)
            except AccessDenied as refusal:
                self._tracked.pop(key, None)
                try:
                    await end(str(refusal), {"mode": mode, **lock_fields(refusal)})
                except (LimenError, OSError) as err:
                    log.warning("root locks: ending a session of %s@%s failed: %s",
                                identity.username, identity.cluster, err)
                ended += 1
        return ended

    async def _watch(self, pending: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self.interval
        while True:
            changed = await wait_event(pending, max(next_full - loop.time(), 0.0))
            pending = self.locks.changed.event  # a change during the re-check: seen next
            if changed:
                await self.recheck(every_mode=False)
                continue
            next_full = loop.time() + self.interval
            await self.recheck()
