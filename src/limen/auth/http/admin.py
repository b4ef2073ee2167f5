"""Auth API routes of ``lmctl users|nodes|tokens`` (like ``tctl``'s)::

    GET    /v1/admin/users                 users with roles, logins, origin, sign-up and lock
    PATCH  /v1/admin/users/{name}          {roles?, logins?}: replace them (origin api only)
    DELETE /v1/admin/users/{name}          delete a user (origin api only) and its secrets
    POST   /v1/admin/users/{name}/reset    {ttl_seconds?}: clear password and TOTP → new link
    POST   /v1/admin/users/{name}/unlock   clear a login lockout
    GET    /v1/admin/nodes                 the heartbeated nodes
    GET    /v1/admin/tokens                join tokens (never their secrets)
    DELETE /v1/admin/tokens/{ref}          delete a token by token, id or unique prefix

Admins pass; users need the matching role rule (``users``/``resources``/``token``). The
caller's identity comes from ``limen.auth.http.app``. Registered by
``limen.auth.http.app.build_app``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from limen.api.resources import Kind
from limen.auth import node_admin, token_admin, user_admin
from limen.auth.core import AuthServer
from limen.auth.http.authz import require_rule
from limen.ca.identity import Identity
from limen.errors import BadParameter
from limen.net.http import json_body

__all__ = ["admin_routes"]

IdentityOf = Callable[[web.Request], Awaitable[Identity]]
RoleSetOf = Callable[[Identity], Awaitable[Any]]


def _list_or_none(body: dict[str, Any], key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadParameter(f"{key} must be a list of non-empty strings")
    return value


def admin_routes(auth: AuthServer, identity_of: IdentityOf,
                 role_set_of: RoleSetOf) -> list[web.RouteDef]:
    async def allowed(request: web.Request, kind: Kind | str, verb: str) -> str:
        identity = await identity_of(request)
        require_rule(identity, await role_set_of(identity), kind, verb)
        return identity.username

    async def users(request: web.Request) -> web.Response:
        await allowed(request, Kind.USER, "list")
        return web.json_response({"items": await user_admin.list_users(auth)})

    async def update_user(request: web.Request) -> web.Response:
        actor = await allowed(request, Kind.USER, "update")
        body = await json_body(request)
        roles, logins = _list_or_none(body, "roles"), _list_or_none(body, "logins")
        if roles is None and logins is None:
            raise BadParameter("nothing to change: give roles and/or logins")
        if roles is not None and not roles:
            raise BadParameter("a user needs at least one role")
        return web.json_response(await user_admin.update_user(
            auth, request.match_info["name"], actor=actor, roles=roles, logins=logins))

    async def remove_user(request: web.Request) -> web.Response:
        actor = await allowed(request, Kind.USER, "delete")
        await user_admin.remove_user(auth, request.match_info["name"], actor=actor)
        return web.json_response({"deleted": request.match_info["name"]})

    async def reset_user(request: web.Request) -> web.Response:
        actor = await allowed(request, Kind.USER, "update")
        body = await json_body(request)
        ttl = body.get("ttl_seconds", 3600)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
            raise BadParameter("ttl_seconds must be a positive integer")
        url = await user_admin.reset_user(auth, request.match_info["name"], actor=actor,
                                          ttl_seconds=ttl)
        return web.json_response({"url": url, "token": url.rsplit("/", 1)[-1].split("?")[0]})

    async def unlock_user(request: web.Request) -> web.Response:
        actor = await allowed(request, Kind.USER, "update")
        was_locked = await user_admin.unlock_user(auth, request.match_info["name"],
                                                  actor=actor)
        return web.json_response({"name": request.match_info["name"],
                                  "was_locked": was_locked})

    async def nodes(request: web.Request) -> web.Response:
        await allowed(request, Kind.RESOURCE, "list")
        return web.json_response({"items": await node_admin.list_nodes(auth)})

    async def tokens(request: web.Request) -> web.Response:
        await allowed(request, "token", "list")
        return web.json_response({"items": await token_admin.list_tokens(auth)})

    async def remove_token(request: web.Request) -> web.Response:
        actor = await allowed(request, "token", "delete")
        return web.json_response(await token_admin.remove_token(
            auth, request.match_info["ref"], actor=actor))

    return [
        web.get("/v1/admin/users", users),
        web.patch("/v1/admin/users/{name}", update_user),
        web.delete("/v1/admin/users/{name}", remove_user),
        web.post("/v1/admin/users/{name}/reset", reset_user),
        web.post("/v1/admin/users/{name}/unlock", unlock_user),
        web.get("/v1/admin/nodes", nodes),
        web.get("/v1/admin/tokens", tokens),
        web.delete("/v1/admin/tokens/{ref}", remove_token),
    ]
