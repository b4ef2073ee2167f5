"""Auth API routes of the proxy set (``limen.auth.proxy_presence``)::

    POST /v1/presence/proxies   {"tunnel_address": "host:port"}   a proxy announces itself
                                (host id from its certificate; proxies only) → {"items": the
                                live proxies}, so one call per beat also reads the set
    GET  /v1/presence/proxies   the live proxies (proxies, agents and admins)

Registered by ``limen.auth.http.app.build_app``; the proxies' side is
``limen.proxy.proxy_peers``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from limen.auth import proxy_presence
from limen.auth.core import AuthServer
from limen.auth.http.authz import require_system
from limen.auth.http.fields import required_str
from limen.ca.identity import Identity, SystemRole
from limen.errors import AccessDenied
from limen.net.http import json_body

__all__ = ["proxy_routes"]

IdentityOf = Callable[[web.Request], Awaitable[Identity]]


def proxy_routes(auth: AuthServer, identity_of: IdentityOf) -> list[web.RouteDef]:
    async def announce(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        if identity.system_role is not SystemRole.PROXY:
            raise AccessDenied("only a proxy announces itself")
        body = await json_body(request)
        await proxy_presence.announce(auth, identity, required_str(body, "tunnel_address"))
        return web.json_response({"items": await proxy_presence.proxies(auth)})

    async def listed(request: web.Request) -> web.Response:
        require_system(await identity_of(request),
                       [SystemRole.PROXY, SystemRole.NODE, SystemRole.DB,
                        SystemRole.KUBE, SystemRole.APP])
        return web.json_response({"items": await proxy_presence.proxies(auth)})

    return [web.post("/v1/presence/proxies", announce),
            web.get("/v1/presence/proxies", listed)]
