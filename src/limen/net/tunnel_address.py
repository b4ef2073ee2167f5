"""Where an agent reaches a proxy's reverse tunnel, and how: the tunnel port, or the web port
through TLS routing (ALPN ``limen-tunnel``, a proxy that publishes one port).

::

    "proxy.example:3024"        the tunnel listener: plain TCP, first bytes "SSH-" or
                                "LIMEN-DATA <nonce>\\n"
    "tls://proxy.example:443"   the web port: TLS with ALPN "limen-tunnel", then the same
                                bytes inside the TLS stream

The one string travels everywhere a tunnel address does: the proxy's ping (``tunnel``), its
announcement to auth (``limen.auth.proxy_presence``), the ``welcome``/``proxies`` messages to
agents (``limen.tunnel.protocol.ProxyEntry``) and the agents' pools
(``limen.tunnel.agent_pool``), so each proxy of a set says which mode it uses. Parsed by
:func:`parse_tunnel_address`; the tunnel's own security (SSH host certificates both ways)
does not depend on the outer TLS.
"""

from __future__ import annotations

from dataclasses import dataclass

from limen.errors import BadParameter
from limen.net.address import format_address, parse_address

__all__ = ["ALPN_TUNNEL", "TLS_PREFIX", "TunnelAddress", "parse_tunnel_address"]

ALPN_TUNNEL = "limen-tunnel"
"""The ALPN of the reverse tunnel on the proxy's web port."""
TLS_PREFIX = "tls://"
"""Marks a tunnel address reached through TLS routing on the web port."""


@dataclass(frozen=True)
class TunnelAddress:
    host: str
    port: int
    tls: bool = False
    """Reached through the web port's TLS routing (ALPN :data:`ALPN_TUNNEL`)."""

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.host, self.port

    def __str__(self) -> str:
        return (TLS_PREFIX if self.tls else "") + format_address(self.host, self.port)


def parse_tunnel_address(text: str) -> TunnelAddress:
    """``host:port`` or ``tls://host:port`` (see the module docstring); :class:`BadParameter`
    for anything else (another scheme, no port, port 0)."""
    tls = text.startswith(TLS_PREFIX)
    rest = text[len(TLS_PREFIX):] if tls else text
    if "://" in rest or "/" in rest:
        raise BadParameter(f"a tunnel address is host:port or {TLS_PREFIX}host:port, "
                           f"not {text[:80]!r}")
    host, port = parse_address(rest)
    if port == 0 or any(c.isspace() for c in host):
        raise BadParameter(f"invalid tunnel address {text[:80]!r}")
    return TunnelAddress(host, port, tls)
