"""The kube front's HTTP/2 ↔ HTTP/1.1 translation (``limen.proxy.kube.h2_translate``), pure:
a stream's header list as an HTTP/1.1 request head (``:authority`` as ``Host``, hop-by-hop
fields dropped, ``cookie`` joined, the body's framing) and what is refused (no method or
authority, a path not in origin form, CONNECT, control characters, conflicting lengths); the
agent's response head as ``:status`` and end-to-end fields, and its body's framing.
"""

from __future__ import annotations

import pytest

from limen.errors import BadParameter
from limen.proxy.kube.h2_translate import (
    h2_response_headers,
    parse_response_head,
    request_from_h2,
    request_head,
)


def _request(*extra: tuple[bytes, bytes], path: bytes = b"/api/v1/pods?watch=1",
             method: bytes = b"GET") -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"https"), (b":authority", b"proxy:3026"),
            (b":path", path), *extra]


def test_a_request_head() -> None:
    request = request_from_h2(_request(
        (b"accept", b"application/json"), (b"te", b"trailers"), (b"cookie", b"a=1"),
        (b"cookie", b"b=2"), (b"host", b"other"), (b"impersonate-user", b"admin")))
    head, chunked = request_head(request, has_body=False)
    assert not chunked
    assert head == (b"GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: proxy:3026\r\n"
                    b"accept: application/json\r\nimpersonate-user: admin\r\n"
                    b"cookie: a=1; b=2\r\n\r\n")  # the agent strips Impersonate-* itself


def test_the_body_framing() -> None:
    sized = request_from_h2(_request((b"content-length", b"12"), method=b"POST"))
    assert request_head(sized, has_body=True) == (
        b"POST /api/v1/pods?watch=1 HTTP/1.1\r\nHost: proxy:3026\r\nContent-Length: 12\r\n\r\n",
        False)
    streamed = request_from_h2(_request(method=b"PATCH"))
    head, chunked = request_head(streamed, has_body=True)
    assert chunked
    assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    head, chunked = request_head(streamed, has_body=False)
    assert (chunked, head.endswith(b"Content-Length: 0\r\n\r\n")) == (False, True)


@pytest.mark.parametrize(("headers", "message"), [
    ([(b":method", b"GET"), (b":path", b"/api")], "authority"),
    (_request(path=b"https://elsewhere/api"), "origin form"),
    (_request(path=b"*"), "origin form"),
    (_request(method=b"CONNECT"), "CONNECT"),
    (_request((b"x-a", b"one\r\nInjected: yes")), "control character"),
    (_request((b"content-length", b"1"), (b"content-length", b"2")), "conflicting"),
    (_request((b"content-length", b"-1")), "invalid content-length"),
    (_request((b"X-Upper", b"v")), "malformed header field name"),
])
def test_refused_requests(headers: list[tuple[bytes, bytes]], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        request_from_h2(headers)


def test_a_response_head_with_its_framing() -> None:
    head = parse_response_head(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
        b"Audit-Id: 42", method="GET")
    assert (head.chunked, head.length, head.has_body, head.keep_alive) == \
        (True, None, True, True)
    assert h2_response_headers(head) == [(":status", "200"),
                                         ("content-type", "application/json"),
                                         ("audit-id", "42")]
    sized = parse_response_head(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n"
                                b"Connection: close", method="GET")
    assert (sized.length, sized.keep_alive) == (10, False)
    assert h2_response_headers(sized) == [(":status", "403"), ("content-length", "10")]
    to_the_end = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain",
                                     method="GET")
    assert (to_the_end.length, to_the_end.chunked, to_the_end.keep_alive) == \
        (None, False, False)
    head_only = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 99", method="HEAD")
    assert (head_only.has_body, head_only.keep_alive) == (False, True)
    assert ("content-length", "99") in head_only.headers


@pytest.mark.parametrize("raw", [
    b"HTTP/2 200 OK",
    b"HTTP/1.1 2000 OK",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4",
    b"HTTP/1.1 200 OK\r\nbad header",
])
def test_refused_response_heads(raw: bytes) -> None:
    with pytest.raises(BadParameter):
        parse_response_head(raw, method="GET")
