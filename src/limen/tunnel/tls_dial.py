"""An agent's connections to a proxy that publishes only its web port: TLS with ALPN
``limen-tunnel`` (the proxy's TLS router hands them to its tunnel server), carrying exactly
what the tunnel port carries.

::

    control:  asyncssh.connect(..., tunnel=TLSTunnel(context))   SSH inside the TLS stream
    data:     open_data(address, context, nonce)  ─▶  TLS, "LIMEN-DATA nonce\\n", then a
              socket pair: the dial handler gets one end (a plain socket, as on the tunnel
              port), a relay moves bytes between the other end and the TLS stream
    auth:     limen.tunnel.auth_route opens its data connection with the same context

The TLS connection verifies the proxy's certificate against the TLS CA of the cluster the
agent expects (:func:`tunnel_tls_context`: a proxy's certificate of that cluster, checked in
the handshake), and presents none: the tunnel's own checks (the agent's host certificate in
``hello``, the proxy's in ``welcome``, both for the SSH keys of the handshake) stay exactly as
on the tunnel port and do not depend on this outer layer. A proxy that does not select the
ALPN (an older one) is refused with a clear error. Called by
:mod:`limen.tunnel.agent_conn` and :mod:`limen.tunnel.agent`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from limen.ca.identity import SystemRole
from limen.ca.peer_role import require_server_role
from limen.errors import ConnectionProblem
from limen.net.relay import Relay
from limen.net.tunnel_address import ALPN_TUNNEL, TunnelAddress
from limen.tunnel.auth_route import PreambleProtocol
from limen.tunnel.protocol import format_preamble

__all__ = ["TLSTunnel", "check_alpn", "open_data", "tunnel_tls_context"]


def tunnel_tls_context(cluster: str, tls_cas: Sequence[x509.Certificate]) -> ssl.SSLContext:
    """A client context that accepts only a proxy of ``cluster`` (its certificate chained
    to ``tls_cas``, role checked in the handshake) and asks for ALPN ``limen-tunnel``."""
    pem = "".join(ca.public_bytes(Encoding.PEM).decode() for ca in tls_cas)
    context = ssl.create_default_context(cadata=pem)
    context.check_hostname = False  # the proxy is verified by its identity, any name
    context.set_alpn_protocols([ALPN_TUNNEL])
    return require_server_role(context, SystemRole.PROXY, {cluster: list(tls_cas)})


def check_alpn(transport: asyncio.BaseTransport, address: TunnelAddress) -> None:
    """:class:`ConnectionProblem` unless the proxy selected ``limen-tunnel``."""
    ssl_object = transport.get_extra_info("ssl_object")
    selected = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
    if selected != ALPN_TUNNEL:
        raise ConnectionProblem(f"the proxy at {address} does not serve the reverse tunnel on "
                                f"its web port (ALPN {ALPN_TUNNEL}): give its tunnel address")


async def _connect_tls(factory: Callable[[], asyncio.BaseProtocol], address: TunnelAddress,
                       context: ssl.SSLContext, handshake_within: float
                       ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    transport, protocol = await asyncio.get_running_loop().create_connection(
        factory, address.host, address.port, ssl=context, server_hostname=address.host,
        ssl_handshake_timeout=handshake_within)
    try:
        check_alpn(transport, address)
    except ConnectionProblem:
        transport.abort()
        raise
    return transport, protocol


class TLSTunnel:
    """asyncssh's ``tunnel`` for a control connection: the SSH connection's protocol runs
    on the TLS transport (no socket of its own, no bytes copied in Python)."""

    def __init__(self, address: TunnelAddress, context: ssl.SSLContext,
                 timeout: float) -> None:
        self.address = address
        self.context = context
        self.timeout = timeout

    async def create_connection(self, session_factory: Callable[[], Any], _host: str,
                                _port: int) -> tuple[asyncio.BaseTransport, Any]:
        return await _connect_tls(session_factory, self.address, self.context, self.timeout)


async def open_data(address: TunnelAddress, context: ssl.SSLContext, nonce: str,
                    within: float, *, name: str) -> socket.socket:
    """A data connection through the web port: the handler's end of a socket pair whose
    other end a relay joins to the TLS stream (opened with the preamble of ``nonce``)."""
    loop = asyncio.get_running_loop()
    relay = Relay(name=name)
    ours, theirs = socket.socketpair()
    handed = False
    try:
        ours.setblocking(False)
        await loop.create_connection(lambda: relay.protocol(0), sock=ours)
        handed = True  # its transport closes it from now on
        async with asyncio.timeout(within):
            await _connect_tls(lambda: PreambleProtocol(relay, 1, format_preamble(nonce)),
                               address, context, within)
    except BaseException:
        relay.abort("the data connection could not be opened")
        if not handed:
            ours.close()
        theirs.close()
        raise
    return theirs

