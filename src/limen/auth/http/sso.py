"""The auth API's single sign-on routes, forwarded by the proxy from its public web API::

    GET  /v1/sso/connectors         → {items: [{name, kind (oidc|github), display, web}]}:
                                      what lmsh and a login page offer (nothing secret; ``web``:
                                      the connector has a web_redirect_url)
    POST /v1/sso/KIND/{name}/start  {public_key, port, ttl_seconds?, remote_addr}
                                    → {auth_url, redirect_uri, connector, display}
    POST /v1/sso/KIND/callback      {state, code | error, remote_addr}
                                    → the certificates, as /v1/login answers
    POST /v1/sso/KIND/{name}/web/start  {public_key, ttl_seconds?, remote_addr}: a web UI
                                    login (the provider returns to the proxy's web callback)
    POST /v1/sso/KIND/web/callback  {state, code | error, public_key, remote_addr}: its finish,
                                    with the key the proxy holds for the browser that started it

KIND is ``oidc`` or ``github``. Only the proxy may call them (it adds the caller's address); the
flows, their checks and their audit events are :class:`limen.auth.sso.oidc.OIDCLogins`' and
:class:`limen.auth.sso.github.GitHubLogins`'. Registered by ``limen.auth.http.app.build_app``;
the client is ``limen.client.sso_login`` through the proxy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from limen.api.resources import Kind
from limen.auth.core import AuthServer, LoginResult
from limen.auth.http.authz import require_system
from limen.auth.http.fields import optional_str, required_str
from limen.auth.http.requests import login_answer
from limen.ca.identity import Identity, SystemRole
from limen.errors import BadParameter
from limen.net.http import json_body

__all__ = ["CONNECTOR_KINDS", "SSOLogins", "sso_routes"]

IdentityOf = Callable[[web.Request], Awaitable[Identity]]
CONNECTOR_KINDS = {"oidc": Kind.OIDC_CONNECTOR, "github": Kind.GITHUB_CONNECTOR}
"""The path segment of each connector kind."""


class SSOLogins(Protocol):
    """One kind's flow (``OIDCLogins``, ``GitHubLogins``)."""

    async def start(self, name: str, *, public_key: str, port: int = 0,
                    ttl_seconds: int | None = None, remote_addr: str = "",
                    web: bool = False) -> dict[str, Any]: ...

    async def finish(self, state: str, *, code: str = "", error: str = "",
                     remote_addr: str = "", web: bool = False,
                     public_key: str = "") -> LoginResult: ...


def sso_routes(auth: AuthServer, flows: Mapping[str, SSOLogins],
               identity_of: IdentityOf) -> list[web.RouteDef]:
    """The routes of ``flows`` (by kind segment) and the connector listing."""
    routes = [web.get("/v1/sso/connectors", _listing(auth, identity_of))]
    for segment, logins in flows.items():
        routes += _flow_routes(segment, logins, identity_of)
    return routes


def _listing(auth: AuthServer, identity_of: IdentityOf
             ) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def connectors(request: web.Request) -> web.Response:
        require_system(await identity_of(request), [SystemRole.PROXY])
        items = []
        for segment, kind in CONNECTOR_KINDS.items():
            for found in await auth.store.list(kind):
                display = found.spec.get("display")
                items.append({"name": found.name, "kind": segment,
                              "display": display if isinstance(display, str) and display
                              else found.name,
                              "web": bool(found.spec.get("web_redirect_url"))})
        items.sort(key=lambda i: (i["name"], i["kind"]))
        return web.json_response({"items": items})

    return connectors


def _flow_routes(segment: str, logins: SSOLogins,
                 identity_of: IdentityOf) -> list[web.RouteDef]:
    def starter(for_web: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def start(request: web.Request) -> web.Response:
            require_system(await identity_of(request), [SystemRole.PROXY])
            body = await json_body(request)
            port, ttl = body.get("port", 0 if for_web else None), body.get("ttl_seconds")
            if isinstance(port, bool) or not isinstance(port, int):
                raise BadParameter("port must be the client's loopback listener port")
            if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int)
                                    or ttl <= 0):
                raise BadParameter("ttl_seconds must be a positive integer")
            return web.json_response(await logins.start(
                request.match_info["name"], public_key=required_str(body, "public_key"),
                port=port, ttl_seconds=ttl, remote_addr=str(body.get("remote_addr", "")),
                web=for_web))

        return start

    def finisher(for_web: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def callback(request: web.Request) -> web.Response:
            require_system(await identity_of(request), [SystemRole.PROXY])
            body = await json_body(request)
            result = await logins.finish(
                required_str(body, "state"), code=optional_str(body, "code") or "",
                error=optional_str(body, "error") or "",
                remote_addr=str(body.get("remote_addr", "")), web=for_web,
                public_key=optional_str(body, "public_key") or "" if for_web else "")
            return web.json_response(login_answer(result))

        return callback

    return [web.post(f"/v1/sso/{segment}/{{name}}/start", starter(False)),
            web.post(f"/v1/sso/{segment}/callback", finisher(False)),
            web.post(f"/v1/sso/{segment}/{{name}}/web/start", starter(True)),
            web.post(f"/v1/sso/{segment}/web/callback", finisher(True))]
