"""``MeteredLog``: an audit log that counts what it writes into the process's metrics.

Wraps the log ``limen start`` opened with the auth role (``limen.events.factory.open_audit_log``:
a :class:`~limen.events.FileLog` or :class:`~limen.events.PostgresLog`), so auth counts every
event the cluster's audit log writes, its agents' included;
every event written is handed to :mod:`limen.diag.audit_view` (logins,
certificates, sessions, bytes, access decisions) and every write that raises counts in
``limen_audit_write_failures_total`` before the error goes on. Everything else (``search``,
``write``, ...) is the wrapped log's, so ``isinstance`` checks against the runtime protocols
(``SearchableLog``) and ``emit_many`` answer as they would for it. Built by
``limen.cli.compose``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from limen.diag.audit_view import observe_event, observe_events
from limen.diag.metrics import Metrics
from limen.events.event import AuditEvent
from limen.events.factory import AuditLog
from limen.events.filelog import SignerSource

__all__ = ["MeteredLog"]


class MeteredLog:
    """See the module doc."""

    def __init__(self, inner: AuditLog, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def emit(self, event: AuditEvent) -> None:
        try:
            await self.inner.emit(event)
        except BaseException:
            self.metrics.audit_failures.inc()
            raise
        self._observe(event)

    async def emit_many(self, events: Sequence[AuditEvent]) -> None:
        try:
            await self.inner.emit_many(events)
        except BaseException:
            self.metrics.audit_failures.inc(len(events))
            raise
        observe_events(self.metrics, ((event.type.value, event.success, event.fields)
                                      for event in events))

    def set_signer(self, source: SignerSource, *, start: bool = True) -> None:
        self.inner.set_signer(source, start=start)

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _observe(self, event: AuditEvent) -> None:
        observe_event(self.metrics, event.type.value, event.success, event.fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
