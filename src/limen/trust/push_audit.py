"""Audit of the trust answers a node refused from a proxy: each refusal of
``limen.trust.roots_poller.RemoteTrustCache.pushed`` (forged, tampered, replayed, of another
cluster, too old) becomes an ``access.denied`` event, written through the node's emitter (its
audit outbox) in the background.

Wired by ``limen.cli.compose_remote`` as the cache's ``on_refused``.
"""

from __future__ import annotations

import asyncio
import logging

from limen.errors import LimenError
from limen.events.emitter import Emitter
from limen.events.event import make_event

__all__ = ["PUSH_REFUSED", "PushRefusalAudit"]

log = logging.getLogger(__name__)

PUSH_REFUSED = "trust answer pushed"
"""The ``request`` field of the event."""


class PushRefusalAudit:
    """``audit(reason, proxy)``: one ``access.denied`` event; :meth:`close` waits for the
    events still being written."""

    def __init__(self, emitter: Emitter, cluster: str, host_id: str) -> None:
        self.emitter = emitter
        self.cluster = cluster
        self.host_id = host_id
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, reason: str, proxy: str) -> None:
        task = asyncio.get_running_loop().create_task(self._emit(reason, proxy))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _emit(self, reason: str, proxy: str) -> None:
        try:
            await self.emitter.emit(make_event(
                "access.denied", cluster=self.cluster, request=PUSH_REFUSED, reason=reason,
                proxy=proxy, server_id=self.host_id))
        except (LimenError, OSError) as err:
            log.warning("trusted roots: cannot audit a refused trust answer: %s", err)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
