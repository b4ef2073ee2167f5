"""The audit outbox: a change's audit events are written in the SAME store transaction as the
change, then delivered to the audit log; a crash in between loses none of them.

::

    apply_plan: one backend transaction ── objects + /audit/outbox/<time>-<n>-<uid> records
                      │ committed
                      ▼
    AuditOutbox.deliver: emit the events (the log fsyncs them) ── delete their records
                      │ crash anywhere here (kill -9)
                      ▼
    AuditOutbox.recover (auth's start): every record left ── skip the uids the log already
                      holds (a crash after the fsync, before the delete) ── emit ── delete

So an applied change is never missing from the audit log, and a drain repeated after a crash
writes no duplicate (events keep their uid and time from the transaction). Records sort by
the events' time and their place in the apply, so they are delivered in order.
Called by ``limen.services.apply`` (records), the auth server (deliver, recover).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from limen.backend.base import Backend, Delete, Put
from limen.errors import BadParameter
from limen.events.emitter import Emitter, emit_all
from limen.events.event import AuditEvent, format_time
from limen.events.seen import logged_uids

__all__ = ["OUTBOX_PREFIX", "AuditOutbox", "OutboxRecords", "outbox_records"]

log = logging.getLogger(__name__)

OUTBOX_PREFIX = "/audit/outbox/"
_DELETE_BATCH = 5000


class OutboxRecords:
    """The events of one transaction and the backend writes that keep them there."""

    def __init__(self, events: Sequence[AuditEvent]) -> None:
        self.events = tuple(events)
        self.keys = tuple(
            f"{OUTBOX_PREFIX}{format_time(e.time)}-{n:06d}-{e.uid}"
            for n, e in enumerate(self.events))

    @property
    def puts(self) -> list[Put]:
        return [Put(key, event.to_json().encode())
                for key, event in zip(self.keys, self.events, strict=True)]


def outbox_records(events: Sequence[AuditEvent]) -> OutboxRecords:
    return OutboxRecords(events)


class AuditOutbox:
    """Delivers outbox records to ``emitter``; ``log_dir`` (the FileLog's directory, found on
    the emitter when not given) is where :meth:`recover` looks for already written uids."""

    def __init__(self, backend: Backend, emitter: Emitter, *,
                 log_dir: str | os.PathLike[str] | None = None,
                 seen: Callable[[Sequence[AuditEvent]], set[str]] | None = None) -> None:
        self.backend = backend
        self.emitter = emitter
        directory = log_dir if log_dir is not None else getattr(emitter, "directory", None)
        self.log_dir = Path(directory) if directory is not None else None
        self._seen = seen
        self._lock = asyncio.Lock()

    async def deliver(self, records: OutboxRecords) -> None:
        """Emit the events of a committed transaction, then drop their records."""
        if not records.events:
            return
        async with self._lock:
            await self._emit(records.events)
            await self._delete(records.keys)

    async def recover(self) -> int:
        """Deliver what a crash left in the outbox (events not yet in the log); returns how
        many events were written now."""
        async with self._lock:
            items = await self.backend.list(OUTBOX_PREFIX)
            if not items:
                return 0
            events: list[AuditEvent] = []
            for item in items:
                try:
                    events.append(AuditEvent.from_json(item.value.decode()))
                except (BadParameter, UnicodeDecodeError) as err:
                    log.error("audit outbox: unreadable record %s dropped: %s", item.key, err)
            seen = await asyncio.to_thread(self._logged, events)
            missing = [e for e in events if e.uid not in seen]
            await self._emit(missing)
            await self._delete([item.key for item in items])
            log.warning("audit outbox: %d event(s) of an interrupted change written to the "
                        "audit log after a restart (%d were already there)",
                        len(missing), len(events) - len(missing))
            return len(missing)

    def _logged(self, events: Sequence[AuditEvent]) -> set[str]:
        if self._seen is not None:
            return self._seen(events)
        if self.log_dir is None:
            return set()
        return logged_uids(self.log_dir, events)

    async def _emit(self, events: Sequence[AuditEvent]) -> None:
        await emit_all(self.emitter, events)

    async def _delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            await self.backend.atomic([], [Delete(k) for k in keys[start:start + _DELETE_BATCH]])

