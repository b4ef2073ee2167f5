"""One HTTP exchange between a client on the proxy's web port and an app, over an app agent's
data connection (the agent relays the bytes to the app untouched).

::

    client ─▶ aiohttp (the proxy's web listener) ─▶ request head written here:
        the client's fields, minus Host, hop-by-hop fields, every Limen-* field, X-Forwarded-*
        and Forwarded, and Limen's app session cookie; plus Host (the app's), X-Forwarded-For
        (the client's address only), -Proto (https), -Host (the public address the client
        used), Limen-Jwt-Assertion, the Resource's rewrite.headers; Connection: close
      ─▶ body streamed as it arrives (Content-Length kept, otherwise chunked)
    app ─▶ status and header fields read here ─▶ body streamed back (Content-Length,
        chunked or until the app closes), never held whole

An upgrade (``Connection: Upgrade``, a WebSocket) the app accepts with ``101`` hands the
client's connection over: the bytes flow both ways untouched until either side closes. The
:class:`Relayed` result counts the bytes each way for the audit. Called by
:mod:`limen.proxy.app.app_front`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from limen.api.app_spec import AppSpec
from limen.errors import BadParameter, ConnectionProblem
from limen.net.streams import both_ways

__all__ = ["APP_COOKIE", "JWT_HEADER", "Relayed", "relay"]

JWT_HEADER = "Limen-Jwt-Assertion"
APP_COOKIE = "limen_app_session"
"""The name of Limen's app session cookie (never passed on to the app)."""
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade", "proxy-authorization",
                         "proxy-authenticate"})
_DROPPED = frozenset({"host", "content-length", "expect", "forwarded"})
_CHUNK = 256 * 1024
_MAX_HEAD = 64 * 1024


@dataclass
class Relayed:
    status: int = 0
    bytes_in: int = 0
    """From the client to the app (the request body, or upgraded bytes)."""
    bytes_out: int = 0
    """From the app to the client (the response body, or upgraded bytes)."""
    upgraded: bool = False


def _tokens(request: web.Request, name: str) -> set[str]:
    return {t.strip().lower() for v in request.headers.getall(name, ())
            for t in v.split(",") if t.strip()}


def _is_upgrade(request: web.Request) -> bool:
    return "upgrade" in _tokens(request, "Connection") and "Upgrade" in request.headers


def _cookies_without_ours(value: str) -> str:
    kept = [c.strip() for c in value.split(";")
            if c.strip() and c.strip().split("=", 1)[0].strip() != APP_COOKIE]
    return "; ".join(kept)


def request_head(request: web.Request, spec: AppSpec, token: str, client_ip: str) -> bytes:
    """The head sent to the app (see the module)."""
    upgrade = _is_upgrade(request)
    listed = _tokens(request, "Connection")
    rewritten = {name.lower() for name, _ in spec.headers}
    fields: list[tuple[str, str]] = [("Host", spec.host_header)]
    for name, value in request.headers.items():
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in listed or lower in _DROPPED or lower in rewritten \
                or lower.startswith(("limen-", "x-forwarded-")):
            continue
        if lower == "cookie":
            value = _cookies_without_ours(value)
            if not value:
                continue
        fields.append((name, value))
    fields += [("X-Forwarded-For", client_ip), ("X-Forwarded-Proto", "https"),
               ("X-Forwarded-Host", request.host), (JWT_HEADER, token), *spec.headers]
    if upgrade:
        fields += [("Connection", "Upgrade"), ("Upgrade", request.headers["Upgrade"])]
    else:
        fields.append(("Connection", "close"))
        if request.content_length is not None:
            fields.append(("Content-Length", str(request.content_length)))
        elif request.body_exists:
            fields.append(("Transfer-Encoding", "chunked"))
    if not request.raw_path.startswith("/") or request.raw_path.startswith("//"):
        raise BadParameter("the request target must be a path (origin form)")
    target = spec.path_prefix + request.raw_path
    lines = [f"{request.method} {target} HTTP/1.1"]
    for name, value in fields:
        if any(c in value for c in "\r\n\0"):
            raise BadParameter(f"header field {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


async def _send_body(request: web.Request, writer: asyncio.StreamWriter) -> int:
    """The request body, as it arrives (chunked when the client gave no length)."""
    if request.content_length is None and not request.body_exists:
        return 0
    chunked = request.content_length is None
    sent = 0
    while data := await request.content.readany():
        sent += len(data)
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    return sent


@dataclass
class _Head:
    status: int
    reason: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


async def _response_head(reader: asyncio.StreamReader) -> _Head:
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ConnectionProblem("the app's response head is too long") from None
        except asyncio.IncompleteReadError:
            raise ConnectionProblem("the app closed the connection without answering") \
                from None
        lines = raw[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ConnectionProblem(f"the app's answer is not HTTP/1.x: {lines[0][:80]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep and name and name == name.strip():
                headers.append((name, value.strip()))
        head = _Head(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)
        if 100 <= head.status < 200 and head.status != 101:
            continue  # 100 Continue and other interim answers: the final one follows
        return head


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Decode a chunked body (trailers read and dropped)."""
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ConnectionProblem("the app sent a malformed chunk") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return
        while size:
            data = await reader.read(min(size, _CHUNK))
            if not data:
                raise ConnectionProblem("the app's chunked body broke off")
            size -= len(data)
            yield data
        if await reader.readexactly(2) != b"\r\n":
            raise ConnectionProblem("the app sent a malformed chunk")


async def _body(reader: asyncio.StreamReader, head: _Head) -> AsyncIterator[bytes]:
    if "chunked" in (head.get("transfer-encoding") or "").lower():
        async for data in _chunks(reader):
            yield data
        return
    length = head.get("content-length")
    left = int(length) if length is not None and length.isdigit() else None
    while left is None or left > 0:
        data = await reader.read(_CHUNK if left is None else min(left, _CHUNK))
        if not data:
            if left:
                raise ConnectionProblem("the app's body broke off")
            return
        if left is not None:
            left -= len(data)
        yield data


async def relay(request: web.Request, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter, spec: AppSpec, token: str,
                client_ip: str, result: Relayed) -> web.StreamResponse:
    """Serve ``request`` from the app (see the module); ``result`` is filled as it goes.
    ConnectionProblem when the app's answer is unusable before anything was sent back."""
    writer.write(request_head(request, spec, token, client_ip))
    await writer.drain()
    upgrade = _is_upgrade(request)
    if not upgrade:
        result.bytes_in = await _send_body(request, writer)
    head = await _response_head(reader)
    if head.status == 101 and not upgrade:
        raise ConnectionProblem("the app switched protocols on a request that asked for none")
    result.status = head.status
    if head.status == 101 and upgrade:
        return await _upgraded(request, reader, writer, head, result)
    response = web.StreamResponse(status=head.status, reason=head.reason or None)
    for name, value in head.headers:
        lower = name.lower()
        if lower not in _HOP_BY_HOP and lower != "content-length":
            response.headers.add(name, value)
    empty = request.method == "HEAD" or head.status in (204, 304)
    length = head.get("content-length")
    if length is not None and length.isdigit() and "chunked" not in \
            (head.get("transfer-encoding") or "").lower():
        response.content_length = int(length)
    await response.prepare(request)
    if not empty:
        try:
            async for data in _body(reader, head):
                result.bytes_out += len(data)
                await response.write(data)
        except (ConnectionProblem, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as err:  # the head is sent: only cutting is left
            raise ConnectionResetError(f"the app's answer broke off: {err}") from None
    await response.write_eof()
    return response


class _RawParser:
    """Takes the client's bytes after an upgrade (aiohttp's payload parser seat)."""

    def __init__(self, sink: asyncio.StreamReader) -> None:
        self.sink = sink

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.sink.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self.sink.feed_eof()


async def _upgraded(request: web.Request, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, head: _Head,
                    result: Relayed) -> web.StreamResponse:
    response = web.StreamResponse(status=101, reason=head.reason or "Switching Protocols")
    for name, value in head.headers:
        if name.lower() not in ("connection", "content-length", "transfer-encoding"):
            response.headers.add(name, value)
    response.headers["Connection"] = "Upgrade"
    response.force_close()
    await response.prepare(request)
    result.upgraded = True
    transport, protocol = request.transport, request.protocol
    assert transport is not None
    from_client = asyncio.StreamReader(limit=_CHUNK)
    protocol.set_parser(_RawParser(from_client))  # type: ignore[arg-type]

    async def to_app() -> None:
        while data := await from_client.read(_CHUNK):
            result.bytes_in += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def to_client() -> None:
        try:
            while data := await reader.read(_CHUNK):
                result.bytes_out += len(data)
                transport.write(data)
                await protocol._drain_helper()
        finally:
            transport.close()  # the app is done: so is the client's connection

    await both_ways(to_app(), to_client(), grace=5.0)
    return response
