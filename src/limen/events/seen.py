"""Which of some events are already in the audit log: the dedup of a repeated outbox drain.

An event written through a store outbox (``limen.services.audit_in_transaction``) may already be in
the log when a crash came between the log's fsync and the deletion of its outbox record; the
drain after the restart asks :func:`logged_uids` and skips those. Only the day files of the
events' own dates are read (:class:`~limen.events.FileLog` files an event by its ``time``),
and lines are matched by their ``uid`` (torn or corrupt lines are ignored).
Called by ``limen.services.audit_in_transaction``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC
from pathlib import Path

from limen.events.event import AuditEvent
from limen.events.filelog import day_file_name

__all__ = ["logged_uids"]


def logged_uids(directory: str | os.PathLike[str], events: Iterable[AuditEvent]) -> set[str]:
    """The uids of ``events`` that a line of the log in ``directory`` already holds."""
    wanted: dict[str, set[str]] = {}
    for event in events:
        wanted.setdefault(day_file_name(event.time.astimezone(UTC).date()), set()).add(event.uid)
    found: set[str] = set()
    for name, uids in wanted.items():
        path = Path(directory) / name
        try:
            with path.open("rb") as lines:
                for line in lines:
                    if b'"uid"' not in line:
                        continue
                    try:
                        data = json.loads(line)
                    except ValueError:
                        continue
                    uid = data.get("uid") if isinstance(data, dict) else None
                    if isinstance(uid, str) and uid in uids:
                        found.add(uid)
        except FileNotFoundError:
            continue
    return found
