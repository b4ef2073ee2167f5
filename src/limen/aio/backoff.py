"""Reconnect delays: exponential backoff with full jitter (base 0.5 s, cap 30 s).

``delay = random() * min(cap, base * 2**attempt)`` — "full jitter", so a fleet of agents that
lost the same proxy does not come back in lock step. The agent resets the schedule after a
connection that stayed up for a while. Called by :mod:`limen.tunnel.agent`, the agents' audit
outbox, the trust reconciler and the leaf proxy's cluster links; pure (injectable random
source), unit-tested. :func:`keep_trying` retries one call with it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Backoff", "keep_trying"]

T = TypeVar("T")


class Backoff:
    def __init__(self, base: float = 0.5, cap: float = 30.0, *,
                 rng: Callable[[], float] = random.random) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng

    def ceiling(self) -> float:
        """The largest delay the next attempt may wait."""
        return min(self.cap, self.base * (1 << min(self.attempt, 64)))

    def next_delay(self) -> float:
        delay = float(self._rng()) * self.ceiling()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


async def keep_trying(attempt: Callable[[], Awaitable[T]],
                      retry_on: tuple[type[BaseException], ...], *, base: float = 1.0,
                      cap: float = 15.0) -> T:
    """``attempt()`` again after a jittered delay (at least ``base / 2``) for as long as it
    raises one of ``retry_on``; its result. What a process that already serves runs in the
    background for a call its peer could not answer at start (the proxy: its address, the
    second factor)."""
    backoff = Backoff(base, cap)
    while True:
        await asyncio.sleep(backoff.next_delay() + base / 2)
        try:
            return await attempt()
        except retry_on:
            continue
