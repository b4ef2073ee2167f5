"""A web-port route served by a stream handler: the router's TLS transport turned into an
``asyncio`` reader and writer, and the connections it started, ended when the proxy stops.

The kube front's routes (:mod:`limen.proxy.kube.kube_front`: SNI and ALPN ``limen-kube``) are
built on it; :class:`limen.proxy.tls_router.TLSRouter` calls :meth:`StreamRoute.protocol` for
each connection it hands over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["StreamHandler", "StreamRoute"]

log = logging.getLogger(__name__)

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                         Coroutine[Any, Any, None]]


class StreamRoute:
    """Protocol factory for ``handler`` (``name`` in logs); ``limit``: the reader's."""

    def __init__(self, handler: StreamHandler, name: str, *, limit: int = 256 * 1024) -> None:
        self._handler = handler
        self._name = name
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def protocol(self) -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=self._limit)

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.create_task(self._handler(reader, writer),
                                       name=f"{self._name} connection")
            self._tasks.add(task)
            self._writers.add(writer)

            def done(finished: asyncio.Task[None]) -> None:
                self._tasks.discard(finished)
                self._writers.discard(writer)
                if not finished.cancelled() and finished.exception() is not None:
                    log.error("%s: a connection failed", self._name,
                              exc_info=finished.exception())
            task.add_done_callback(done)

        return asyncio.StreamReaderProtocol(reader, connected)

    def __len__(self) -> int:
        return len(self._tasks)

    async def stop(self) -> None:
        """End the routed connections (the router stopped accepting before)."""
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
