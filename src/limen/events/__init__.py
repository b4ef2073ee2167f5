"""Limen's audit event log (Teleport's ``lib/events`` in Limen's terms).

Every security-relevant action becomes a typed :class:`AuditEvent` with a stable code from
the one table in :mod:`limen.events.codes`, built by :func:`make_event` (which scrubs secrets)
and handed to an :class:`Emitter`. The default emitter, :class:`FileLog`, appends JSON lines to
``events/YYYY-MM-DD.jsonl``; :func:`search` reads them back for ``lmctl audit search``. With a
PostgreSQL backend (several auth replicas) :func:`open_audit_log` gives :class:`PostgresLog`
instead: the same chained lines in that database, searched there by every replica::

    make_event("user.login", user="alice", cluster="main", method="password")
        │ codes.py: type + outcome -> "L1000I"      scrub.py: drop secrets
        ▼
    Emitter.emit ──▶ MultiEmitter ──▶ FileLog ──▶ events/2026-11-24.jsonl ──▶ search()
                                 └──▶ MemoryEmitter ──▶ subscribers, tests

Modules: ``codes`` (types and codes), ``event`` (the record), ``scrub`` (secret removal),
``emitter`` (the protocol, fan-out, memory), ``filelog`` (the JSON-lines file), ``search``,
``postgres_log`` (the shared log; ``postgres_log_sql``, ``postgres_conn``, ``postgres_verify``),
``factory`` (which of the two). ``PostgresLog`` is imported from ``limen.events.postgres_log``
(psycopg is loaded only where the PostgreSQL log is used).
Used by auth, the proxy, the agents, the Git sync, the operator and the CLIs.
"""

from limen.events.codes import (
    EVENT_CODES,
    EventCode,
    EventType,
    Severity,
    code_for,
    lookup_code,
)
from limen.events.emitter import Emitter, MemoryEmitter, MultiEmitter, Subscription
from limen.events.event import AuditEvent, format_time, make_event, parse_time
from limen.events.factory import AuditLog, open_audit_log
from limen.events.filelog import FileLog, day_file_name, day_files
from limen.events.scrub import REDACTED, is_secret_name, scrub, token_fingerprint
from limen.events.search import SearchableLog, SearchResult, parse_since, scan, search, search_log

__all__ = [
    "EVENT_CODES",
    "REDACTED",
    "AuditEvent",
    "AuditLog",
    "Emitter",
    "EventCode",
    "EventType",
    "FileLog",
    "MemoryEmitter",
    "MultiEmitter",
    "SearchResult",
    "SearchableLog",
    "Severity",
    "Subscription",
    "code_for",
    "day_file_name",
    "day_files",
    "format_time",
    "is_secret_name",
    "lookup_code",
    "make_event",
    "open_audit_log",
    "parse_since",
    "parse_time",
    "scan",
    "scrub",
    "search",
    "search_log",
    "token_fingerprint",
]
