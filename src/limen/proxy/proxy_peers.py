"""A proxy's place in the proxy set: it announces itself to auth and tells its agents the set.

::

    every `interval` s:  POST /v1/presence/proxies {tunnel_address}  ──▶ auth stores this
                         proxy's record (TTL) and answers with every live proxy
                         ──▶ TunnelServer.set_proxies(...) ──▶ ``proxies`` to each agent
                             connected here (on change), and in every ``welcome``

The address announced is the tunnel listener as agents reach it
(:func:`announced_tunnel_address`): ``cluster.tunnel_host`` (in Kubernetes the pod's IP) or
else the host of ``cluster.public_address``, with the tunnel listener's port; else the tunnel
listener itself (a wildcard bind: this machine's name). A proxy without a tunnel listener
announces its web port, ``tls://host:port`` (:func:`announced_web_tunnel_address`): its
agents use TLS routing there, and the address says so to every agent of the set. Each proxy
must be reachable at its own announced address (not only through a load balancer): an
agent's data connections go to the proxy that asked for them. When auth cannot be reached
the last set stays (this proxy always in it). Nothing here is state a sibling lacks: the set
lives in auth. Started by :class:`limen.proxy.sshproxy.ProxySSHService`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence

from limen.aio.tasks import cancel_and_wait
from limen.auth.client import AuthClient
from limen.errors import BadParameter, LimenError
from limen.net.address import format_address, parse_address
from limen.net.tunnel_address import TLS_PREFIX, parse_tunnel_address
from limen.tunnel.protocol import MAX_PROXY_TEXT, ProxyEntry
from limen.tunnel.server import TunnelServer

__all__ = ["ANNOUNCE_INTERVAL", "ProxyAnnouncer", "announced_tunnel_address",
           "announced_web_tunnel_address", "proxy_entries"]

log = logging.getLogger(__name__)

ANNOUNCE_INTERVAL = 5.0
"""Seconds between announcements (a new proxy reaches the agents within about this)."""
_WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104 - compared with, never bound


def announced_tunnel_address(public_address: str, tunnel_listener: str,
                             tunnel_host: str = "") -> str:
    """Where agents reach this proxy's tunnel listener (see the module docstring)."""
    _host, port = parse_address(tunnel_listener)
    if tunnel_host:
        host = tunnel_host
    elif public_address:
        host = parse_address(public_address, 443)[0]
    else:
        host = parse_address(tunnel_listener)[0]
        if host in _WILDCARDS:
            host = socket.getfqdn()
    return format_address(host.strip("[]"), port)


def announced_web_tunnel_address(public_address: str, web_listener: str,
                                 tunnel_host: str = "") -> str:
    """Where agents reach this proxy's tunnel when it has no tunnel listener: its web port
    through TLS routing (``tls://host:port``, :mod:`limen.net.tunnel_address`):
    ``cluster.tunnel_host`` with the web listener's port, else ``cluster.public_address``
    (its port, 443 by default: the web port as clients reach it), else the web listener."""
    if tunnel_host or not public_address:
        address = announced_tunnel_address("", web_listener, tunnel_host)
    else:
        address = format_address(*parse_address(public_address, 443))
    return TLS_PREFIX + address


def proxy_entries(items: Sequence[object], cluster: str) -> list[ProxyEntry]:
    """The proxy records of auth's answer as entries for agents; malformed ones skipped."""
    entries = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        host_id, address = item.get("host_id"), item.get("tunnel_address")
        if not isinstance(host_id, str) or not isinstance(address, str) or \
                item.get("cluster") != cluster or not host_id or \
                len(host_id) > MAX_PROXY_TEXT or len(address) > MAX_PROXY_TEXT:
            continue
        try:
            parse_tunnel_address(address)
        except BadParameter:
            continue
        entries.append(ProxyEntry(host_id, address))
    return entries


class ProxyAnnouncer:
    def __init__(self, auth: AuthClient, tunnel: TunnelServer, address: str, *,
                 interval: float = ANNOUNCE_INTERVAL) -> None:
        self.auth = auth
        self.tunnel = tunnel
        self.address = address
        """This proxy's tunnel address as announced."""
        self.interval = interval
        self.announced = 0
        """Successful announcements so far."""
        self._task: asyncio.Task[None] | None = None

    @property
    def me(self) -> ProxyEntry:
        return ProxyEntry(self.tunnel.credentials.host_id, self.address)

    async def start(self) -> None:
        self.tunnel.set_proxies([self.me])
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="proxy announcer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.announce_once()
                if failing:
                    log.info("proxy set: announcing to auth again")
                failing = False
            except (LimenError, OSError) as err:
                if not failing:
                    log.warning("proxy set: cannot announce this proxy to auth (the agents "
                                "keep the last set): %s", err)
                failing = True
            await asyncio.sleep(self.interval)

    async def announce_once(self) -> None:
        """One announcement; the answer becomes the tunnel server's proxy set."""
        answer = await self.auth.call("POST", "/v1/presence/proxies",
                                      {"tunnel_address": self.address})
        items = answer.get("items") if isinstance(answer, dict) else None
        entries = proxy_entries(items if isinstance(items, list) else [],
                                self.tunnel.credentials.cluster)
        me = self.me
        self.tunnel.set_proxies([*(e for e in entries if e.host_id != me.host_id), me])
        self.announced += 1
