"""What the audit events a process writes say about its activity, as metrics.

The audit log already records every login, certificate, session and refusal with its fields,
so counting them where they are written keeps the metrics and the audit trail in step without
a second call at each place. Called by :class:`limen.events.metered.MeteredLog` for every
event written (type, outcome, free fields): :func:`observe_event` for one,
:func:`observe_events` for a batch (a db agent's buffered queries: one increment of
``limen_audit_events_written_total`` per type and outcome, not per event). It reads only the
fields named below, never anything secret (the scrubber ran before).

========================  =========================================================
event                      metrics
========================  =========================================================
user.login                 ``limen_logins_total{outcome}``
cert.create (success)      ``limen_certificates_issued_total{type=cert_type}``
session.start / .end       ``limen_sessions_total`` / ``_active{protocol="ssh"}``,
                           ``limen_relayed_bytes_total`` (bytes_in, bytes_out)
db.session.start / .end    the same with ``protocol=db_protocol`` (bytes_to_db, ...)
kube.session.start / .end  the same with ``protocol="kube"`` (exec, attach, port-forward)
kube.request, app.*        ``limen_rbac_decisions_total{kind}``
access.denied              ``limen_rbac_decisions_total{kind, decision="denied"}``
========================  =========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from limen.diag.metrics import Metrics

__all__ = ["observe_event", "observe_events"]

_STARTS = {"session.start": "ssh", "db.session.start": "db", "kube.request": "kube",
           "app.session.start": "app"}
_ENDS = ("session.end", "db.session.end", "kube.session.end")
_DETAILED = frozenset({"user.login", "cert.create", "access.denied", "kube.session.start",
                       *_STARTS, *_ENDS})
"""Event types that move a metric of their own besides the count of events written."""


def observe_event(metrics: Metrics, event_type: str, success: bool,
                  fields: Mapping[str, Any]) -> None:
    """Count one written audit event (see the module doc)."""
    metrics.audit_events.labels(event_type, "success" if success else "failure").inc()
    if event_type in _DETAILED:
        _observe_detail(metrics, event_type, success, fields)


def observe_events(metrics: Metrics,
                   events: Iterable[tuple[str, bool, Mapping[str, Any]]]) -> None:
    """Count written audit events ``(type, success, fields)`` as :func:`observe_event` would
    one by one, with one increment per type and outcome for the count of events written."""
    written: dict[tuple[str, bool], int] = {}
    for event_type, success, fields in events:
        written[event_type, success] = written.get((event_type, success), 0) + 1
        if event_type in _DETAILED:
            _observe_detail(metrics, event_type, success, fields)
    for (event_type, success), count in written.items():
        metrics.audit_events.labels(event_type, "success" if success else "failure").inc(count)


def _observe_detail(metrics: Metrics, event_type: str, success: bool,
                    fields: Mapping[str, Any]) -> None:
    if event_type == "user.login":
        metrics.logins.labels("success" if success else "failure").inc()
    elif event_type == "cert.create" and success:
        metrics.certificates_issued.labels(str(fields.get("cert_type") or "unknown")).inc()
    elif event_type == "access.denied":
        metrics.rbac_decisions.labels(_denied_kind(str(fields.get("action") or "")),
                                      "denied").inc()
    elif event_type in _STARTS:
        kind = _STARTS[event_type]
        metrics.rbac_decisions.labels(kind, "allowed" if success else "denied").inc()
        if success and event_type in ("session.start", "db.session.start"):
            protocol = _protocol(event_type, fields)
            metrics.session_opened(protocol)
    elif event_type == "kube.session.start":
        metrics.session_opened("kube")
    elif event_type in _ENDS:
        _session_ended(metrics, _protocol(event_type, fields), fields)


def _protocol(event_type: str, fields: Mapping[str, Any]) -> str:
    if event_type.startswith("db."):
        return str(fields.get("db_protocol") or "db")
    if event_type.startswith("kube."):
        return "kube"
    return "ssh"


def _session_ended(metrics: Metrics, protocol: str, fields: Mapping[str, Any]) -> None:
    metrics.session_closed(protocol)
    sent = fields.get("bytes_in", fields.get("bytes_to_db"))
    received = fields.get("bytes_out", fields.get("bytes_from_db"))
    for direction, value in (("in", sent), ("out", received)):
        if isinstance(value, int) and value > 0:
            metrics.relayed_bytes.labels(protocol, direction).inc(value)


def _denied_kind(action: str) -> str:
    if action.startswith("db."):
        return "db"
    if action.startswith("kube."):
        return "kube"
    if action.startswith(("resources.", "session.", "recordings", "users.", "roles.")):
        return "api"
    return "ssh"
