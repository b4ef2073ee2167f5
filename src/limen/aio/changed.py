"""A "something changed" broadcast for asyncio, and waiting for an event with a time limit.

:class:`Changed` replaces the idiom "``self._changed.set()`` then ``self._changed =
asyncio.Event()``": every :meth:`Changed.notify` wakes each waiter that took the event before
it, and later waiters wait for the next notify. A waiter that must not miss a change made
between looking at the state and waiting takes :attr:`Changed.event` first, looks, then waits
on that event. Used by the backends' watches, the tunnel's registries and agent, and the trust
caches (``wait_changed``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["Changed", "wait_event"]


async def wait_event(event: asyncio.Event, within: float | None) -> bool:
    """True once ``event`` is set, False after ``within`` seconds (None: no limit)."""
    try:
        async with asyncio.timeout(within):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Changed:
    """See the module doc."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    @property
    def event(self) -> asyncio.Event:
        """The event the next :meth:`notify` sets."""
        return self._event

    def notify(self) -> None:
        """Wake every waiter so far; later waiters wait for the next call."""
        self._event.set()
        self._event = asyncio.Event()

    def wait(self, within: float | None = None) -> Coroutine[Any, Any, bool]:
        """Wait for the next :meth:`notify` (True) or ``within`` seconds (False). The notify
        counted is the first one after this call, not after the first await."""
        return wait_event(self._event, within)
