"""The locks for an agent running apart from auth: a long poll of ``GET /v1/locks``.

:class:`AuthLockFeed` keeps the agent's :class:`~limen.services.locks.LockView` equal to auth's
through the auth link (the agent's reverse tunnel): each answer replaces the view and marks it
fresh; the next request waits at auth until the locks change (``limen.auth.http.locks``), so a
new lock reaches the agent within one round trip. When auth cannot be reached the view keeps
what it last knew (still enforced) and grows stale: after ``max_staleness`` seconds, sessions in
``lock: strict`` mode are refused ("cannot verify locks: auth unreachable"). Started by
``limen.cli.compose_remote`` for node, db and kube agents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from limen.api.resources import Resource
from limen.auth.client import AuthClient
from limen.errors import LimenError
from limen.services.locks import LockView

__all__ = ["AuthLockFeed"]

log = logging.getLogger(__name__)


class AuthLockFeed:
    def __init__(self, client: Callable[[], Awaitable[AuthClient]], view: LockView, *,
                 wait: float = 10.0, retry: float = 0.5) -> None:
        self.client = client
        self.view = view
        self.wait = wait
        self.retry = retry
        self._task: asyncio.Task[None] | None = None

    async def poll_once(self, *, wait: float = 0.0) -> None:
        """One request; the view is replaced with the answer."""
        auth = await self.client()
        answer = await auth.call("GET", "/v1/locks", params={
            "after": str(self.view.revision), "wait": str(int(wait))})
        items = [Resource.from_document(doc) for doc in answer.get("items") or []]
        self.view.replace(items, int(answer.get("revision") or 0))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        failing, fresh = False, False
        while True:
            try:  # at once at the start and after a failure: the view is fresh again now
                await self.poll_once(wait=self.wait if fresh else 0.0)
                fresh = True
                if failing:
                    log.info("locks: auth reachable again")
                failing = False
                continue
            except asyncio.CancelledError:
                raise
            except (LimenError, OSError, TimeoutError, ValueError, KeyError) as err:
                fresh = False
                if not failing:
                    log.warning("locks: cannot refresh from auth (%s); enforcing the last "
                                "known locks", err)
                failing = True
            await asyncio.sleep(self.retry)
