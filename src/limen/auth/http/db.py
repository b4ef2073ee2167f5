"""Auth API routes for database access::

    GET  /v1/db/databases        the online databases the caller may connect to (lmsh db ls):
                                 name, protocol, labels, description, and the database users
                                 and names the caller's roles allow there
    POST /v1/db/certs            {service, db_user, db_name?} -> {cert, expires}: the caller's
                                 certificate scoped to one database (lmsh db login); users
                                 only, through the proxy (the public key is the one of the
                                 certificate the proxy forwarded)
    POST /v1/db/upstream-certs   {db_user, public_key} -> {cert, ca}: a db agent's client
                                 certificate for the database (DB CA, CN=<db_user>)
    POST /v1/db/server-certs     {hosts, public_key, ttl_seconds?} -> {cert, ca}: a database
                                 server's certificate signed by the DB CA (lmctl auth sign
                                 --format db); admins only

The logic lives in :mod:`limen.auth.db_access`. Registered by ``limen.auth.http.app``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web

from limen.auth.core import AuthServer
from limen.auth.db_access import (
    issue_route_cert,
    issue_server_cert,
    issue_upstream_cert,
    online_databases,
)
from limen.auth.http.authz import require_system
from limen.auth.http.fields import optional_str, required_str, str_list, ttl_seconds
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import PublicKey, load_public_key
from limen.errors import AccessDenied
from limen.net.http import json_body
from limen.rbac import db_own_name
from limen.rbac.roleset import RoleSet

__all__ = ["db_routes"]

IdentityOf = Callable[[web.Request], Awaitable[Identity]]
KeyOf = Callable[[web.Request], PublicKey]
RoleSetOf = Callable[[Identity], Awaitable[RoleSet]]


def db_routes(auth: AuthServer, identity_of: IdentityOf, forwarded_key: KeyOf,
              role_set_of: RoleSetOf) -> list[web.RouteDef]:
    async def databases(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        if identity.is_system:
            raise AccessDenied("the database listing is for users")
        role_set = await role_set_of(identity)
        items: list[dict[str, Any]] = []
        for name, db in sorted((await online_databases(auth)).items()):
            spec = db.resource.get("spec") or {}
            users = list(role_set.db_users_on(
                db.labels, identity.db_users, own_name=db_own_name(spec, identity.username)))
            if not users:
                continue
            items.append({"name": name, "protocol": db.protocol, "labels": db.labels,
                          "description": spec.get("description", ""),
                          "database": spec.get("database", ""),
                          "db_users": users, "db_names": list(identity.db_names)})
        return web.json_response({"items": items})

    async def route_cert(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        body = await json_body(request)
        cert, expires = await issue_route_cert(
            auth, identity, forwarded_key(request), required_str(body, "service"),
            required_str(body, "db_user"), optional_str(body, "db_name") or "",
            optional_str(body, "cluster") or "")
        return web.json_response({"cert": cert.decode(), "expires": expires.isoformat()})

    async def upstream_cert(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        require_system(identity, [SystemRole.DB])
        body = await json_body(request)
        cert, ca = await issue_upstream_cert(auth, identity,
                                             load_public_key(required_str(body, "public_key")),
                                             required_str(body, "db_user"))
        return web.json_response({"cert": cert.decode(), "ca": ca.decode()})

    async def server_cert(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        require_system(identity, [])
        body = await json_body(request)
        cert, ca = await issue_server_cert(
            auth, identity.username, str_list(body, "hosts"), required_str(body, "public_key"),
            timedelta(seconds=ttl_seconds(body, default=90 * 86400)))
        return web.json_response({"cert": cert.decode(), "ca": ca.decode()})

    return [
        web.get("/v1/db/databases", databases),
        web.post("/v1/db/certs", route_cert),
        web.post("/v1/db/upstream-certs", upstream_cert),
        web.post("/v1/db/server-certs", server_cert),
    ]

