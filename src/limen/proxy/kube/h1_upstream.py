"""Reading the kube agent's HTTP/1.1 response on a tunnel connection, for the HTTP/2 front:
the head (interim ``1xx`` answers skipped) and the body in pieces as they arrive —
``Content-Length``, chunked (re-assembled, trailers dropped) or up to the connection's end —
so a ``watch`` or ``logs -f`` streams and nothing is read ahead of what the client can take.
Called by :mod:`limen.proxy.kube.kube_h2`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from limen.errors import BadParameter, ConnectionProblem
from limen.proxy.kube.h2_translate import ResponseHead, parse_response_head

__all__ = ["PIECE", "read_body", "read_response_head"]

PIECE = 64 * 1024
"""The most read from the agent at once for one stream."""
_MAX_HEAD = 64 * 1024


async def read_response_head(reader: asyncio.StreamReader, method: str) -> ResponseHead:
    """The next final response head; ConnectionProblem when it breaks off or is malformed
    (IncompleteReadError when the connection ended before its first byte)."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            if not err.partial:
                raise
            raise ConnectionProblem("the kube agent's response head broke off") from None
        except asyncio.LimitOverrunError:
            raise ConnectionProblem("the kube agent's response head is too long") from None
        if len(raw) > _MAX_HEAD:
            raise ConnectionProblem("the kube agent's response head is too long")
        try:
            head = parse_response_head(raw[:-4], method=method)
        except BadParameter as err:
            raise ConnectionProblem(f"the kube agent's response: {err}") from None
        if not 100 <= head.status < 200:
            return head


async def read_body(reader: asyncio.StreamReader, head: ResponseHead
                    ) -> AsyncIterator[bytes]:
    """The body of ``head`` in pieces of at most :data:`PIECE` bytes, each as soon as it
    came; ConnectionProblem when a framed body breaks off."""
    if not head.has_body:
        return
    try:
        if head.chunked:
            async for piece in _chunked(reader):
                yield piece
        elif head.length is not None:
            left = head.length
            while left:
                piece = await reader.read(min(left, PIECE))
                if not piece:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(piece)
                yield piece
        else:
            while piece := await reader.read(PIECE):
                yield piece
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise ConnectionProblem("the kube agent's response body broke off") from None


async def _chunked(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 16:
            raise ConnectionProblem("malformed chunk size from the kube agent")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ConnectionProblem("malformed chunk size from the kube agent") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers: dropped
                pass
            return
        while size:
            piece = await reader.read(min(size, PIECE))
            if not piece:
                raise asyncio.IncompleteReadError(b"", size)
            size -= len(piece)
            yield piece
        if await reader.readexactly(2) != b"\r\n":
            raise ConnectionProblem("malformed chunk from the kube agent")
