"""The watch history of the Kubernetes API emulator: every change, by resourceVersion.

Written by ``store.py`` on every change; read by ``watching.py`` to serve
watch streams from any ``resourceVersion`` still kept (older ones get 410 Gone, as etcd
compaction gives on a real cluster).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
from typing import Any

from .errors import ApiError

__all__ = ["MAX_EVENTS", "WatchEvent", "WatchHistory"]

MAX_EVENTS = 100_000  # kept for continuation; half are dropped when exceeded


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    """One change (``old`` is the state before a MODIFIED one)."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    group_plural: tuple[str, str]
    obj: dict[str, Any]
    old: dict[str, Any] | None


class WatchHistory:
    """Events in resourceVersion order, addressed by cursors that survive trimming."""

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self.max_events = max_events
        self._events: list[WatchEvent] = []
        self._rvs: list[int] = []
        self._trimmed = 0  # how many events were dropped from the front
        self._wakeup: asyncio.Event | None = None

    def append(self, event: WatchEvent) -> None:
        self._events.append(event)
        self._rvs.append(event.rv)
        if len(self._events) > self.max_events:
            drop = len(self._events) // 2
            del self._events[:drop], self._rvs[:drop]
            self._trimmed += drop
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def cursor_after(self, rv: int) -> int:
        """The cursor just after ``rv``; 410 Gone if events after it were trimmed."""
        if self._trimmed and (not self._rvs or rv < self._rvs[0] - 1):
            raise ApiError(410, "Expired", f"too old resource version: {rv}")
        return self._trimmed + bisect.bisect_right(self._rvs, rv)

    def read(self, cursor: int) -> tuple[list[WatchEvent], int]:
        """Events at and after ``cursor``, and the cursor after them."""
        if cursor < self._trimmed:
            raise ApiError(410, "Expired", "too old resource version")
        return self._events[cursor - self._trimmed :], self._trimmed + len(self._events)

    async def wait(self, seconds: float) -> None:
        """Return after the next change, ``wake()`` or ``seconds``."""
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), max(seconds, 0))

    def wake(self) -> None:
        """Wake every waiting watcher (e.g. to end the streams at shutdown)."""
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
