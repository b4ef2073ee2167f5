"""HTTP/1.1 framing the kube agent reads from the proxy and writes back: pure code (bytes in,
messages out, no I/O).

:func:`parse_request_head` reads one request head (request line and header fields, without
the final blank line) strictly: a method token, an origin-form target, ``HTTP/1.1`` or
``HTTP/1.0``, header names as tokens, no obsolete line folding, and the body framing
unambiguous — ``Transfer-Encoding`` only ``chunked`` and never with ``Content-Length``, one
``Content-Length`` value — so the agent and the API server can never disagree about where a
request ends (request smuggling). :func:`response_head` and :func:`chunk` write responses.
Called by :mod:`limen.agents.kube.forwarder` and :mod:`limen.agents.kube.kube_service`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from limen.errors import BadParameter

__all__ = ["HOP_BY_HOP", "LAST_CHUNK", "MAX_HEAD", "RequestHead", "chunk", "parse_request_head",
           "response_head"]

MAX_HEAD = 64 * 1024
"""The longest request head accepted (request line and header fields)."""
LAST_CHUNK = b"0\r\n\r\n"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade", "proxy-authorization",
                        "proxy-authenticate"})
"""Header fields that describe one hop, never forwarded as they are."""

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_TARGET = re.compile(r"^/[\x21-\x7e]*$")
_VERSIONS = ("HTTP/1.1", "HTTP/1.0")


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    """Origin form: path and query (``/api/v1/pods?watch=true``)."""
    version: str
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        """The first value of field ``name`` (case-insensitive)."""
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)

    def values(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for k, v in self.headers if k.lower() == lower]

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every ``name`` field, lower-cased."""
        return {t.strip().lower() for v in self.values(name) for t in v.split(",") if t.strip()}

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    @property
    def chunked(self) -> bool:
        return "chunked" in self.tokens("transfer-encoding")

    @property
    def content_length(self) -> int:
        value = self.get("content-length")
        return int(value) if value is not None else 0

    @property
    def keep_alive(self) -> bool:
        connection = self.tokens("connection")
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection

    @property
    def is_upgrade(self) -> bool:
        return "upgrade" in self.tokens("connection") and self.get("upgrade") is not None


def parse_request_head(data: bytes) -> RequestHead:
    """One request head (see the module); :class:`BadParameter` for anything else."""
    if len(data) > MAX_HEAD:
        raise BadParameter("request head too large")
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise BadParameter("request head is not text") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or parts[2] not in _VERSIONS:
        raise BadParameter(f"malformed request line {lines[0][:80]!r}")
    if not _TARGET.match(parts[1]):
        raise BadParameter("the request target must be a path (origin form)")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise BadParameter("obsolete header line folding is refused")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise BadParameter(f"malformed header field {line[:40]!r}")
        value = value.strip(" \t")
        if any((ord(c) < 0x20 and c != "\t") or c == "\x7f" for c in value):
            raise BadParameter(f"control character in header field {name!r}")
        headers.append((name, value))
    head = RequestHead(parts[0], parts[1], parts[2], tuple(headers))
    _check_framing(head)
    return head


def _check_framing(head: RequestHead) -> None:
    encodings = head.tokens("transfer-encoding")
    lengths = head.values("content-length")
    if encodings and encodings != {"chunked"}:
        raise BadParameter("only Transfer-Encoding: chunked is accepted")
    if encodings and lengths:
        raise BadParameter("Content-Length and Transfer-Encoding together are refused")
    if lengths and (len(set(lengths)) != 1 or not lengths[0].isdigit()
                    or len(lengths[0]) > 15):
        raise BadParameter("invalid Content-Length")


def response_head(status: int, reason: str, headers: Iterable[tuple[str, str]],
                  version: str = "HTTP/1.1") -> bytes:
    lines = [f"{version} {status} {reason}"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise BadParameter(f"header field {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never the last one: empty data gives nothing)."""
    if not data:
        return b""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"
