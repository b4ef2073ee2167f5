"""The first frame of a database data connection, from the proxy to the db agent.

After the proxy and the db agent have authenticated each other with mutual TLS on the data
connection (``limen.tunnel`` ``MODE_TLS``), the proxy sends one :class:`SessionRequest` (a
4-byte big-endian length, then compact JSON) and the database protocol follows:

* ``op: "connect"`` — log in to database ``service`` as ``db_user`` (to ``db_name``) for the
  user whose database certificate is ``user_cert`` (PEM; the agent verifies it again against
  the user CA and re-checks RBAC) and serve the session. ``params``: the client's PostgreSQL
  startup parameters other than user/database, or for MySQL the negotiated ``capabilities``,
  ``charset``, ``max_packet`` and the sequence number ``seq`` the client expects next.
* ``op: "cancel"`` — PostgreSQL only: send a CancelRequest with the upstream key
  ``cancel_pid``/``cancel_secret`` (the proxy keeps the map from the keys it gave clients).

Pure code, called by the proxy's database fronts and the db agent. Malformed frames raise
:class:`~limen.errors.BadParameter`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from limen.errors import BadParameter

__all__ = ["MAX_REQUEST", "PROTOCOLS", "SessionRequest", "decode_request", "encode_request",
           "request_length"]

MAX_REQUEST = 64 * 1024
PROTOCOLS = ("postgres", "mysql")
_OPS = ("connect", "cancel")
_HEADER = struct.Struct(">I")
_TEXT_FIELDS = ("op", "protocol", "service", "db_user", "db_name", "user_cert", "session_id",
                "client_addr")


@dataclass(frozen=True)
class SessionRequest:
    op: str
    protocol: str
    service: str
    user_cert: str
    db_user: str = ""
    db_name: str = ""
    session_id: str = ""
    client_addr: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    cancel_pid: int = 0
    cancel_secret: int = 0


def encode_request(request: SessionRequest) -> bytes:
    doc = {k: v for k, v in asdict(request).items() if v not in ("", 0, {})}
    doc["op"], doc["protocol"] = request.op, request.protocol
    payload = json.dumps(doc, separators=(",", ":")).encode()
    if len(payload) > MAX_REQUEST:
        raise BadParameter("database session request too large")
    return _HEADER.pack(len(payload)) + payload


def request_length(header: bytes) -> int:
    """The payload length announced by the 4-byte header; BadParameter when out of range."""
    if len(header) != _HEADER.size:
        raise BadParameter("truncated database session request")
    (size,) = _HEADER.unpack(header)
    if not 2 <= size <= MAX_REQUEST:
        raise BadParameter(f"database session request of {size} bytes")
    return int(size)


def decode_request(payload: bytes) -> SessionRequest:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("malformed database session request") from None
    if not isinstance(doc, dict):
        raise BadParameter("malformed database session request")
    text = {k: _text(doc, k) for k in _TEXT_FIELDS}
    if text["op"] not in _OPS:
        raise BadParameter(f"unknown database session operation {text['op']!r}")
    if text["protocol"] not in PROTOCOLS:
        raise BadParameter(f"unknown database protocol {text['protocol']!r}")
    params = doc.get("params", {})
    if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
        raise BadParameter("database session request params must map strings to strings")
    return SessionRequest(params=params, cancel_pid=_uint32(doc, "cancel_pid"),
                          cancel_secret=_uint32(doc, "cancel_secret"), **text)


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str) or "\x00" in value:
        raise BadParameter(f"database session request field {key!r} must be a string")
    return value


def _uint32(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
        raise BadParameter(f"database session request field {key!r} must be a 32-bit integer")
    return value
