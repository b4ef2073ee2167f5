"""Reconnect delays: exponential backoff with full jitter (base 0.5 s, cap 30 s).

``delay = random() * min(cap, base * 2**attempt)`` — "full jitter", so a fleet of agents that
lost the same proxy does not come back in lock step. The agent resets the schedule after a
connection that stayed up for a while. Called by :mod:`limen.tunnel.agent`, the agents' audit
outbox, the trust reconciler and the leaf proxy's cluster links; pure (injectable random
source), unit-tested.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


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
