"""Stopping a task for sure: cancel it again until it has ended.

A single ``cancel()`` can be lost on Python 3.11: ``asyncio.wait_for`` (which asyncssh's
``connect`` uses) swallows the cancellation when its inner future finishes at the same moment,
and a task awaiting another task's end inside ``contextlib.suppress(CancelledError)`` swallows
its own. A tunnel agent's reconnect loop or a pool's reconciling loop would then run on and
the ``stop()`` awaiting it would hang. Called by :mod:`limen.tunnel.agent` and
:mod:`limen.tunnel.agent_pool`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from limen.aio.tasks import cancel_and_wait

__all__ = ["RECANCEL_EVERY", "stop_task"]

RECANCEL_EVERY = 1.0
"""Seconds between cancellations of a task that has not ended yet."""


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` until it ends, then as :func:`~limen.aio.tasks.cancel_and_wait`
    (its ``CancelledError`` swallowed, any other exception it ended with raised)."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_EVERY)
    await cancel_and_wait(task)
