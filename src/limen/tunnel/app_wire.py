"""The first frames of an app data connection, between the proxy and the app agent.

After the proxy and the app agent have authenticated each other with mutual TLS on the data
connection (:data:`limen.tunnel.protocol.KIND_APP`, ``MODE_TLS``), the proxy sends one
:class:`AppConnect`, the agent answers one :class:`AppAnswer` (each a 4-byte big-endian
length, then compact JSON), and when the answer is ``ok`` the connection carries one HTTP/1.1
exchange with the app, byte for byte (an upgraded one, a WebSocket, until either side ends)::

    proxy ─▶ {"app": "grafana", "user_cert": "-----BEGIN CERTIFICATE-----...",
              "client_addr": "10.0.0.7:53211", "session_id": "6f1c..."}
    agent ─▶ {"ok": true}   or   {"ok": false, "status": 403, "error": "..."}

``user_cert`` is the certificate the user presented to the proxy (PEM): the agent verifies it
again (TLS CA of its cluster, expiry, ``usage: app`` for this app) and decides with the roles
as they are now before it connects to the app. Pure code, called by the proxy's app route and
the app agent; malformed frames raise :class:`~limen.errors.BadParameter`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from typing import Any

from limen.errors import BadParameter

__all__ = ["MAX_FRAME", "AppAnswer", "AppConnect", "decode_answer", "decode_connect",
           "encode", "frame_length"]

MAX_FRAME = 64 * 1024
_HEADER = struct.Struct(">I")


@dataclass(frozen=True)
class AppConnect:
    app: str
    """Name of the app Resource the connection is for."""
    user_cert: str
    """The user's app certificate (PEM), verified again by the agent."""
    client_addr: str = ""
    session_id: str = ""


@dataclass(frozen=True)
class AppAnswer:
    ok: bool
    status: int = 200
    """The HTTP status the proxy answers with when not ``ok`` (403, 404, 502)."""
    error: str = ""


def encode(frame: AppConnect | AppAnswer) -> bytes:
    payload = json.dumps(asdict(frame), separators=(",", ":")).encode()
    if len(payload) > MAX_FRAME:
        raise BadParameter("app connection frame too large")
    return _HEADER.pack(len(payload)) + payload


def frame_length(header: bytes) -> int:
    """The payload length announced by the 4-byte ``header``."""
    if len(header) != _HEADER.size:
        raise BadParameter("truncated app connection frame")
    (size,) = _HEADER.unpack(header)
    if not 0 < size <= MAX_FRAME:
        raise BadParameter(f"app connection frame of {size} bytes")
    return int(size)


def _object(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("app connection frame is not JSON") from None
    if not isinstance(doc, dict):
        raise BadParameter("app connection frame must be a JSON object")
    return doc


def decode_connect(payload: bytes) -> AppConnect:
    doc = _object(payload)
    values: dict[str, str] = {}
    for name in ("app", "user_cert", "client_addr", "session_id"):
        value = doc.get(name, "")
        if not isinstance(value, str):
            raise BadParameter(f"app connection request field {name!r} must be a string")
        values[name] = value
    if not values["app"] or not values["user_cert"]:
        raise BadParameter("app connection request needs app and user_cert")
    return AppConnect(**values)


def decode_answer(payload: bytes) -> AppAnswer:
    doc = _object(payload)
    ok, status, error = doc.get("ok"), doc.get("status", 200), doc.get("error", "")
    if not isinstance(ok, bool) or not isinstance(status, int) or not isinstance(error, str):
        raise BadParameter("malformed app connection answer")
    return AppAnswer(ok, status, error[:2000])
