"""Auth API routes for application access::

    GET  /v1/apps             the online apps the caller's roles admit (lmsh apps ls): name,
                              labels, public address
    POST /v1/apps/certs       {app} -> {cert, expires}: the caller's certificate scoped to one
                              app (lmsh apps login); users only, through the proxy (the public
                              key is the one of the certificate the proxy forwarded)
    POST /v1/apps/jwt         {app, user_cert} -> {token, expires}: the identity token of one
                              app session (proxies only; the user's app certificate and roles
                              are checked again here)
    GET  /v1/apps/jwks        the JWT CA's public keys (proxies: /.well-known/jwks.json)
    GET  /v1/presence/apps    online apps, one item per serving app agent (the proxy's routing)

The logic lives in :mod:`limen.auth.app_access`. Registered by ``limen.auth.http.app``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from limen.api.resources import Kind
from limen.auth import presence
from limen.auth.app_access import app_token, issue_app_cert, visible_apps
from limen.auth.core import AuthServer
from limen.auth.http.authz import require_rule, require_system
from limen.auth.http.fields import required_str
from limen.ca.authority import CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import PublicKey
from limen.errors import AccessDenied
from limen.net.http import json_body
from limen.rbac.roleset import RoleSet

__all__ = ["app_routes"]

IdentityOf = Callable[[web.Request], Awaitable[Identity]]
KeyOf = Callable[[web.Request], PublicKey]
RoleSetOf = Callable[[Identity], Awaitable[RoleSet | None]]


def app_routes(auth: AuthServer, identity_of: IdentityOf, forwarded_key: KeyOf,
               role_set_of: RoleSetOf) -> list[web.RouteDef]:
    async def apps(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        if identity.is_system:
            raise AccessDenied("the app listing is for users")
        return web.json_response({"items": await visible_apps(auth, identity)})

    async def certs(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        body = await json_body(request)
        cert, expires = await issue_app_cert(auth, identity, forwarded_key(request),
                                             required_str(body, "app"))
        return web.json_response({"cert": cert.decode(), "expires": expires.isoformat()})

    async def token(request: web.Request) -> web.Response:
        require_system(await identity_of(request), [SystemRole.PROXY])
        body = await json_body(request)
        jwt, expires = await app_token(auth, required_str(body, "user_cert"),
                                       required_str(body, "app"))
        return web.json_response({"token": jwt, "expires": expires.isoformat()})

    async def jwks(request: web.Request) -> web.Response:
        require_system(await identity_of(request), [SystemRole.PROXY])
        return web.json_response(auth.authorities.get(CertAuthorityType.JWT).jwks())

    async def presence_apps(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        require_rule(identity, await role_set_of(identity), Kind.RESOURCE, "list",
                     system=[SystemRole.PROXY, SystemRole.APP])
        return web.json_response(
            {"items": await presence.presence(auth, presence.APP_PRESENCE_PREFIX)})

    return [
        web.get("/v1/apps", apps),
        web.post("/v1/apps/certs", certs),
        web.post("/v1/apps/jwt", token),
        web.get("/v1/apps/jwks", jwks),
        web.get("/v1/presence/apps", presence_apps),
    ]
