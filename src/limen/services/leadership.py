"""Leadership among replicas: hold a :class:`~limen.backend.lease.Lease`, renewed in the
background, and say when this process leads.

::

    follower ── every retry_every: lease.acquire() ──won──▶ leader
       ▲                                                     │ every renew_every: renew()
       └──── renew refused (taken after it expired) ◀────────┘ backend unreachable past the
                                                                expiry: deposed as well

A leader that dies stops renewing: its lease expires after ``ttl`` and a follower takes it
within ``ttl + retry_every``; a leader that stops cleanly releases it (taken over within
``retry_every``). :meth:`Leadership.fenced` is how the leader writes what only the leader may
write: it renews the lease (so the write has a whole ``ttl``), holds off the background renewal
meanwhile (the lease's revision stays the one in the fence), and hands the caller the
condition to put in its transaction; a lost lease becomes :class:`LeaseLost`, never a write.
:meth:`wait_until` lets the work that leadership gates start and stop with it.

Used by ``limen.gitops.sync_service`` (one Git sync at a time among auth replicas) and
``limen.trust.reconciler`` (one replica joins root clusters); :func:`replica_leadership`
builds one with the timings both use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from limen.aio.tasks import cancel_and_wait
from limen.backend.base import Backend, Condition
from limen.backend.lease import Lease, LeaseLost
from limen.errors import BadParameter, CompareFailed, LimenError

__all__ = ["LEASE_TTL", "RENEW_EVERY", "RETRY_EVERY", "Leadership", "replica_leadership"]

log = logging.getLogger(__name__)

LEASE_TTL = 6.0
"""Seconds a lease lasts unless renewed: how long a dead leader blocks the work it gates."""
RENEW_EVERY = 2.0
"""Seconds between the leader's renewals (a third of the TTL: two may fail in a row)."""
RETRY_EVERY = 1.0
"""Seconds between a standby replica's tries to take the lease."""


class Leadership:
    """Holds ``lease`` when it can (see the module docstring)."""

    def __init__(self, lease: Lease, *, renew_every: float, retry_every: float,
                 name: str = "leader") -> None:
        if not 0 < renew_every < lease.ttl:
            raise BadParameter("the lease must be renewed more often than its ttl")
        self.lease = lease
        self.renew_every = renew_every
        self.retry_every = max(retry_every, 0.01)
        self.name = name
        self._lock = asyncio.Lock()
        self._leading = asyncio.Event()
        self._following = asyncio.Event()
        self._following.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    async def start(self) -> bool:
        """Try to take the lease once now, then keep trying (or renewing) in the background;
        True when this process leads already."""
        await self._attempt()
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-lease")
        return self.leading

    async def stop(self) -> None:
        """Stop renewing and give the lease up (a follower takes over at its next try)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        async with self._lock:
            self._set(False)
            with contextlib.suppress(LimenError, OSError):
                await self.lease.release()

    async def wait_until(self, leading: bool) -> None:
        """Return once this process leads (``True``) or follows (``False``)."""
        await (self._leading if leading else self._following).wait()

    @contextlib.asynccontextmanager
    async def fenced(self) -> AsyncIterator[list[Condition]]:
        """The conditions that make a transaction commit only while this process leads;
        :class:`LeaseLost` (nothing to write) when it does not. A ``CompareFailed`` of the
        transaction caused by a lost lease is raised as :class:`LeaseLost` too."""
        async with self._lock:
            if self.leading and not await self._renew():
                self._set(False)
            if not self.leading:
                raise LeaseLost(f"this replica does not lead ({self.name}): it writes nothing")
            try:
                yield [self.lease.fence()]
            except LeaseLost:
                self._set(False)
                raise
            except CompareFailed:
                if await self._still_held():
                    raise
                self._set(False)
                raise LeaseLost(f"this replica lost the lease ({self.name}) before its "
                                "write: nothing was written") from None

    # -- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every if self.leading else self.retry_every)
            try:
                await self._attempt()
            except Exception:  # the loop must outlive any single failure
                log.exception("%s: lease check failed", self.name)

    async def _attempt(self) -> None:
        async with self._lock:
            if self.leading:
                if not await self._renew():
                    log.warning("%s: lost the lease %s; another replica leads now", self.name,
                                self.lease.key)
                    self._set(False)
                return
            try:
                won = await self.lease.acquire()
            except LimenError as err:
                log.debug("%s: cannot take the lease: %s", self.name, err)
                return
            if won:
                log.info("%s: took the lease %s: this replica leads", self.name, self.lease.key)
                self._set(True)

    async def _renew(self) -> bool:
        """Renew now; an unreachable backend keeps the lease only until it expires."""
        try:
            return await self.lease.renew()
        except LimenError as err:
            log.warning("%s: cannot renew the lease (%s); it ends in %.1fs", self.name, err,
                        max(self.lease.expires - self.lease.clock(), 0.0))
            return self.lease.held

    async def _still_held(self) -> bool:
        try:
            return await self.lease.still_held()
        except LimenError:
            return self.lease.held

    def _set(self, leading: bool) -> None:
        if leading:
            self._following.clear()
            self._leading.set()
        else:
            self._leading.clear()
            self._following.set()


def replica_leadership(backend: Backend, key: str, holder: str, *, name: str,
                       clock: Callable[[], float], ttl: float = LEASE_TTL,
                       renew_every: float = RENEW_EVERY,
                       retry_every: float = RETRY_EVERY) -> Leadership:
    """Leadership of the lease ``key`` among auth replicas, held as ``holder`` (this replica's
    host id and a per-process suffix)."""
    return Leadership(Lease(backend, key, holder, ttl=ttl, clock=clock),
                      renew_every=renew_every, retry_every=retry_every, name=name)
