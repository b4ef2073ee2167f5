"""One TLS listener, several protocols: the proxy's web port routed by ALPN (Teleport's
single-port mode).

::

    client ──TLS (ALPN)──▶ TLSRouter ── "http/1.1" or none ──▶ aiohttp's web.Server (web API,
                                │                              web UI, apps)
                                ├──── "limen-ssh-proxy" ────▶ SSHTLSRoute (ssh_tls_route)
                                ├──── "limen-postgres" ─────▶ the PostgreSQL front
                                └──── "limen-mysql" ────────▶ the MySQL front
                                                               (db.db_tls_route)

The handshake is OpenSSL's (the proxy's web context: client certificates optional); once it
has finished, the protocol that serves the connection is created by the route the client's
ALPN names and takes the transport over (``transport.set_protocol`` + ``connection_made``),
so bytes are never re-framed in Python. More routes (``limen-tunnel``, Kubernetes by SNI)
plug in as more entries. Started by
:class:`limen.proxy.proxy_service.ProxyService`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Mapping

__all__ = ["HTTP_ALPN", "ProtocolFactory", "TLSRouter"]

log = logging.getLogger(__name__)

HTTP_ALPN = "http/1.1"
HANDSHAKE_TIMEOUT = 30.0
ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class TLSRouter:
    """Serves ``sock`` with ``context``; each connection goes to ``routes[alpn]``, or to
    ``default`` when the client asked for ``http/1.1``, for nothing, or for a name the proxy
    does not serve (OpenSSL then picked none)."""

    def __init__(self, context: ssl.SSLContext, default: ProtocolFactory,
                 routes: Mapping[str, ProtocolFactory]) -> None:
        if HTTP_ALPN in routes:
            raise ValueError("http/1.1 is the default route")
        self.context = context
        self.default = default
        self.routes = dict(routes)
        context.set_alpn_protocols([HTTP_ALPN, *self.routes])
        self._server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Dispatch(self), sock=sock, ssl=self.context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT)

    def stop(self) -> None:
        """Stop accepting; the routes close their own connections."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def factory_for(self, alpn: str | None) -> ProtocolFactory:
        return self.routes.get(alpn or "", self.default)


class _Dispatch(asyncio.Protocol):
    """Lives for the handshake only: hands the transport to the route's protocol."""

    def __init__(self, router: TLSRouter) -> None:
        self.router = router

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        try:
            protocol = self.router.factory_for(alpn)()
        except Exception:
            log.exception("proxy: the %s route cannot take a connection", alpn or HTTP_ALPN)
            transport.close()
            return
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # never: the route's protocol took over
        raise AssertionError("data before the route's protocol took the connection")
