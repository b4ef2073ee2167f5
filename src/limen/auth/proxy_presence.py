"""Proxy presence: which proxies of the cluster are up, and where agents reach their tunnels.

Every proxy announces itself (``limen.proxy.proxy_peers``) every few seconds: its host id (from
its verified certificate, never from the request body) and its tunnel listener's address as
agents reach it (``tls://host:port``: its web port, for a proxy without a tunnel listener,
:mod:`limen.net.tunnel_address`). Each record lives under ``/presence/proxies/<host_id>``
with an expiry of :data:`~limen.auth.presence.PRESENCE_TTL`, so a proxy that dies drops out
of the set without anyone deleting it. The proxies tell the set to their agents, which keep a
tunnel to each (``limen.tunnel.agent_pool``).

Called by :mod:`limen.auth.http.proxies` with the running :class:`~limen.auth.core.AuthServer`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from limen.auth.presence import PRESENCE_TTL
from limen.auth.store_keys import PROXY_PRESENCE_PREFIX
from limen.ca.identity import Identity, SystemRole
from limen.errors import AccessDenied, BadParameter
from limen.net.tunnel_address import parse_tunnel_address

if TYPE_CHECKING:
    from limen.auth.core import AuthServer

__all__ = ["MAX_ADDRESS", "PROXY_PRESENCE_PREFIX", "announce", "proxies"]

MAX_ADDRESS = 300
"""Longest tunnel address a proxy may announce."""


async def announce(auth: AuthServer, proxy: Identity, tunnel_address: str) -> dict[str, Any]:
    """Store (or refresh) ``proxy``'s record; returns it. ``proxy`` is the caller's verified
    identity: only a proxy of this cluster announces, and only itself."""
    if proxy.system_role is not SystemRole.PROXY or not proxy.host_id:
        raise AccessDenied("only a proxy announces itself")
    if proxy.cluster != auth.cluster_name:
        raise AccessDenied(f"a proxy of cluster {proxy.cluster!r} announced itself to "
                           f"{auth.cluster_name!r}")
    if len(tunnel_address) > MAX_ADDRESS:
        raise BadParameter("tunnel_address must be host:port or tls://host:port")
    address = parse_tunnel_address(tunnel_address)
    now = auth.clock()
    record = {"host_id": proxy.host_id, "cluster": proxy.cluster,
              "tunnel_address": str(address), "updated": auth.now().isoformat(),
              "expires": now + PRESENCE_TTL}
    await auth.backend.put(PROXY_PRESENCE_PREFIX + proxy.host_id, json.dumps(record).encode(),
                           expires=now + PRESENCE_TTL)
    return record


async def proxies(auth: AuthServer) -> list[dict[str, Any]]:
    """Every live proxy record, sorted by host id."""
    out: list[dict[str, Any]] = []
    for item in await auth.backend.list(PROXY_PRESENCE_PREFIX):
        try:
            record = json.loads(item.value)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out
