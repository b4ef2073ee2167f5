"""Auth API routes a logged-in user reaches through the proxy (``/v1/webapi/user/...``)::

    GET /v1/nodes                     nodes the caller may log in to (lmsh ls)
    GET /v1/recordings/{session_id}   a session recording, asciicast v2 (lmsh play; needs the
                                      ``session`` read rule)

The caller's identity comes from ``limen.auth.api`` (the user's certificate, forwarded by the
proxy and re-verified there). Registered by ``limen.auth.api.build_app``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from limen.auth.authz import require_rule
from limen.auth.nodes import visible_nodes
from limen.auth.server import AuthServer
from limen.ca.identity import Identity, SystemRole
from limen.errors import NotFound
from limen.recording.writer import check_session_id

__all__ = ["user_routes"]

IdentityOf = Callable[[web.Request], Awaitable[Identity]]
RoleSetOf = Callable[[Identity], Awaitable[Any]]


def user_routes(auth: AuthServer, identity_of: IdentityOf, role_set_of: RoleSetOf,
                recordings: Path) -> list[web.RouteDef]:
    async def nodes(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        role_set = None if identity.system_role is SystemRole.ADMIN else \
            await role_set_of(identity)
        if identity.is_system and identity.system_role is not SystemRole.ADMIN:
            return web.json_response({"items": []})
        return web.json_response({"items": await visible_nodes(auth, identity, role_set)})

    async def recording(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        require_rule(identity, await role_set_of(identity), "session", "read")
        session_id = check_session_id(request.match_info["session_id"])
        cast, meta = recordings / f"{session_id}.cast", recordings / f"{session_id}.json"

        def read() -> tuple[str, dict[str, Any]]:
            if not cast.is_file():
                raise NotFound(f"no recording of session {session_id}")
            info = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
            return cast.read_text(encoding="utf-8"), info

        text, info = await asyncio.to_thread(read)
        return web.json_response({"session_id": session_id, "cast": text, "meta": info})

    return [web.get("/v1/nodes", nodes), web.get("/v1/recordings/{session_id}", recording)]
