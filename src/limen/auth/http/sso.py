"""The auth API's single sign-on routes, forwarded by the proxy from its public web API::

    POST /v1/sso/oidc/{name}/start  {public_key, port, ttl_seconds?, remote_addr}
                                    → {auth_url, redirect_uri, connector, display}
    POST /v1/sso/oidc/callback      {state, code | error, remote_addr}
                                    → the certificates, as /v1/login answers

Only the proxy may call them (it adds the caller's address); the flow, its checks and its
audit events are :class:`limen.auth.sso.oidc.OIDCLogins`'. Registered by
``limen.auth.http.app.build_app``; the client is ``limen.client.sso_login`` through the proxy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from limen.auth.http.authz import require_system
from limen.auth.http.fields import optional_str, required_str
from limen.auth.http.requests import login_answer
from limen.auth.sso.oidc import OIDCLogins
from limen.ca.identity import Identity, SystemRole
from limen.errors import BadParameter
from limen.net.http import json_body

__all__ = ["sso_routes"]

IdentityOf = Callable[[web.Request], Awaitable[Identity]]


def sso_routes(logins: OIDCLogins, identity_of: IdentityOf) -> list[web.RouteDef]:
    async def start(request: web.Request) -> web.Response:
        require_system(await identity_of(request), [SystemRole.PROXY])
        body = await json_body(request)
        port, ttl = body.get("port"), body.get("ttl_seconds")
        if isinstance(port, bool) or not isinstance(port, int):
            raise BadParameter("port must be the client's loopback listener port")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
            raise BadParameter("ttl_seconds must be a positive integer")
        return web.json_response(await logins.start(
            request.match_info["name"], public_key=required_str(body, "public_key"),
            port=port, ttl_seconds=ttl, remote_addr=str(body.get("remote_addr", ""))))

    async def callback(request: web.Request) -> web.Response:
        require_system(await identity_of(request), [SystemRole.PROXY])
        body = await json_body(request)
        result = await logins.finish(
            required_str(body, "state"), code=optional_str(body, "code") or "",
            error=optional_str(body, "error") or "", remote_addr=str(body.get("remote_addr", "")))
        return web.json_response(login_answer(result))

    return [web.post("/v1/sso/oidc/{name}/start", start),
            web.post("/v1/sso/oidc/callback", callback)]
