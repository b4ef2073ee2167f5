"""A lease in the backend: one holder at a time, for ``ttl`` seconds, renewed by its holder.

The record at the lease's key names its holder and is stored with an expiry::

    <key> = {"holder": "auth-2:1f0c...", "acquired": 1700000000.0, "renewed": 1700000004.0,
             "ttl": 6.0}                                  expires = renewed + ttl

- :meth:`Lease.acquire` takes the lease when nobody holds it: absent or expired (reads and
  compare-and-swap treat an expired item as absent), written with compare-and-swap on
  "absent", so of several contenders exactly one wins;
- :meth:`Lease.renew` extends it, by compare-and-swap on the revision this holder wrote: when
  that fails, someone took it after it expired (or released it), and it is lost;
- :meth:`Lease.fence` is the condition "still held by me" for a transaction: committed only
  while the lease is this holder's and unexpired (an expired key fails a condition), so work
  planned by a holder that lost the lease cannot land after a successor took over;
- :meth:`Lease.release` deletes it (a clean stop hands over at once instead of after ``ttl``).

Expiries are written with the holder's clock and checked with the backend's (the PostgreSQL
backend: each replica's own clock), so the replicas' clocks must agree to well within the TTL
(NTP does). Used by ``limen.services.leadership`` (the Git sync's leader).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

from limen.backend.base import Backend, Condition
from limen.errors import BadParameter, CompareFailed, NotFound

__all__ = ["Lease", "LeaseLost"]


class LeaseLost(CompareFailed):
    """This holder does not hold the lease (any more): what it guards was not done."""


class Lease:
    """The lease at ``key`` as ``holder`` sees it (see the module docstring)."""

    def __init__(self, backend: Backend, key: str, holder: str, *, ttl: float,
                 clock: Callable[[], float] = time.time) -> None:
        if ttl <= 0:
            raise BadParameter("a lease needs a positive ttl")
        self.backend = backend
        self.key = key
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.revision: int | None = None
        """The revision of this holder's last write while it holds the lease; None: not held."""
        self.expires = 0.0
        """When the lease ends unless renewed (this holder's clock)."""
        self._acquired = 0.0

    @property
    def held(self) -> bool:
        """Does this holder hold the lease, as far as it knows (written, not yet expired)?"""
        return self.revision is not None and self.clock() < self.expires

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (renew it if this holder does); True when held."""
        if self.revision is not None:
            return await self.renew()
        if await self.backend.get(self.key) is not None:
            return False
        self._acquired = self.clock()
        return await self._write(0)

    async def renew(self) -> bool:
        """Extend the lease by ``ttl`` from now; False (and not held) when it was lost."""
        if self.revision is None:
            return False
        if not await self._write(self.revision):
            self._forget()
            return False
        return True

    async def _write(self, expected: int) -> bool:
        now = self.clock()
        value = json.dumps({"holder": self.holder, "acquired": self._acquired, "renewed": now,
                            "ttl": self.ttl}).encode()
        try:
            item = await self.backend.compare_and_swap(self.key, expected, value,
                                                       expires=now + self.ttl)
        except CompareFailed:
            return False
        self.revision, self.expires = item.revision, now + self.ttl
        return True

    def fence(self) -> Condition:
        """The condition "this holder still holds the lease" for an atomic write;
        :class:`LeaseLost` when it knows it does not."""
        if self.revision is None or not self.held:
            raise LeaseLost(f"{self.holder} does not hold the lease {self.key}")
        return Condition(self.key, self.revision)

    async def still_held(self) -> bool:
        """Does the backend still say this holder holds the lease (same revision, live)?"""
        if self.revision is None:
            return False
        item = await self.backend.get(self.key)
        if item is None or item.revision != self.revision:
            self._forget()
            return False
        return True

    async def release(self) -> None:
        """Give the lease up now, if still held (nothing when another holder has it)."""
        revision, self.revision = self.revision, None
        self.expires = 0.0
        if revision is None:
            return
        # expired or taken over meanwhile: nothing of ours is left to give up
        with contextlib.suppress(CompareFailed, NotFound):
            await self.backend.delete(self.key, expected_revision=revision)

    async def current_holder(self) -> str | None:
        """Who holds the lease now, according to the backend (None: nobody)."""
        item = await self.backend.get(self.key)
        if item is None:
            return None
        try:
            holder = json.loads(item.value).get("holder")
        except (ValueError, AttributeError):
            return None
        return holder if isinstance(holder, str) else None

    def _forget(self) -> None:
        self.revision, self.expires = None, 0.0
