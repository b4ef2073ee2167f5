"""A WebSocket client for tests (aiohttp) that is closed down to its TCP socket when its block
ends; used by the web terminal attacks (``tests/web/test_web_attacks.py``) and the app
WebSocket test (``tests/integration/test_apps_e2e.py``).

aiohttp closes a TLS connection by sending close_notify and leaves the rest (the peer's answer,
closing the socket) to callbacks of the event loop. A test whose loop ended before they ran left
the open socket to the garbage collector, whose ``ResourceWarning`` then failed whichever later
test it ran in. Waiting here until the socket is closed makes the test that opened it own it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping

import aiohttp

__all__ = ["websocket"]

CLOSE_DEADLINE = 10.0


@contextlib.asynccontextmanager
async def websocket(url: str, context: ssl.SSLContext, headers: Mapping[str, str],
                    server_hostname: str | None = None
                    ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, ssl=context, headers=dict(headers),
                                   server_hostname=server_hostname)
        sock = ws.get_extra_info("socket")
        try:
            yield ws
        finally:
            await ws.close()
    try:
        async with asyncio.timeout(CLOSE_DEADLINE):
            # no event tells that the transport's socket is closed: look every 10 ms
            while sock is not None and sock.fileno() != -1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"the WebSocket to {url} still open {CLOSE_DEADLINE} s after "
                             "it was closed") from None
