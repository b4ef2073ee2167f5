"""Open db and kube sessions that a lock now targets are ended: :class:`SessionLockGuard`.

An agent's service wraps each served connection in :meth:`SessionLockGuard.track` with the
connection's identity and an ``end(reason, fields)`` coroutine (audit the ending, then close
the connection). The guard re-checks the tracked identities with the access policy's
:meth:`~limen.agents.node.policy.StoreAccessPolicy.lock_refusal`:

* at once when the lock view changes: connections whose roles say ``lock: strict`` end
  (within the lock view's delivery, well under 2 s);
* every ``interval`` seconds: connections of any mode that a lock targets end (``best_effort``
  ends them at this next check), and ``lock: strict`` ones whose locks cannot be verified.

The node agent does the same for SSH in ``limen.agents.node.locks``. Used by
``limen.agents.db.db_service`` and ``limen.agents.kube.kube_service``; built by
``limen.cli.compose`` and ``limen.cli.compose_remote``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from limen.aio.changed import wait_event
from limen.ca.identity import Identity
from limen.errors import AccessDenied, LimenError
from limen.services.locks import LocksUnknown, LockView, lock_fields

__all__ = ["LockChecker", "SessionLockGuard"]

log = logging.getLogger(__name__)

End = Callable[[str, dict[str, Any]], Awaitable[None]]


class LockChecker(Protocol):
    async def lock_refusal(self, identity: Identity) -> tuple[str | None, AccessDenied | None]:
        """The identity's lock mode here and the refusal a lock causes (None: none)."""
        ...


class SessionLockGuard:
    def __init__(self, checker: LockChecker, view: LockView, *, interval: float = 2.0) -> None:
        self.checker = checker
        self.view = view
        self.interval = interval
        self._tracked: dict[int, tuple[Identity, End, str | None]] = {}
        self._ids = itertools.count()
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def track(self, identity: Identity, end: End, mode: str | None = None) -> Iterator[None]:
        """Watch one connection while the block runs; ``mode``: its lock mode when known at
        its start (a strict one ends when its roles cannot be read and the view is stale)."""
        key = next(self._ids)
        self._tracked[key] = (identity, end, mode)
        try:
            yield
        finally:
            self._tracked.pop(key, None)

    def start(self) -> None:
        if self._task is None:  # the event taken now: a lock landing before the task runs
            self._task = asyncio.get_running_loop().create_task(
                self._run(self.view.changed.event))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def recheck(self, *, every_mode: bool = True) -> int:
        """End what the locks no longer allow; returns how many. ``every_mode`` False: only
        ``lock: strict`` connections (a lock change)."""
        ended = 0
        for key, (identity, end, known_mode) in list(self._tracked.items()):
            try:
                mode, refusal = await self.checker.lock_refusal(identity)
            except LimenError as err:
                if known_mode != "strict" or not self.view.stale:
                    log.warning("lock: cannot re-check %s: %s", identity.username, err)
                    continue
                mode, refusal = known_mode, LocksUnknown()
            strict = mode == "strict"
            if refusal is None or not (strict or every_mode):
                continue
            if isinstance(refusal, LocksUnknown) and not strict:
                continue
            self._tracked.pop(key, None)
            try:
                await end(str(refusal), {"mode": mode, **lock_fields(refusal)})
            except (LimenError, OSError) as err:
                log.warning("lock: ending a session of %s failed: %s", identity.username, err)
            ended += 1
        return ended

    async def _run(self, pending: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self.interval
        while True:
            changed = await wait_event(pending, max(next_full - loop.time(), 0.0))
            pending = self.view.changed.event  # a change during the re-check: seen next
            if changed:
                await self.recheck(every_mode=False)
                continue
            next_full = loop.time() + self.interval
            await self.recheck()
