"""The proxy's database listeners as one daemon service: ``postgres`` (default 5433) and
``mysql`` (default 3036), each with the proxy's TLS certificate and client certificates of
this cluster's TLS CA requested (not required in the handshake, so a client without one gets
its protocol's error message rather than a TLS alert). An empty listener address turns a
listener off; the fronts serve the web port's ALPN routes whatever their listeners
(``tls_routes``, :mod:`limen.proxy.db.db_tls_route`). Routing goes through the proxy's
tunnel server and cluster view (shared with the SSH service). Started by
``limen.cli.proxy_component``, which gives ``tls_routes`` to the web listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl

from limen.ca.host_credentials import HostCredentials
from limen.events.emitter import Emitter
from limen.net.address import bind_tcp, socket_address
from limen.proxy.db.cancel_keys import CancelKeys
from limen.proxy.db.db_route import DBRouter
from limen.proxy.db.db_tls_route import DBTLSRoutes
from limen.proxy.db.mysql_front import MySQLFront
from limen.proxy.db.postgres_front import PostgresFront
from limen.proxy.routing import ClusterView
from limen.tunnel.server import TunnelServer

__all__ = ["DBProxyService"]

log = logging.getLogger(__name__)


class DBProxyService:
    name = "proxy-db"

    def __init__(self, credentials: HostCredentials, tunnel: TunnelServer, view: ClusterView,
                 emitter: Emitter, *, postgres: str, mysql: str) -> None:
        self.router = DBRouter(credentials, tunnel, view, emitter)
        self.cancel_keys = CancelKeys()
        tls = credentials.server_ssl(client_cas=credentials.tls_cas())
        tls.verify_mode = ssl.CERT_OPTIONAL
        self._postgres = postgres
        self._mysql = mysql
        self._pg_front = PostgresFront(self.router, tls, self.cancel_keys)
        self._mysql_front = MySQLFront(self.router, tls)
        self.tls_routes = DBTLSRoutes(self._pg_front.handle_routed,
                                      self._mysql_front.handle_routed)
        """The same fronts on the web port by ALPN (``tls_routes.routes()``)."""
        self._servers: list[asyncio.Server] = []
        self._accepting: list[tuple[socket.socket, asyncio.Task[None]]] = []
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> dict[str, str]:
        listeners: dict[str, str] = {}
        try:
            if self._postgres:
                sock = bind_tcp(self._postgres)
                self._servers.append(await asyncio.start_server(
                    self._pg_front.handle, sock=sock, limit=256 * 1024))
                listeners["postgres"] = socket_address(sock)
            if self._mysql:
                # the MySQL front reads its first packets from the raw socket (no read-ahead
                # before TLS), so it accepts connections itself
                sock = bind_tcp(self._mysql)
                sock.setblocking(False)
                task = asyncio.create_task(self._accept(sock), name="mysql front")
                self._accepting.append((sock, task))
                listeners["mysql"] = socket_address(sock)
        except BaseException:
            await self.stop()
            raise
        return listeners

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(sock)
            except OSError as err:
                log.warning("mysql front: accept failed: %s", err)
                await asyncio.sleep(0.1)  # e.g. out of file descriptors: do not spin
                continue
            conn.setblocking(False)
            task = asyncio.create_task(self._mysql_front.handle_socket(
                conn, f"{peer[0]}:{peer[1]}"))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def stop(self) -> None:
        await self.tls_routes.stop()
        for sock, task in self._accepting:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            sock.close()
        self._accepting.clear()
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await server.wait_closed()
        self._servers.clear()
