"""Auth API routes for Kubernetes access::

    GET  /v1/kube/clusters    the online kube clusters the caller's roles admit (lmsh kube ls):
                              name, labels, description, and the kubernetes_groups and
                              kubernetes_users granted there
    POST /v1/kube/certs       {kube_cluster} -> {cert, expires}: the caller's certificate
                              scoped to one kube cluster (lmsh kube login / credentials);
                              {any_cluster: true}: one naming none (lmsh kube login --all);
                              users only, through the proxy (the public key is the one of the
                              certificate the proxy forwarded)
    GET  /v1/presence/kubes   online kube clusters, one item per serving kube agent (the
                              proxy's routing, kube agents)

The logic lives in :mod:`limen.auth.kube_access`. Registered by ``limen.auth.http.app``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from limen.api.resources import Kind
from limen.auth import presence
from limen.auth.core import AuthServer
from limen.auth.http.authz import require_rule
from limen.auth.http.fields import optional_str, required_str
from limen.auth.kube_access import issue_kube_cert, online_kube_clusters, visible_kube_clusters
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import PublicKey
from limen.errors import AccessDenied
from limen.net.http import json_body
from limen.rbac.roleset import RoleSet

__all__ = ["kube_routes"]

IdentityOf = Callable[[web.Request], Awaitable[Identity]]
KeyOf = Callable[[web.Request], PublicKey]
RoleSetOf = Callable[[Identity], Awaitable[RoleSet | None]]


def kube_routes(auth: AuthServer, identity_of: IdentityOf, forwarded_key: KeyOf,
                role_set_of: RoleSetOf) -> list[web.RouteDef]:
    async def clusters(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        if identity.is_system:
            raise AccessDenied("the kube cluster listing is for users")
        role_set = await role_set_of(identity)
        assert role_set is not None
        items = visible_kube_clusters(await online_kube_clusters(auth), role_set)
        return web.json_response({"items": items})

    async def certs(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        body = await json_body(request)
        any_cluster = body.get("any_cluster") is True
        cert, expires = await issue_kube_cert(
            auth, identity, forwarded_key(request),
            optional_str(body, "kube_cluster") or "" if any_cluster else
            required_str(body, "kube_cluster"),
            optional_str(body, "cluster") or "", any_cluster=any_cluster)
        return web.json_response({"cert": cert.decode(), "expires": expires.isoformat()})

    async def presence_kubes(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        require_rule(identity, await role_set_of(identity), Kind.RESOURCE, "list",
                     system=[SystemRole.PROXY, SystemRole.KUBE])
        return web.json_response(
            {"items": await presence.presence(auth, presence.KUBE_PRESENCE_PREFIX)})

    return [
        web.get("/v1/kube/clusters", clusters),
        web.post("/v1/kube/certs", certs),
        web.get("/v1/presence/kubes", presence_kubes),
    ]
