"""The HTTPS listener of the Kubernetes API emulator.

Used by ``fixtures.py`` (the ``kube_api`` fixture): ``async with HTTPSServer(emulator,
ssl_context=...) as server`` serves ``emulator`` (an aiohttp low-level handler) on
127.0.0.1 at ``server.port``. It is aiohttp's own test server on TLS, without kmock's server
class (which would also start a client session and intercept DNS for the whole process, so
several emulators could not run in several threads).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Self

import aiohttp.test_utils

from .apiserver import KubeAPIEmulator

__all__ = ["HTTPSServer"]


class HTTPSServer:
    """``emulator`` on HTTPS at ``host`` (``port`` None: a free one, read back as ``.port``)."""

    def __init__(
        self,
        emulator: KubeAPIEmulator,
        *,
        ssl_context: ssl.SSLContext,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.emulator = emulator
        self.ssl_context = ssl_context
        self.host = host
        self._port = port
        self._server: aiohttp.test_utils.RawTestServer | None = None

    @property
    def port(self) -> int:
        if self._server is None or self._server.port is None:
            raise RuntimeError("the server is not running")
        return self._server.port

    async def __aenter__(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the server can be started only once")
        server = aiohttp.test_utils.RawTestServer(self.emulator, host=self.host, port=self._port)
        await server.start_server(ssl=self.ssl_context)
        self._server = server
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.emulator.shutdown()
        server, self._server = self._server, None
        if server is not None:
            # TLS connections wait for the client's close_notify when closed gracefully; a
            # client that keeps an idle connection would leave its socket open past the loop.
            web_server = server.runner.server if server.runner else None
            handlers = list(web_server._connections) if web_server else []
            transports = [h.transport for h in handlers if h.transport is not None]
            port = server.port
            await server.close()
            for transport in transports:
                transport.abort()
            _abort_connections_to(port)


def _abort_connections_to(port: int | None) -> None:
    """Abort what is still connected to ``port`` on this loop: a connection still in its TLS
    handshake has no aiohttp handler yet, so it was in no list above, and its socket would be
    found unclosed by the garbage collector during a later test. The selector loop keeps every
    transport it serves in ``_transports`` (CPython's, private: read, never changed)."""
    loop = asyncio.get_running_loop()
    for transport in list(getattr(loop, "_transports", {}).values()):
        if not isinstance(transport, asyncio.Transport) or transport.is_closing():
            continue
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple) and len(local) >= 2 and local[1] == port:
            transport.abort()
