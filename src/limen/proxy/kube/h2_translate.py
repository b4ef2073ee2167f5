"""HTTP/2 requests as HTTP/1.1 requests to the kube agent, and the agent's HTTP/1.1 response
heads as HTTP/2 header lists: pure code (bytes in, bytes out, no I/O).

:func:`request_from_h2` reads one stream's header list (already checked by the ``h2``
library: pseudo-headers first, lower-case names, no connection-specific fields) strictly: a
method token, an origin-form ``:path``, ``:authority`` (or ``host``) becoming ``Host``, no
control characters in a value, one ``content-length``. :func:`request_head` writes the
HTTP/1.1 head: hop-by-hop fields dropped, split ``cookie`` fields joined, the body framed by
``Content-Length`` when the client declared one, else chunked. :func:`parse_response_head`
reads the agent's response head and how its body is framed; :func:`h2_response_headers`
turns it into ``:status`` and the end-to-end fields. Called by
:mod:`limen.proxy.kube.kube_h2` and :mod:`limen.proxy.kube.h1_upstream`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from limen.errors import BadParameter

__all__ = ["HOP_BY_HOP", "H2Request", "ResponseHead", "h2_response_headers",
           "parse_response_head", "request_from_h2", "request_head"]

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade", "proxy-authorization",
                        "proxy-authenticate"})
"""Fields that describe one hop, never forwarded."""
_DROPPED = HOP_BY_HOP | {"host", "content-length", "expect", "http2-settings"}
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9a-z]+$")
_METHOD = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_TARGET = re.compile(rb"^/[\x21-\x7e]*$")
_AUTHORITY = re.compile(rb"^[A-Za-z0-9.\-_~:\[\]%!$&'()*+,;=]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class H2Request:
    method: str
    path: str
    """Origin form: path and query."""
    authority: str
    headers: tuple[tuple[str, str], ...]
    """End-to-end fields, lower-case names, ``cookie`` joined."""
    content_length: int | None


def request_from_h2(headers: Iterable[tuple[bytes, bytes]]) -> H2Request:
    """One stream's request (see the module); :class:`BadParameter` for anything else."""
    pseudo: dict[bytes, bytes] = {}
    fields: list[tuple[str, str]] = []
    cookies: list[str] = []
    host = b""
    lengths: set[bytes] = set()
    for name, value in headers:
        if _BAD_VALUE.search(value):
            raise BadParameter(f"control character in header field {name[:40]!r}")
        if name.startswith(b":"):
            pseudo[name] = value
            continue
        if not _TOKEN.match(name):
            raise BadParameter(f"malformed header field name {name[:40]!r}")
        lower = name.decode("ascii")
        text = value.strip(b" \t").decode("latin-1")
        if lower == "host":
            host = value.strip()
        elif lower == "content-length":
            lengths.add(value.strip())
        elif lower == "cookie":
            cookies.append(text)
        elif lower not in _DROPPED:
            fields.append((lower, text))
    method, path = pseudo.get(b":method", b""), pseudo.get(b":path", b"")
    if not _METHOD.match(method):
        raise BadParameter("a request needs a :method")
    if method == b"CONNECT":
        raise BadParameter("CONNECT is not served over HTTP/2 (upgrades go over HTTP/1.1)")
    if not _TARGET.match(path):
        raise BadParameter("the :path must be a path (origin form)")
    authority = pseudo.get(b":authority", b"") or host
    if not _AUTHORITY.match(authority):
        raise BadParameter("a request needs an :authority (or host)")
    if cookies:
        fields.append(("cookie", "; ".join(cookies)))
    return H2Request(method.decode("ascii"), path.decode("ascii"), authority.decode("ascii"),
                     tuple(fields), _content_length(lengths))


def _content_length(values: set[bytes]) -> int | None:
    if not values:
        return None
    if len(values) != 1:
        raise BadParameter("conflicting content-length fields")
    value = next(iter(values))
    if not value.isdigit() or len(value) > 15:
        raise BadParameter("invalid content-length")
    return int(value)


def request_head(request: H2Request, *, has_body: bool) -> tuple[bytes, bool]:
    """The HTTP/1.1 request head for ``request`` and whether its body goes chunked
    (``has_body``: the client did not end the stream with its headers)."""
    lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {request.authority}"]
    lines += [f"{name}: {value}" for name, value in request.headers]
    chunked = False
    if request.content_length is not None:
        lines.append(f"Content-Length: {request.content_length}")
    elif has_body:
        lines.append("Transfer-Encoding: chunked")
        chunked = True
    elif request.method in _WITH_BODY:
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), chunked


@dataclass(frozen=True)
class ResponseHead:
    status: int
    headers: tuple[tuple[str, str], ...]
    chunked: bool
    length: int | None
    """Content-Length; None with chunked, without a body, or up to the connection's end."""
    has_body: bool
    keep_alive: bool


def parse_response_head(raw: bytes, *, method: str) -> ResponseHead:
    """The agent's response head (``raw`` ends with the blank line) to a ``method``
    request; :class:`BadParameter` when it is not HTTP/1.x or its framing is ambiguous."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].isdigit() \
            or len(parts[1]) != 3:
        raise BadParameter(f"malformed status line {lines[0][:80]!r}")
    status = int(parts[1])
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name.lower().encode("latin-1")):
            raise BadParameter(f"malformed response header field {line[:40]!r}")
        headers.append((name.lower(), value.strip(" \t")))
    tokens = {t.strip().lower() for k, v in headers if k == "connection"
              for t in v.split(",") if t.strip()}
    encodings = {t.strip().lower() for k, v in headers if k == "transfer-encoding"
                 for t in v.split(",") if t.strip()}
    lengths = {v for k, v in headers if k == "content-length"}
    has_body = method != "HEAD" and status >= 200 and status not in (204, 304)
    if encodings and (encodings != {"chunked"} or lengths):
        raise BadParameter("ambiguous response framing")
    if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
        raise BadParameter("invalid response content-length")
    chunked = has_body and bool(encodings)
    length = int(next(iter(lengths))) if has_body and lengths and not chunked else None
    keep_alive = parts[0] == "HTTP/1.1" and "close" not in tokens and \
        (not has_body or chunked or length is not None)
    listed = tokens | HOP_BY_HOP
    kept = tuple((k, v) for k, v in headers if k not in listed and
                 not (k == "content-length" and length is None and has_body))
    return ResponseHead(status, kept, chunked, length, has_body, keep_alive)


def h2_response_headers(head: ResponseHead) -> list[tuple[str, str]]:
    """The HTTP/2 header list of ``head``: ``:status`` and the end-to-end fields."""
    return [(":status", str(head.status)), *head.headers]
