"""``AuditEvent``: one typed, self-describing audit record, and ``make_event`` to build one.

Called by everything that audits (auth, proxy, agents, the Git sync, the operator) to build
events, by the emitters to serialise them, and by subscribers that parse them back.

One event is one JSON object on one line; the first seven keys are fixed, in this order::

    {"event": "user.login", "code": "L1000I", "time": "2026-11-24T10:00:00.123Z",
     "uid": "<uuid4>", "cluster": "main", "user": "alice", "success": true,
     ...free fields (login, remote_addr, session_id, ...)...,
     "scrubbed": ["password"]}          # only when the scrubber removed something

``user`` is omitted when the event has no user. ``time`` is UTC with millisecond precision.
Free fields are plain JSON data; :func:`make_event` normalises common Python values (datetime,
enums, UUIDs, paths, IP addresses, tuples), removes secrets (see :mod:`limen.events.scrub`) and
shortens very long strings (recorded in ``trimmed``), so an event is always safe to write.
"""

from __future__ import annotations

import ipaddress
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any

from limen.errors import BadParameter
from limen.events.codes import EventCode, EventType, code_for, lookup_code
from limen.events.scrub import is_secret_name, scrub

__all__ = [
    "MAX_VALUE_CHARS",
    "RESERVED_KEYS",
    "AuditEvent",
    "check_envelope",
    "format_time",
    "make_event",
    "parse_time",
]

MAX_VALUE_CHARS = 16_384
"""Longer string values are cut to this length (plus a marker) and listed in ``trimmed``."""
_TRIM_MARKER = "...[trimmed]"
_ENVELOPE_KEYS = ("code", "event", "success", "time", "uid", "cluster")
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
"""One encoder for every event (``json.dumps`` with options builds a new one per call)."""

RESERVED_KEYS = frozenset(
    {"event", "code", "time", "uid", "cluster", "user", "success", "scrubbed", "trimmed",
     "chain", "checkpoint"}
)
"""Top-level keys owned by the envelope (and by the log's hash chain, see
:mod:`limen.events.chain`); free fields may not use them, and :meth:`AuditEvent.from_dict`
drops them from a peer's event."""


def format_time(when: datetime) -> str:
    """``2026-11-24T10:00:00.123Z``: UTC, milliseconds, ``Z``. ``when`` must be aware."""
    if when.tzinfo is None:
        raise BadParameter("audit event times must be timezone-aware")
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Inverse of :func:`format_time` (accepts any ISO-8601 time with an offset)."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise BadParameter(f"invalid event time {text!r}") from None
    if when.tzinfo is None:
        raise BadParameter(f"event time {text!r} has no timezone")
    return when.astimezone(UTC)


def _truncate_ms(when: datetime) -> datetime:
    utc = when.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)


@dataclass(frozen=True)
class AuditEvent:
    """One audit record. Build with :func:`make_event`; ``fields`` are the free fields."""

    type: EventType
    code: str
    time: datetime
    uid: str
    cluster: str
    success: bool
    user: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    rendered: str | None = field(default=None, init=False, repr=False, compare=False)
    """The event's JSON when its builder wrote it already (:mod:`limen.events.template`);
    :meth:`to_json` returns it instead of encoding again. Not part of equality, and
    ``dataclasses.replace`` drops it (a changed event is encoded afresh)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": self.type.value,
            "code": self.code,
            "time": format_time(self.time),
            "uid": self.uid,
            "cluster": self.cluster,
        }
        if self.user is not None:
            out["user"] = self.user
        out["success"] = self.success
        out.update(self.fields)
        return out

    def to_json(self) -> str:
        """The event as one line of compact JSON, without the trailing newline."""
        if self.rendered is not None:
            return self.rendered
        return _ENCODER.encode(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEvent:
        """Parse an event read back from a log or received from another process (the inverse
        of :meth:`to_dict`). Free fields are scrubbed again: a peer's event is not trusted to
        be free of secrets."""
        row, when = check_envelope(data)
        user = data.get("user")
        return cls(
            type=row.type,
            code=row.code,
            time=when,
            uid=str(data["uid"]),
            cluster=str(data["cluster"]),
            success=row.success,
            user=None if user is None else str(user),
            fields=_rescrub(data),
        )

    @classmethod
    def from_json(cls, line: str) -> AuditEvent:
        try:
            data = json.loads(line)
        except ValueError as err:
            raise BadParameter(f"invalid audit event JSON: {err}") from None
        if not isinstance(data, dict):
            raise BadParameter("an audit event must be a JSON object")
        return cls.from_dict(data)


def check_envelope(data: Mapping[str, Any]) -> tuple[EventCode, datetime]:
    """The code row and time of an event's envelope, checked as :meth:`AuditEvent.from_dict`
    takes it (a known code of this type and outcome, a time, a uid and a cluster);
    :class:`BadParameter` otherwise. An agent's outbox checks its lines with it before it
    hands them to auth, which parses them in full."""
    for key in _ENVELOPE_KEYS:
        if key not in data:
            raise BadParameter(f"audit event lacks the {key!r} field")
    row = lookup_code(str(data["code"]))
    if row.type.value != data["event"]:
        raise BadParameter(f"code {row.code} is not a {data['event']!r} event")
    if data["success"] is not row.success:
        raise BadParameter(f"code {row.code} does not mean success={data['success']}")
    return row, parse_time(str(data["time"]))


def _rescrub(data: Mapping[str, Any]) -> dict[str, Any]:
    clean, scrubbed = scrub({k: v for k, v in data.items() if k not in RESERVED_KEYS})
    prior = data.get("scrubbed")
    scrubbed = [*(prior if isinstance(prior, list) else []), *scrubbed]
    if scrubbed:
        clean["scrubbed"] = scrubbed
    if isinstance(data.get("trimmed"), list):
        clean["trimmed"] = data["trimmed"]
    return clean


def make_event(
    event_type: str,
    /,
    *,
    success: bool | None = None,
    cluster: str = "",
    user: str | None = None,
    time: datetime | None = None,
    uid: str | None = None,
    **fields: Any,
) -> AuditEvent:
    """Build an event of ``event_type`` (``"user.login"`` or ``EventType.USER_LOGIN``).

    ``success=None`` picks the type's usual outcome (success, or the only code of failure-only
    types such as ``access.denied``). ``time`` defaults to now (inject it for tests and for
    events forwarded with their original time); ``uid`` to a fresh uuid4. Free fields are
    normalised to JSON data, scrubbed of secrets and bounded in size. Raises
    :class:`~limen.errors.BadParameter` for an unknown type or outcome, a reserved field name,
    or a value that cannot be represented as JSON.
    """
    row = code_for(event_type, success)
    if time is not None and time.tzinfo is None:
        raise BadParameter("audit event times must be timezone-aware")
    for key in fields:
        if key in RESERVED_KEYS:
            raise BadParameter(f"audit event field {key!r} is reserved")
    clean = _plain_fields(fields)
    if clean is None:
        trimmed: list[str] = []
        plain = {key: _normalize(value, key, trimmed) for key, value in fields.items()}
        clean, scrubbed = scrub(plain)
        if scrubbed:
            clean["scrubbed"] = scrubbed
        if trimmed:
            kept = [path for path in trimmed if not _under_any(path, scrubbed)]
            if kept:
                clean["trimmed"] = kept
    event = AuditEvent(
        type=row.type,
        code=row.code,
        time=_truncate_ms(time if time is not None else datetime.now(UTC)),
        uid=uid if uid is not None else str(uuid.uuid4()),
        cluster=cluster,
        success=row.success,
        user=user,
        fields=clean,
    )
    return event


def _plain_fields(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """The common case in one pass: every field name is not a secret's and every value is a
    short string without a PEM private key, a bool, an int, None, or a list of such strings
    (``cert.create``, ``user.login``, ``session.start``). Then :func:`_normalize` and
    :func:`~limen.events.scrub.scrub` would return the fields unchanged (lists copied), so
    they are not run. ``None``: anything else, for the general path."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if is_secret_name(key):
            return None
        kind = type(value)
        if kind is str:
            if not _plain_text(value):
                return None
        elif kind is list:
            for item in value:
                if type(item) is not str or not _plain_text(item):
                    return None
            value = list(value)
        elif kind is not bool and kind is not int and value is not None:
            return None
        out[key] = value
    return out


def _plain_text(value: str) -> bool:
    return len(value) <= MAX_VALUE_CHARS and "-----BEGIN" not in value


def _under_any(path: str, prefixes: list[str]) -> bool:
    return any(path == p or path.startswith((p + ".", p + "[")) for p in prefixes)


_Scalar = (str, int, float, bool, type(None))


def _normalize(value: Any, path: str, trimmed: list[str]) -> Any:
    """Turn ``value`` into plain JSON data, cutting long strings (paths go to ``trimmed``)."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS:
            trimmed.append(path)
            return value[:MAX_VALUE_CHARS] + _TRIM_MARKER
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise BadParameter(f"audit event field {path!r} is not a finite number")
    if isinstance(value, _Scalar):
        return value
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, uuid.UUID | PurePath | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadParameter(f"audit event field {path!r} has a non-string key {key!r}")
            out[key] = _normalize(item, f"{path}.{key}", trimmed)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_normalize(item, f"{path}[{i}]", trimmed) for i, item in enumerate(items)]
    raise BadParameter(
        f"audit event field {path!r} has a {type(value).__name__}, which is not JSON data"
    )
