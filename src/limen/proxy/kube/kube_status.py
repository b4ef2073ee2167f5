"""The Kubernetes ``Status`` answers the kube front gives when it refuses a request itself
(what kubectl prints after ``Error from server``), and the typed refusal that carries one.

Used by :mod:`limen.proxy.kube.kube_front` (HTTP/1.1: a whole response closing the
connection) and :mod:`limen.proxy.kube.kube_h2` (HTTP/2: the body of one stream's answer).
"""

from __future__ import annotations

import json

from limen.errors import LimenError

__all__ = ["REASONS", "StreamRefused", "http1_status", "status_body"]

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden",
           413: "RequestEntityTooLarge", 502: "BadGateway", 503: "ServiceUnavailable"}
"""The Status ``reason`` of each code the front answers with."""
_PHRASES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            413: "Payload Too Large", 502: "Bad Gateway", 503: "Service Unavailable"}


def status_body(code: int, message: str) -> bytes:
    """The JSON ``Status`` object for ``code`` (one of :data:`REASONS`)."""
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": message, "reason": REASONS[code],
                       "code": code}).encode()


def http1_status(code: int, message: str) -> bytes:
    """A whole HTTP/1.1 response carrying the Status, closing the connection."""
    body = status_body(code, message)
    return (f"HTTP/1.1 {code} {_PHRASES[code]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class StreamRefused(LimenError):
    """A request the front answers itself with a ``Status`` of ``status``; ``audited``: its
    audit event is already written (by the router), else the front writes it."""

    def __init__(self, status: int, message: str, *, audited: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.audited = audited
