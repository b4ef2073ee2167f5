"""``MeteredBackend``: a :class:`~limen.backend.base.Backend` that times every operation.

Each call to the wrapped backend is observed in ``limen_backend_operation_seconds{operation}``
(and ``limen_backend_operation_errors_total`` when it raises); the results and errors are the
wrapped backend's, unchanged. Built by ``limen start`` with the auth role
(``limen.cli.diag_wiring``) around the backend it opened. :func:`unwrapped` gives the
backend underneath, for code that picks a store by the backend's class
(``limen.auth.recordings``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from limen.backend.base import Backend, Condition, Delete, Event, Item, Put
from limen.diag.metrics import Metrics

__all__ = ["MeteredBackend", "unwrapped"]

_T = TypeVar("_T")


class MeteredBackend:
    """See the module doc."""

    def __init__(self, inner: Backend, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def _timed(self, operation: str, call: Callable[[], Awaitable[_T]]) -> _T:
        started = time.perf_counter()
        try:
            return await call()
        except BaseException:
            self.metrics.backend_errors.labels(operation).inc()
            raise
        finally:
            self.metrics.backend_seconds.labels(operation).observe(
                time.perf_counter() - started)

    async def get(self, key: str) -> Item | None:
        return await self._timed("get", lambda: self.inner.get(key))

    async def list(self, prefix: str) -> list[Item]:
        return await self._timed("list", lambda: self.inner.list(prefix))

    async def put(self, key: str, value: bytes, *, expires: float | None = None) -> Item:
        return await self._timed("put", lambda: self.inner.put(key, value, expires=expires))

    async def create(self, key: str, value: bytes, *, expires: float | None = None) -> Item:
        return await self._timed("create",
                                 lambda: self.inner.create(key, value, expires=expires))

    async def compare_and_swap(self, key: str, expected_revision: int, value: bytes, *,
                               expires: float | None = None) -> Item:
        return await self._timed("compare_and_swap", lambda: self.inner.compare_and_swap(
            key, expected_revision, value, expires=expires))

    async def delete(self, key: str, *, expected_revision: int | None = None) -> None:
        await self._timed("delete", lambda: self.inner.delete(
            key, expected_revision=expected_revision))

    async def atomic(self, conditions: Sequence[Condition],
                     ops: Sequence[Put | Delete]) -> int:
        return await self._timed("atomic", lambda: self.inner.atomic(conditions, ops))

    async def current_revision(self) -> int:
        return await self._timed("current_revision", self.inner.current_revision)

    def watch(self, prefix: str, *, after: int | None = None) -> AsyncIterator[Event]:
        return self.inner.watch(prefix, after=after)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def unwrapped(backend: Backend) -> Backend:
    """The backend under a :class:`MeteredBackend`, or ``backend`` itself."""
    return backend.inner if isinstance(backend, MeteredBackend) else backend
