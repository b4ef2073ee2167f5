"""A per-key rate limit (a token bucket per key, bounded in memory), used by the web API for
session creation and sign-up per client address and per user or link
(``limen.proxy.webui.session_api``, ``limen.proxy.webui.mount``)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from limen.errors import LimitExceeded

__all__ = ["RateLimiter"]


class RateLimiter:
    """At most ``burst`` attempts at once per key, refilled at ``per_minute`` a minute."""

    def __init__(self, burst: int, per_minute: float, *, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.rate = burst, per_minute / 60.0
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, what: str) -> None:
        """Spend one attempt of ``key``; ``LimitExceeded`` (HTTP 429) when none is left."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise LimitExceeded(f"too many {what}: try again in {wait} s")
        self._buckets[key] = (tokens - 1.0, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
