"""The locks in force, for agents and proxies running apart from auth: a long poll.

::

    GET /v1/locks?after=REVISION&wait=SECONDS
        → {"revision": N, "items": [Lock documents in force]}

The answer comes at once when auth's lock view (``limen.services.locks``, fed by the backend
watch) is past ``after`` (0 or absent: at once), otherwise when the next lock change lands or
after ``wait`` seconds (at most 20) with the same revision; so an agent learns of a new lock
within the time of one request. Expired locks are never sent. Only system identities of this
cluster (node, proxy, db, kube, app) and admins may call it. Registered by
``limen.auth.http.app.build_app``; the client is ``limen.agents.lock_feed``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from limen.auth.core import AuthServer
from limen.auth.http.authz import require_system
from limen.ca.identity import Identity, SystemRole
from limen.errors import BadParameter

__all__ = ["MAX_WAIT", "lock_routes"]

MAX_WAIT = 20.0
_READERS = (SystemRole.NODE, SystemRole.PROXY, SystemRole.DB, SystemRole.KUBE, SystemRole.APP)

IdentityOf = Callable[[web.Request], Awaitable[Identity]]


def lock_routes(auth: AuthServer, identity_of: IdentityOf) -> list[web.RouteDef]:
    async def locks(request: web.Request) -> web.Response:
        require_system(await identity_of(request), _READERS)
        after, wait = _number(request, "after", 0), _number(request, "wait", 0)
        view = auth.locks
        if view.revision <= after and wait > 0:
            await view.changed.wait(min(float(wait), MAX_WAIT))
        items = [lock.to_resource().to_document() for lock in view.current()]
        return web.json_response({"revision": view.revision, "items": items})

    return [web.get("/v1/locks", locks)]


def _number(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name, "")
    if not text:
        return default
    if not text.isdigit():
        raise BadParameter(f"{name} must be a non-negative integer")
    return int(text)

