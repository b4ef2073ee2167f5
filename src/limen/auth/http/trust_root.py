"""Trusted clusters, root side: auth API routes of a root cluster about its leaves (see
``limen.auth.trusted_clusters.root_leaves``)::

    POST /v1/remoteclusters/heartbeat        {cluster, tunnel, nodes}   proxies only: a leaf's
                                             cluster-link heartbeat (404: leaf not admitted)
    POST /v1/remoteclusters/{name}/offline   {tunnel}                   proxies only
    GET  /v1/remoteclusters                  the leaves the caller's cluster_labels allow
                                             (lmsh clusters; users through the proxy)
    GET  /v1/remoteclusters/{name}/nodes     the nodes that leaf publishes (lmsh ls --cluster)
    POST /v1/trust/leaves/{leaf}/cas         {update}  proxies only: a leaf's own CAs, signed
                                             by its proxy, as its cluster link relayed them
                                             (limen.auth.trusted_clusters.root_leaf_cas)

Registered by ``limen.auth.http.app.build_app`` with its identity and role-set helpers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from limen.api.resources import NAME_PATTERN
from limen.auth.core import AuthServer
from limen.auth.http.authz import require_system
from limen.auth.trusted_clusters import root_leaves
from limen.auth.trusted_clusters.root_leaf_cas import apply_leaf_cas
from limen.ca.identity import Identity, SystemRole
from limen.errors import BadParameter
from limen.net.http import json_body

__all__ = ["TRUST_LEAVES_PATH", "remote_routes"]

TRUST_LEAVES_PATH = "/v1/trust/leaves"
"""``POST {TRUST_LEAVES_PATH}/{leaf}/cas``: a leaf's CA update relayed by a proxy of here."""

IdentityOf = Callable[[web.Request], Awaitable[Identity]]
RoleSetOf = Callable[[Identity], Awaitable[Any]]


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise BadParameter(f"{field} must be a cluster name")
    return value


def remote_routes(auth: AuthServer, identity_of: IdentityOf,
                  role_set_of: RoleSetOf) -> list[web.RouteDef]:
    async def heartbeat(request: web.Request) -> web.Response:
        require_system(await identity_of(request), [SystemRole.PROXY])
        body = await json_body(request)
        nodes = body.get("nodes") or []
        if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
            raise BadParameter("nodes must be a list of objects")
        return web.json_response(await root_leaves.cluster_heartbeat(
            auth, _name(body.get("cluster"), "cluster"), str(body.get("tunnel", "")), nodes))

    async def offline(request: web.Request) -> web.Response:
        require_system(await identity_of(request), [SystemRole.PROXY])
        body = await json_body(request)
        return web.json_response(await root_leaves.cluster_offline(
            auth, _name(request.match_info["name"], "name"), str(body.get("tunnel", ""))))

    async def user_view(request: web.Request) -> tuple[Identity, Any] | None:
        identity = await identity_of(request)
        if identity.system_role is SystemRole.ADMIN:
            return identity, None
        if identity.is_system:
            return None
        return identity, await role_set_of(identity)

    async def listing(request: web.Request) -> web.Response:
        viewer = await user_view(request)
        items = [] if viewer is None else await root_leaves.visible_clusters(auth, *viewer)
        return web.json_response({"cluster": auth.cluster_name, "items": items})

    async def nodes(request: web.Request) -> web.Response:
        viewer = await user_view(request)
        name = _name(request.match_info["name"], "name")
        items = [] if viewer is None else await root_leaves.cluster_nodes(
            auth, *viewer, name)
        return web.json_response({"cluster": name, "items": items})

    async def leaf_cas(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        require_system(identity, [SystemRole.PROXY])
        changed = await apply_leaf_cas(auth, _name(request.match_info["leaf"], "leaf"),
                                       await json_body(request),
                                       relayed_by=identity.host_id or "")
        return web.json_response({"changed": changed})

    return [web.post("/v1/remoteclusters/heartbeat", heartbeat),
            web.post(TRUST_LEAVES_PATH + "/{leaf}/cas", leaf_cas),
            web.post("/v1/remoteclusters/{name}/offline", offline),
            web.get("/v1/remoteclusters", listing),
            web.get("/v1/remoteclusters/{name}/nodes", nodes)]
