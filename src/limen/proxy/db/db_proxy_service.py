"""The proxy's database listeners as one daemon service: ``postgres`` (default 5433) and
``mysql`` (default 3036), each with the proxy's TLS certificate and client certificates of
this cluster's TLS CA requested (not required in the handshake, so a client without one gets
its protocol's error message rather than a TLS alert). An empty listener address turns a
front off. Routing goes through the proxy's tunnel server and cluster view (shared with the
SSH service). Started by ``limen.cli.proxy_component``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

from limen.ca.host_credentials import HostCredentials
from limen.events.emitter import Emitter
from limen.net.address import bind_tcp, socket_address
from limen.proxy.db.cancel_keys import CancelKeys
from limen.proxy.db.db_route import DBRouter
from limen.proxy.db.mysql_front import MySQLFront
from limen.proxy.db.postgres_front import PostgresFront
from limen.proxy.routing import ClusterView
from limen.tunnel.server import TunnelServer

__all__ = ["DBProxyService"]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class DBProxyService:
    name = "proxy-db"

    def __init__(self, credentials: HostCredentials, tunnel: TunnelServer, view: ClusterView,
                 emitter: Emitter, *, postgres: str, mysql: str) -> None:
        self.router = DBRouter(credentials, tunnel, view, emitter)
        self.cancel_keys = CancelKeys()
        tls = credentials.server_ssl(client_cas=credentials.tls_cas())
        tls.verify_mode = ssl.CERT_OPTIONAL
        self._fronts: dict[str, tuple[str, Handler]] = {}
        if postgres:
            self._fronts["postgres"] = (postgres,
                                        PostgresFront(self.router, tls, self.cancel_keys).handle)
        if mysql:
            self._fronts["mysql"] = (mysql, MySQLFront(self.router, tls).handle)
        self._servers: list[asyncio.Server] = []

    async def start(self) -> dict[str, str]:
        listeners: dict[str, str] = {}
        try:
            for name, (address, handler) in self._fronts.items():
                sock = bind_tcp(address)
                server = await asyncio.start_server(handler, sock=sock, limit=256 * 1024)
                self._servers.append(server)
                listeners[name] = socket_address(sock)
        except BaseException:
            await self.stop()
            raise
        return listeners

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await server.wait_closed()
        self._servers.clear()
