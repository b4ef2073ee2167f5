"""One TLS listener, several protocols: the proxy's web port routed by server name (SNI) and
ALPN (Teleport's single-port mode).

::

    client ──TLS──▶ TLSRouter ── SNI kube-limen-proxy.limen.local ──▶ the kube front
                        │          or <label>.kube-limen-proxy.limen.local (its own context:
                        │          a client certificate required)
                        ├── "http/1.1" or no ALPN ──▶ aiohttp's web.Server (web API, web UI,
                        │                             apps)
                        ├── "limen-ssh-proxy" ──────▶ SSHTLSRoute (ssh_tls_route)
                        ├── "limen-postgres" ───────▶ the PostgreSQL front
                        ├── "limen-mysql" ──────────▶ the MySQL front (db.db_tls_route)
                        ├── "limen-kube" ───────────▶ the kube front (kube.kube_front)
                        └── "limen-tunnel" ─────────▶ the reverse-tunnel server's protocol
                                                      (agents, leaf links: tunnel.server)

Each connection's ClientHello is read first (:mod:`limen.proxy.client_hello`, at most 64 KiB;
the handshake timeout runs from the connection), because the TLS context is chosen by the
server name it asks for: a name of ``sni_routes`` (or one label under a name whose route
serves ``subdomains``) gets that route's context, every other
connection the proxy's web context (client certificates optional). OpenSSL cannot be told to
require a client certificate once its handshake has started (an SNI callback may change the
certificate, not the verify mode), hence the choice before it. The bytes read are then
replayed into asyncio's TLS protocol, so the handshake is OpenSSL's as before. Once it has
finished, the route's protocol (the SNI route's, else the one the negotiated ALPN names) takes
the transport over (``transport.set_protocol`` + ``connection_made``), so bytes are never
re-framed in Python. A failed handshake on an SNI route is reported to its ``refused``
callback (the kube front audits it). Started by :class:`limen.proxy.proxy_service.ProxyService`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from limen.net.event_loop import stream_transport
from limen.proxy.client_hello import ClientHello, NotClientHello, parse

__all__ = ["HTTP_ALPN", "ProtocolFactory", "SNIRoute", "TLSRouter"]

log = logging.getLogger(__name__)

HTTP_ALPN = "http/1.1"
HANDSHAKE_TIMEOUT = 30
ProtocolFactory = Callable[[], asyncio.BaseProtocol]
Refused = Callable[[ssl.SSLError, str], Coroutine[Any, Any, None]]
"""Called with the handshake's error and the client's ``host:port``."""


@dataclass(frozen=True)
class SNIRoute:
    """A server name served with its own TLS context and protocol, whatever the ALPN."""

    context: ssl.SSLContext
    factory: ProtocolFactory
    refused: Refused | None = None
    subdomains: bool = False
    """The route also serves every name one label under its own (``x.<name>``)."""


class TLSRouter:
    """Serves ``sock``: a connection asking for a server name of ``sni_routes`` goes to that
    route; any other to ``routes[alpn]``, or to ``default`` when the client asked for
    ``http/1.1``, for nothing, or for a name the proxy does not serve (OpenSSL then picked
    none)."""

    def __init__(self, context: ssl.SSLContext, default: ProtocolFactory,
                 routes: Mapping[str, ProtocolFactory],
                 sni_routes: Mapping[str, SNIRoute] | None = None, *,
                 fallback: SNIRoute | None = None) -> None:
        """``fallback``: the route of every connection no SNI route serves (then
        ``context`` keeps its own ALPN list); see :meth:`single`."""
        if HTTP_ALPN in routes:
            raise ValueError("http/1.1 is the default route")
        self.context = context
        self.default = default
        self.routes = dict(routes)
        self.sni_routes = {name.lower(): route for name, route in (sni_routes or {}).items()}
        self.fallback = fallback
        if fallback is None:
            context.set_alpn_protocols([HTTP_ALPN, *self.routes])
        self._server: asyncio.Server | None = None
        self._refusals: set[asyncio.Task[None]] = set()

    @classmethod
    def single(cls, route: SNIRoute) -> TLSRouter:
        """A listener of one route whatever the server name (the kube front's own port): its
        context, its protocol, its handshake refusals reported. The ClientHello is read and
        replayed as for the web port, so the handshake does not depend on the event loop's
        ``start_tls`` (uvloop's, on the server side, never completed one here)."""
        return cls(route.context, route.factory, {}, fallback=route)

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Hello(self), sock=sock)

    def stop(self) -> None:
        """Stop accepting; the routes close their own connections."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def route_for(self, server_name: str) -> SNIRoute | None:
        """The SNI route serving ``server_name``, if any (see :class:`SNIRoute`), else the
        ``fallback``."""
        name = server_name.lower()
        route = self.sni_routes.get(name)
        if route is None and "." in name:
            parent = self.sni_routes.get(name.split(".", 1)[1])
            route = parent if parent is not None and parent.subdomains else None
        return route or self.fallback

    def factory_for(self, alpn: str | None) -> ProtocolFactory:
        return self.routes.get(alpn or "", self.default)

    def handshake_failed(self, route: SNIRoute, err: ssl.SSLError, client_addr: str) -> None:
        if route.refused is None:
            return
        task = asyncio.create_task(route.refused(err, client_addr), name="tls route refusal")
        self._refusals.add(task)
        task.add_done_callback(self._refusal_done)

    def _refusal_done(self, task: asyncio.Task[None]) -> None:
        self._refusals.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("proxy: a refused handshake could not be reported",
                      exc_info=task.exception())


def _address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""


class _Hello(asyncio.Protocol):
    """Lives until the ClientHello is read: then starts the TLS handshake with the context
    its server name picks, replaying what it read."""

    def __init__(self, router: TLSRouter) -> None:
        self.router = router
        self.read = bytearray()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = stream_transport(transport)
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + HANDSHAKE_TIMEOUT
        self.timer = loop.call_later(HANDSHAKE_TIMEOUT, transport.abort)

    def data_received(self, data: bytes) -> None:
        self.read += data
        try:
            hello = parse(bytes(self.read))
        except NotClientHello:
            hello = ClientHello("", ())  # OpenSSL refuses it with the web context, as before
        if hello is not None:
            self._handshake(hello)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def _handshake(self, hello: ClientHello) -> None:
        assert self.transport is not None
        if self.timer is not None:
            self.timer.cancel()
        route = self.router.route_for(hello.server_name)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        tls = SSLProtocol(loop, _Dispatch(self.router, route),
                          route.context if route else self.router.context, waiter,
                          server_side=True,  # the ClientHello's time counts
                          ssl_handshake_timeout=max(1, math.ceil(self.deadline - loop.time())))
        client_addr = _address(self.transport)
        waiter.add_done_callback(lambda done: self._handshake_done(done, route, client_addr))
        self.transport.set_protocol(tls)
        tls.connection_made(self.transport)
        data = bytes(self.read)
        self.read.clear()
        tls.get_buffer(len(data))[:len(data)] = data
        tls.buffer_updated(len(data))

    def _handshake_done(self, done: asyncio.Future[Any], route: SNIRoute | None,
                        client_addr: str) -> None:
        err = None if done.cancelled() else done.exception()
        if route is not None and isinstance(err, ssl.SSLError):
            self.router.handshake_failed(route, err, client_addr)


class _Dispatch(asyncio.Protocol):
    """Lives for the handshake only: hands the transport to the route's protocol."""

    def __init__(self, router: TLSRouter, route: SNIRoute | None) -> None:
        self.router = router
        self.route = route

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        name = "SNI" if self.route is not None else alpn or HTTP_ALPN
        try:
            factory = self.route.factory if self.route is not None else \
                self.router.factory_for(alpn)
            protocol = factory()
        except Exception:
            log.exception("proxy: the %s route cannot take a connection", name)
            transport.close()
            return
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # never: the route's protocol took over
        raise AssertionError("data before the route's protocol took the connection")
