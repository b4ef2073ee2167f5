"""The audit of app sessions at the proxy: ``app.session.start`` once per app session (user,
app, address), and each served request (method, path, status, bytes) gathered into
``app.session.chunk`` events, at most ``batch`` requests each, written ``delay`` seconds after
the first request of a batch or at once when the batch is full (and at stop).

Called by :mod:`limen.proxy.app.app_front`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from limen.errors import LimenError
from limen.events.emitter import Emitter
from limen.events.event import make_event

__all__ = ["AppAudit", "SessionKey"]

log = logging.getLogger(__name__)

_REMEMBERED = 10_000
"""Sessions whose start is remembered (then the oldest are forgotten)."""


@dataclass(frozen=True)
class SessionKey:
    cluster: str
    user: str
    app: str
    session_id: str


@dataclass
class _Batch:
    requests: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class AppAudit:
    def __init__(self, emitter: Emitter, *, batch: int = 50, delay: float = 2.0) -> None:
        self.emitter = emitter
        self._batch_size, self._delay = batch, delay
        self._started: dict[str, None] = {}
        self._batches: dict[SessionKey, _Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def session(self, key: SessionKey, remote_addr: str, **extra: Any) -> None:
        """``app.session.start`` the first time this proxy serves ``key.session_id``."""
        if key.session_id in self._started:
            return
        await self.emitter.emit(make_event(
            "app.session.start", cluster=key.cluster, user=key.user, app=key.app,
            session_id=key.session_id, remote_addr=remote_addr, **extra))
        self._started[key.session_id] = None
        while len(self._started) > _REMEMBERED:
            del self._started[next(iter(self._started))]

    async def refused(self, *, cluster: str, user: str | None, app: str, session_id: str,
                      remote_addr: str, reason: str, **extra: Any) -> None:
        await self.emitter.emit(make_event(
            "app.session.start", success=False, cluster=cluster, user=user, app=app,
            session_id=session_id, remote_addr=remote_addr, reason=reason, **extra))

    def request(self, key: SessionKey, **fields: Any) -> None:
        """One served request, written with its batch."""
        batch = self._batches.setdefault(key, _Batch())
        batch.requests.append(fields)
        if len(batch.requests) >= self._batch_size:
            self._batches.pop(key)
            if batch.task is not None:
                batch.task.cancel()
            self._spawn(key, batch, 0.0)
        elif batch.task is None:
            batch.task = self._spawn(key, batch, self._delay)

    def _spawn(self, key: SessionKey, batch: _Batch, delay: float) -> asyncio.Task[None]:
        task = asyncio.create_task(self._write(key, batch, delay), name="app audit chunk")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _write(self, key: SessionKey, batch: _Batch, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)  # the batching window, not a synchronisation
            if self._batches.get(key) is batch:
                del self._batches[key]
        await self._emit(key, batch.requests)

    async def _emit(self, key: SessionKey, requests: list[dict[str, Any]]) -> None:
        try:
            await self.emitter.emit(make_event(
                "app.session.chunk", cluster=key.cluster, user=key.user, app=key.app,
                session_id=key.session_id, requests=requests))
        except (LimenError, OSError) as err:
            log.error("app audit: %d requests of session %s not written: %s", len(requests),
                      key.session_id, err)

    async def aclose(self) -> None:
        """Write every pending batch now (and wait for those being written)."""
        batches, self._batches = self._batches, {}
        for batch in batches.values():
            if batch.task is not None:
                batch.task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for key, batch in batches.items():
            await self._emit(key, batch.requests)
