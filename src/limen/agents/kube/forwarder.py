"""One decided Kubernetes request, forwarded to the API server as the user, and its response
streamed back to the proxy.

::

    client (via proxy) ── head + body ──▶ forwarder ── aiohttp ──▶ API server
      ◀── status, headers, body as it comes (chunked re-framed; watch and logs -f stream) ──

Headers: every ``Authorization`` and ``Impersonate-*`` field the client sent is dropped, and
so are the hop-by-hop fields (``Connection`` and those it lists); the agent adds its own
credential (``Authorization: Bearer``, or its client certificate in TLS) and
``Impersonate-User`` / ``Impersonate-Group`` from the decision. The request body is passed on
as it arrives (``Content-Length`` or chunked). A response with a ``Content-Length`` keeps it;
any other body is sent back chunked, each piece as soon as the API server sends it.

Upgrades (``Connection: Upgrade``: exec, attach and port-forward over WebSocket or SPDY) go
over a connection of their own to the API server: the rewritten head is sent, the API
server's answer is passed back as it is, and after a ``101 Switching Protocols`` (``started``
is told the protocol first) the bytes flow both ways untouched, and counted, until either side
closes. Called by :mod:`limen.agents.kube.kube_service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from limen.agents.kube.http1 import HOP_BY_HOP, LAST_CHUNK, RequestHead, chunk, response_head
from limen.agents.kube.session import Impersonation
from limen.agents.kube.upstream import Upstream
from limen.errors import BadParameter, ConnectionProblem
from limen.net.streams import both_ways, close_writer

__all__ = ["MAX_BODY", "Upgraded", "forward", "forward_upgrade", "upstream_headers"]

log = logging.getLogger(__name__)

MAX_BODY = 64 << 20
"""The largest request body with a Content-Length the agent reads (objects are far smaller)."""
_CHUNK = 256 * 1024
_DROPPED = frozenset({"host", "authorization", "content-length", "expect"})
_UPGRADE_KEPT = frozenset({"connection", "upgrade"})
_NO_BODY = (204, 304)


def upstream_headers(head: RequestHead, upstream: Upstream, who: Impersonation, *,
                     upgrade: bool = False) -> CIMultiDict[str]:
    """The header fields sent to the API server (see the module)."""
    listed = head.tokens("connection")
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in head.headers:
        lower = name.lower()
        if lower.startswith("impersonate-") or lower in _DROPPED:
            continue
        if (lower in HOP_BY_HOP or lower in listed) and not (upgrade and lower in _UPGRADE_KEPT):
            continue
        out.add(name, value)
    token = upstream.token()
    if token:
        out["Authorization"] = f"Bearer {token}"
    out["Impersonate-User"] = who.user
    for group in who.groups:
        out.add("Impersonate-Group", group)
    return out


async def _request_body(head: RequestHead, reader: asyncio.StreamReader
                        ) -> bytes | AsyncIterator[bytes] | None:
    if head.chunked:
        return _chunks(reader)
    length = head.content_length
    if length > MAX_BODY:
        raise BadParameter(f"request body of {length} bytes (at most {MAX_BODY})")
    return await reader.readexactly(length) if length else None


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Decode a chunked body from ``reader`` (trailers are read and dropped)."""
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadParameter("malformed chunk size") from None
        if size < 0 or len(size_text) > 16:
            raise BadParameter("malformed chunk size")
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return
        data = await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadParameter("malformed chunk")
        yield data


async def forward(head: RequestHead, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter, upstream: Upstream, who: Impersonation,
                  http: aiohttp.ClientSession, closed: asyncio.Future[None]) -> int:
    """Forward one request and stream its response; returns the API server's status.
    ``closed`` completes when the client's connection is lost (one per connection: a
    streamed body stops there). ConnectionProblem when the API server cannot be reached
    (nothing was sent back yet)."""
    body = await _request_body(head, reader)
    url = URL(upstream.server + head.target, encoded=True)
    try:
        response = await http.request(
            head.method, url, headers=upstream_headers(head, upstream, who), data=body,
            ssl=upstream.ssl, server_hostname=upstream.server_name, allow_redirects=False,
            auto_decompress=False)
    except (aiohttp.ClientError, OSError, ssl.SSLError, TimeoutError) as err:
        raise ConnectionProblem(f"cannot reach the Kubernetes API server: {err}") from None
    async with response:
        await _stream_response(head, response, writer, closed)
        return response.status


async def _stream_response(head: RequestHead, response: aiohttp.ClientResponse,
                           writer: asyncio.StreamWriter, closed: asyncio.Future[None]) -> None:
    length = response.headers.get("Content-Length")
    has_body = head.method != "HEAD" and response.status not in _NO_BODY \
        and response.status >= 200
    chunked = has_body and length is None
    headers = [(k, v) for k, v in response.headers.items()
               if k.lower() not in HOP_BY_HOP and not (chunked and k.lower() == "content-length")]
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    writer.write(response_head(response.status, response.reason or "", headers))
    await writer.drain()
    if not has_body:
        return
    async for data in _body(response, closed):
        writer.write(chunk(data) if chunked else data)
        await writer.drain()
    if chunked:
        writer.write(LAST_CHUNK)
        await writer.drain()


async def _body(response: aiohttp.ClientResponse, closed: asyncio.Future[None]
                ) -> AsyncIterator[bytes]:
    """The response body as it arrives, ending early when the client's side closes (a watch
    the user stopped: the API server's connection is released, not left waiting)."""
    while True:
        read: asyncio.Future[bytes] = asyncio.ensure_future(response.content.readany())
        waiting: set[asyncio.Future[object]] = {read, closed}  # type: ignore[arg-type]
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if read not in done:
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await read
            response.close()
            raise ConnectionResetError("the client closed the connection")
        data = read.result()
        if not data:
            return
        yield data


Tap = Callable[[bytes], None]
"""Gets a copy of the bytes relayed in one direction (the exec recording)."""


@dataclass
class Upgraded:
    """How an upgrade request ended: the API server's status (101: the streams were relayed
    until closed), the protocol it chose (``Sec-WebSocket-Protocol``, or the ``Upgrade``
    value) and the bytes relayed each way after the 101."""

    status: int = 0
    protocol: str = ""
    bytes_in: int = 0
    """From the client to the API server."""
    bytes_out: int = 0
    """From the API server to the client."""


async def forward_upgrade(head: RequestHead, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter, upstream: Upstream,
                          who: Impersonation,
                          taps: Callable[[str], tuple[Tap, Tap] | None] | None = None,
                          started: Callable[[str], Awaitable[None]] | None = None,
                          ) -> Upgraded:
    """An upgrade request on a connection of its own (see :class:`Upgraded`). After a 101,
    ``started(protocol)`` runs before any byte is relayed and ``taps(protocol)`` may give the
    (client to server, server to client) taps for the relay. The client's connection ends
    afterwards; ``result`` holds what is known when it fails half-way."""
    result = Upgraded()
    if head.chunked or head.content_length:
        raise BadParameter("an upgrade request carries no body")
    host, _, port = upstream.host_header.rpartition(":")
    host = host or upstream.host_header
    try:
        async with asyncio.timeout(10):
            up_reader, up_writer = await asyncio.open_connection(
                host.strip("[]"), int(port or 443), ssl=upstream.ssl,
                server_hostname=upstream.server_name or host.strip("[]"), limit=_CHUNK)
    except (OSError, ssl.SSLError, TimeoutError, ValueError) as err:
        raise ConnectionProblem(f"cannot reach the Kubernetes API server: {err}") from None
    try:
        headers = upstream_headers(head, upstream, who, upgrade=True)
        lines = [f"{head.method} {upstream.path_prefix}{head.target} HTTP/1.1",
                 f"Host: {upstream.host_header}", *(f"{k}: {v}" for k, v in headers.items())]
        up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await up_writer.drain()
        answer = await up_reader.readuntil(b"\r\n\r\n")
        status_line = answer.split(b"\r\n", 1)[0].split(b" ")
        result.status = int(status_line[1]) if len(status_line) > 1 and \
            status_line[1].isdigit() else 502
        result.protocol = _header(answer, b"sec-websocket-protocol") or \
            _header(answer, b"upgrade")
        if result.status == 101 and started is not None:
            await started(result.protocol)
        writer.write(answer)
        await writer.drain()
        if result.status == 101:
            chosen = taps(result.protocol) if taps is not None else None
            counted = _Counted()
            try:
                await both_ways(
                    _pump(reader, up_writer, chosen[0] if chosen else None, counted.inward),
                    _pump(up_reader, writer, chosen[1] if chosen else None, counted.outward),
                    grace=5.0)
            finally:
                result.bytes_in, result.bytes_out = counted.bytes_in, counted.bytes_out
        else:
            length = _content_length(answer)
            if length:
                writer.write(await up_reader.readexactly(min(length, MAX_BODY)))
                await writer.drain()
        return result
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
        raise ConnectionProblem(f"the Kubernetes API server's answer broke off: {err}") \
            from None
    finally:
        await close_writer(up_writer)


@dataclass
class _Counted:
    bytes_in: int = 0
    bytes_out: int = 0

    def inward(self, size: int) -> None:
        self.bytes_in += size

    def outward(self, size: int) -> None:
        self.bytes_out += size


def _content_length(head: bytes) -> int:
    value = _header(head, b"content-length")
    return int(value) if value.isdigit() else 0


def _header(head: bytes, name: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return ""


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                tap: Tap | None, count: Callable[[int], None]) -> None:
    """Copy until EOF (then half-close, or close), giving ``tap`` a copy of each piece and
    ``count`` its size; a failing tap is dropped, the copy goes on."""
    try:
        while data := await reader.read(_CHUNK):
            if tap is not None:
                try:
                    tap(data)
                except Exception as err:
                    log.error("kube agent: session recording tap failed: %s", err)
                    tap = None
            count(len(data))
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
    except (OSError, ssl.SSLError, RuntimeError):
        writer.close()
