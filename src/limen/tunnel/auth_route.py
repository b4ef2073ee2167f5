"""An agent's route to the auth API through its reverse tunnel.

::

    AuthClient ──TCP──▶ 127.0.0.1:P (this listener) ──▶ agent asks "connect auth" ──▶ new TCP
    connection to the tunnel port, "LIMEN-DATA nonce\\n" ──▶ spliced by the proxy to auth

The client's mutual TLS runs end to end inside the spliced connection, so
``AuthClient(listener_address, credentials)`` works unchanged and the proxy sees only
ciphertext. Each connection asks for an :class:`AuthTicket`: the nonce and the tunnel port of
the proxy that issued it, or its web port with the TLS context of ``limen.tunnel.tls_dial``
(an agent pool picks one of its proxies per connection). Created by
:meth:`limen.tunnel.agent.TunnelAgent.local_auth_listener` and
:meth:`limen.tunnel.agent_pool.TunnelAgentPool.local_auth_listener` (closed when they stop);
used by separately run agents (``limen.agents.auth_link``, typed with :class:`AuthRouteOwner`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from limen.errors import LimenError
from limen.net.address import bind_tcp, socket_address
from limen.net.relay import Relay, RelayProtocol
from limen.tunnel.protocol import format_preamble

__all__ = ["AuthRouteOwner", "AuthTicket", "LocalAuthListener", "PreambleProtocol"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuthTicket:
    """A proxy's answer to "connect auth": where to open the data connection, and its nonce."""

    nonce: str
    host: str
    port: int
    tls: ssl.SSLContext | None = None
    """Set: the proxy's web port, reached through TLS routing (``limen.tunnel.tls_dial``)."""


class AuthRouteOwner(Protocol):
    """What gives an agent its route to auth: a tunnel agent or an agent pool."""

    async def local_auth_listener(self, address: str = "127.0.0.1:0") -> str:
        """A loopback listener whose connections reach the auth API through a proxy."""
        ...


class LocalAuthListener:
    def __init__(self, request_ticket: Callable[[], Awaitable[AuthTicket]],
                 spawn: Callable[[Awaitable[None]], None], *,
                 idle_timeout: float = 600.0) -> None:
        self._request_ticket = request_ticket
        self._spawn = spawn
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None

    async def start(self, address: str = "127.0.0.1:0") -> str:
        sock = bind_tcp(address)
        self._server = await asyncio.get_running_loop().create_server(self._accept, sock=sock)
        return socket_address(sock)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _accept(self) -> asyncio.Protocol:
        relay = Relay(idle_timeout=self.idle_timeout, name="auth via proxy")
        self._spawn(self._connect(relay))
        return relay.protocol(0)

    async def _connect(self, relay: Relay) -> None:
        try:
            ticket = await self._request_ticket()
            await asyncio.get_running_loop().create_connection(
                lambda: PreambleProtocol(relay, 1, format_preamble(ticket.nonce)),
                ticket.host, ticket.port, ssl=ticket.tls,
                server_hostname=ticket.host if ticket.tls is not None else None)
        except (OSError, LimenError, TimeoutError) as err:
            log.warning("tunnel agent: cannot reach auth through the proxy: %s", err)
            relay.close("auth unreachable")


class PreambleProtocol(RelayProtocol):
    """A relay side that first writes the data-connection preamble."""

    def __init__(self, relay: Relay, side: int, preamble: bytes) -> None:
        super().__init__(relay, side)
        self.preamble = preamble

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.preamble)  # type: ignore[attr-defined]
        super().connection_made(transport)
