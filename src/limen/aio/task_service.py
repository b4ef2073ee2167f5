"""The ``Service`` protocol the daemon runs, and :class:`TaskService`, one background loop.

``limen.cli.daemon`` starts every ``Service`` of a process in order (collecting the listeners
each opened) and stops them in reverse. :class:`TaskService` is the base of a service whose
work is one background task running :meth:`TaskService._run`: ``start()`` creates it (named
``task_name``, by default the service's ``name``) and opens no listener, ``stop()`` cancels it
and waits for it. Used by the trust caches, the leaf proxy's cluster links and the agents'
audit outbox.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Protocol

from limen.aio.tasks import cancel_and_wait

__all__ = ["Service", "TaskService"]


class Service(Protocol):
    name: str

    async def start(self) -> dict[str, str]:
        """Start serving; return the listeners opened (name → ``host:port``)."""
        ...

    async def stop(self) -> None: ...


class TaskService:
    """See the module doc. Subclasses set ``name`` and implement :meth:`_run`."""

    name: str
    task_name: ClassVar[str | None] = None
    """The asyncio task's name; None: ``name``."""
    _task: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, str]:
        self._task = asyncio.create_task(self._run(), name=self.task_name or self.name)
        return {}

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        raise NotImplementedError
