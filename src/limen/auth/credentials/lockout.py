"""Login lockout: too many failed logins in a short window lock the user for a while.

Called by :mod:`limen.auth.credentials.login` (``authenticate``), whose records carry a
``LockoutState``; the auth server persists that state with the user's credentials after every
attempt. Pure functions over immutable values, the time passed in as ``now`` (Unix seconds).

Rules (``LockoutPolicy`` defaults): ``max_failures`` (5) failed logins within ``window``
(10 minutes) lock the user for ``lock_duration`` (15 minutes). While locked the user is refused
before the password is even checked, so attempts during a lock neither count nor extend it.
When the lock has expired the user starts again with a clean slate. A successful login clears
the failures.

User names that do not exist are locked the same way: the sixth wrong password for a name
nobody has answers "locked" exactly as for a real user, so the lockout does not tell which
names exist. Auth keeps their state in the backend, shared by its replicas
(``limen.auth.credentials.unknown_lockouts``); :class:`UnknownNameLockouts` is the same in
one process's memory, bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from limen.errors import BadParameter, LimitExceeded

__all__ = [
    "DEFAULT_LOCKOUT_POLICY",
    "LockoutPolicy",
    "LockoutState",
    "UnknownNameLockouts",
    "check_not_locked",
    "is_locked",
    "record_failure",
    "record_success",
]


@dataclass(frozen=True)
class LockoutPolicy:
    """When failed logins lock a local user, and for how long."""

    max_failures: int = 5
    """Failed logins within ``window`` that lock the user."""
    window: float = 10 * 60.0
    """Seconds a failed login counts for; older failures are forgotten."""
    lock_duration: float = 15 * 60.0
    """Seconds the user stays locked."""

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window <= 0 or self.lock_duration <= 0:
            raise BadParameter(
                "lockout policy needs max_failures >= 1 and a positive window and lock_duration"
            )


DEFAULT_LOCKOUT_POLICY = LockoutPolicy()


@dataclass(frozen=True)
class LockoutState:
    """A user's recent failed logins and current lock, as stored with the credentials."""

    failures: tuple[float, ...] = field(default=())
    """Times of the failed logins that still count (or that caused the current lock)."""
    locked_until: float | None = None
    """End of the current lock, or None."""


def is_locked(state: LockoutState, now: float) -> bool:
    """Whether the user is locked at ``now``."""
    return state.locked_until is not None and now < state.locked_until


def check_not_locked(state: LockoutState, now: float, user: str) -> None:
    """Raise ``LimitExceeded`` ("user alice is locked until 14:05:30 UTC after 5 failed
    logins") if ``user`` is locked at ``now``."""
    until = state.locked_until
    if until is None or now >= until:
        return
    fmt = "%H:%M:%S UTC" if until - now < 12 * 3600 else "%Y-%m-%d %H:%M:%S UTC"
    count = len(state.failures)
    raise LimitExceeded(
        f"user {user} is locked until {time.strftime(fmt, time.gmtime(until))} "
        f"after {count} failed login{'' if count == 1 else 's'}"
    )


def record_failure(
    state: LockoutState, now: float, policy: LockoutPolicy = DEFAULT_LOCKOUT_POLICY
) -> LockoutState:
    """The state after a failed login at ``now``; locks the user on the ``max_failures``-th
    failure within ``window``. A failure while locked changes nothing (the lock is not
    extended); after an expired lock the count starts again from zero."""
    if is_locked(state, now):
        return state
    if state.locked_until is not None:  # the lock has expired: forget what caused it
        state = LockoutState()
    still_counting = [t for t in state.failures if now - t < policy.window]
    recent = (*still_counting, now)[-policy.max_failures :]
    if len(recent) >= policy.max_failures:
        return LockoutState(failures=recent, locked_until=now + policy.lock_duration)
    return LockoutState(failures=recent)


def record_success(state: LockoutState, now: float) -> LockoutState:
    """The state after a successful login at ``now``: failures are cleared. An active lock
    is kept (a caller that skipped ``check_not_locked`` cannot lift it by succeeding)."""
    if is_locked(state, now):
        return state
    return LockoutState()


class UnknownNameLockouts:
    """The :class:`LockoutState` of user names that have no credentials, in memory.

    Bounded: at most ``max_names`` names are kept; beyond that, names whose failures no
    longer count and that are not locked go first, then the least recently failed. With
    Argon2 at ~0.1 s a try, filling 100,000 names within one window and lock (25 minutes)
    takes over 60 tries a second: an attacker cannot flush a lock out to probe a name. Not
    thread-safe: used from auth's event loop."""

    def __init__(self, max_names: int = 100_000,
                 policy: LockoutPolicy = DEFAULT_LOCKOUT_POLICY) -> None:
        if max_names < 1:
            raise BadParameter("max_names must be at least 1")
        self.max_names = max_names
        self.policy = policy
        self._states: OrderedDict[str, LockoutState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def get(self, name: str) -> LockoutState:
        """The state of ``name`` (empty when unknown so far)."""
        return self._states.get(name, _EMPTY)

    def replace(self, name: str, expected: LockoutState, new: LockoutState, now: float) -> bool:
        """Store ``new`` for ``name`` if its state is still ``expected`` (compare-and-swap
        against a concurrent login of the same name); False when it changed meanwhile."""
        if self._states.get(name, _EMPTY) != expected:
            return False
        self._states.pop(name, None)
        if new.failures or new.locked_until is not None:
            self._states[name] = new  # the most recently failed last
            if len(self._states) > self.max_names:
                self._evict(now)
        return True

    def _evict(self, now: float) -> None:
        stale = [n for n, s in self._states.items()
                 if not is_locked(s, now) and all(now - t >= self.policy.window
                                                   for t in s.failures)]
        for name in stale:
            del self._states[name]
        while len(self._states) > self.max_names:
            self._states.popitem(last=False)


_EMPTY = LockoutState()
