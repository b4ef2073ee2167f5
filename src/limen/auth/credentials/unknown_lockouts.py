"""The lockout state of user names that have no credentials, kept in the backend.

A login for a name nobody has must answer exactly as for a real user, including "locked" at
the sixth wrong password (``limen.auth.credentials.lockout``). Real users' lockout state is
stored with their credentials, which every auth replica shares; this is the same for unknown
names, so that behind a load balancer the sixth attempt is refused whichever replica answers
(with a count in each replica's memory, an unknown name would be locked only after five
attempts *per replica*, and the difference would tell which names exist)::

    /secrets/lockout/unknown/<sha256 of the name>  {"failures": [...], "locked_until": t}

Written with compare-and-swap (a concurrent attempt at another replica makes the caller decide
again) and stored with an expiry (the end of the lock or of the last failure's window), so the
backend forgets a name once its state no longer matters. Called by
``limen.auth.credentials.local_users``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from limen.auth.credentials.lockout import DEFAULT_LOCKOUT_POLICY, LockoutPolicy, LockoutState
from limen.backend.base import Backend
from limen.errors import CompareFailed, NotFound

__all__ = ["UNKNOWN_LOCKOUT_PREFIX", "StoredUnknownLockouts"]

UNKNOWN_LOCKOUT_PREFIX = "/secrets/lockout/unknown/"


def _key(name: str) -> str:
    return UNKNOWN_LOCKOUT_PREFIX + hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()


def _decode(value: bytes) -> LockoutState:
    try:
        doc = json.loads(value)
        failures = tuple(float(t) for t in doc.get("failures") or ())
        until = doc.get("locked_until")
        return LockoutState(failures, None if until is None else float(until))
    except (ValueError, TypeError, AttributeError):
        return LockoutState()  # unreadable: start afresh rather than lock anyone out forever


class StoredUnknownLockouts:
    """``get`` a name's state with the revision it was read at, ``replace`` it only if that
    revision is still current. ``clock`` is auth's clock (the expiry of the records)."""

    def __init__(self, backend: Backend, clock: Callable[[], float],
                 policy: LockoutPolicy = DEFAULT_LOCKOUT_POLICY) -> None:
        self.backend = backend
        self.clock = clock
        self.policy = policy

    async def get(self, name: str) -> tuple[LockoutState, int]:
        """The state of ``name`` (empty when unknown so far) and its revision (0: none)."""
        item = await self.backend.get(_key(name))
        if item is None:
            return LockoutState(), 0
        return _decode(item.value), item.revision

    async def replace(self, name: str, revision: int, new: LockoutState) -> bool:
        """Store ``new`` for ``name`` if it is still at ``revision``; False when another
        attempt changed it meanwhile."""
        key = _key(name)
        try:
            if not new.failures and new.locked_until is None:
                if revision:
                    await self.backend.delete(key, expected_revision=revision)
                return True
            await self.backend.compare_and_swap(key, revision, json.dumps({
                "failures": list(new.failures), "locked_until": new.locked_until,
            }).encode(), expires=self._expiry(new))
        except (CompareFailed, NotFound):
            return False
        return True

    def _expiry(self, state: LockoutState) -> float:
        last = max(state.failures, default=self.clock())
        return max(last + self.policy.window, state.locked_until or 0.0, self.clock() + 1.0)
