"""``EventTemplate``: many events of one type and outcome that share their envelope and most of
their fields, each built and serialised for a fraction of :func:`~limen.events.make_event`'s
cost.

Used by the db agent (:class:`limen.agents.db.session.DBSession`): every query of a session is
a ``db.session.query`` event whose cluster, user and eleven session fields never change, and at
thousands of queries a second building and encoding those again per event was most of the
agent's CPU. The template checks the fixed part once (through :func:`make_event`, so the same
rules apply: known type and outcome, no reserved or secret field names, plain values) and keeps
it as JSON; :meth:`EventTemplate.make` checks only the fields it is given, stamps the time and a
uuid4, and returns an ordinary :class:`~limen.events.AuditEvent` with its JSON already written
(``rendered``), byte for byte what :meth:`AuditEvent.to_json` would encode::

    {"event":..,"code":..,"time":"<now>","uid":"<uuid4>","cluster":..,"user":..,"success":..,
     <fixed fields as JSON, encoded once>,<this event's fields>}

Fields that are not plain (a secret's name, a long or PEM-bearing string, a value to normalise)
and a fixed part that is not plain take :func:`make_event`'s general path, so scrubbing and
trimming are never skipped.
"""

from __future__ import annotations

import functools
import os
import time
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii as _encode_text
from typing import Any

from limen.errors import BadParameter
from limen.events.codes import code_for
from limen.events.event import (
    _ENCODER,
    RESERVED_KEYS,
    AuditEvent,
    _plain_fields,
    make_event,
)

__all__ = ["EventTemplate", "UuidPool"]

_POOL_SIZE = 256
_MILLIS = tuple(timedelta(milliseconds=n) for n in range(1000))
_MILLI_TEXTS = tuple(f".{n:03d}Z" for n in range(1000))


class UuidPool:
    """Random (version 4) UUID strings drawn from the OS 256 at a time: one ``getrandom``
    per 256 events instead of one per event."""

    def __init__(self) -> None:
        self._ids: list[str] = []

    def take(self) -> str:
        try:
            return self._ids.pop()
        except IndexError:
            self._ids = _draw(_POOL_SIZE)
            return self._ids.pop()


def _draw(count: int) -> list[str]:
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])  # variant RFC 4122
    h = raw.hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-"
            f"{h[i + 20:i + 32]}" for i in range(0, 32 * count, 32)]


_UIDS = UuidPool()
_new_event = functools.partial(object.__new__, AuditEvent)


class EventTemplate:
    """Events of ``event_type`` with outcome ``success`` (None: the type's usual one) for
    ``cluster`` and ``user``, all carrying ``fields`` first. Raises like :func:`make_event`
    for an unknown type or outcome or a reserved field name. Use from one thread (the event
    loop)."""

    def __init__(self, event_type: str, /, *, success: bool | None = None, cluster: str = "",
                 user: str | None = None, **fields: Any) -> None:
        make_event(event_type, success=success, cluster=cluster, user=user, **fields)
        self._args = (event_type, success, cluster, user)
        self._fields = dict(fields)
        row = code_for(event_type, success)
        self._row = row
        fixed = _plain_fields(fields)
        self._general = fixed is None
        """The fixed fields need scrubbing or normalising: every event takes make_event."""
        self._fixed = fixed or {}
        self._head = (f'{{"event":{_ENCODER.encode(row.type.value)},"code":'
                      f'{_ENCODER.encode(row.code)},"time":"')
        envelope = {"cluster": cluster, **({"user": user} if user is not None else {}),
                    "success": row.success, **self._fixed}
        self._tail = '",' + _ENCODER.encode(envelope)[1:-1]
        self._keys: dict[str, str] = {}
        self._second = -1
        self._second_start = datetime.fromtimestamp(0, UTC)
        self._second_text = ""

    def make(self, **fields: Any) -> AuditEvent:
        """An event of this template with ``fields`` after the fixed ones, stamped now."""
        for key in fields:
            if key in self._fields:
                raise BadParameter(f"audit event field {key!r} is given twice")
            if key in RESERVED_KEYS:
                raise BadParameter(f"audit event field {key!r} is reserved")
        plain = None if self._general else _plain_fields(fields)
        if plain is None:
            event_type, success, cluster, user = self._args
            return make_event(event_type, success=success, cluster=cluster, user=user,
                              **self._fields, **fields)
        second, milli = divmod(time.time_ns() // 1_000_000, 1000)
        if second != self._second:
            self._second = second
            self._second_start = datetime.fromtimestamp(second, UTC)
            self._second_text = self._second_start.replace(tzinfo=None).isoformat()
        uid = _UIDS.take()
        parts = [self._head, self._second_text, _MILLI_TEXTS[milli], '","uid":"', uid,
                 self._tail]
        for key, value in plain.items():
            parts.append(self._keys.get(key) or self._key(key))
            parts.append(_encode_text(value) if type(value) is str else _ENCODER.encode(value))
        parts.append("}")
        row = self._row
        # the frozen dataclass's __init__ sets each field through object.__setattr__ (a
        # microsecond per event); every field is set here at once, as it would set them
        event = _new_event()
        event.__dict__.update(type=row.type, code=row.code,
                              time=self._second_start + _MILLIS[milli], uid=uid,
                              cluster=self._args[2], success=row.success, user=self._args[3],
                              fields={**self._fixed, **plain}, rendered="".join(parts))
        return event

    def _key(self, key: str) -> str:
        text = self._keys[key] = f",{_encode_text(key)}:"
        return text
