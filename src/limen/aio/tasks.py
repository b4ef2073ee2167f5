"""Ending background tasks: cancel them all, then wait for each to finish.

Called by every service's ``stop()`` (and the backends' ``close()``) for the tasks it started.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel every task (None: skipped), then await each; their ``CancelledError`` is
    swallowed, any other exception a task ended with is raised."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
