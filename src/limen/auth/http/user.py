"""Auth API routes a logged-in user reaches through the proxy (``/v1/webapi/user/...``)::

    GET /v1/nodes                     nodes the caller may log in to (lmsh ls)
    GET /v1/recordings                the recordings the caller may read, newest first
                                      (lmsh recordings ls): id, user, participants, node,
                                      login, start, duration
    GET /v1/recordings/{session_id}   a session recording, asciicast v2 (lmsh play)

Recordings need the ``session`` rule (``list`` for the listing, ``read`` for one), evaluated
for each recording with its metadata (``limen.auth.recordings``): a rule's ``where`` such as
the ``access`` preset's ``contains(session.participants, user.metadata.name)`` limits a user
to the sessions they took part in. A caller no rule allows gets 403, and every refusal is
audited (``access.denied``).

Recordings are read from auth's recording store (``limen.auth.recordings.recording_store``:
the data directory, or the PostgreSQL database every auth replica shares).

The caller's identity comes from ``limen.auth.http.app`` (the user's certificate, forwarded by the
proxy and re-verified there). Registered by ``limen.auth.http.app.build_app``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from limen.auth.core import AuthServer
from limen.auth.nodes import visible_nodes
from limen.auth.recordings import decide, recording_store, summary
from limen.ca.identity import Identity, SystemRole
from limen.errors import AccessDenied, BadParameter, NotFound
from limen.rbac.decision import Decision
from limen.recording.writer import check_session_id

__all__ = ["user_routes"]

IdentityOf = Callable[[web.Request], Awaitable[Identity]]
RoleSetOf = Callable[[Identity], Awaitable[Any]]


def user_routes(auth: AuthServer, identity_of: IdentityOf, role_set_of: RoleSetOf,
                recordings: Path) -> list[web.RouteDef]:
    """The routes; ``recordings`` is the directory of the recording store when the backend
    keeps none (``limen.auth.recordings.recording_store``)."""
    store = recording_store(auth.backend, recordings)

    async def nodes(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        role_set = None if identity.system_role is SystemRole.ADMIN else \
            await role_set_of(identity)
        if identity.is_system and identity.system_role is not SystemRole.ADMIN:
            return web.json_response({"items": []})
        return web.json_response({"items": await visible_nodes(auth, identity, role_set)})

    async def refuse(identity: Identity, action: str, decision: Decision,
                     session_id: str | None = None) -> AccessDenied:
        await auth.emit("access.denied", success=False, user=identity.username,
                        action=action, session_id=session_id, role=decision.role,
                        rule=decision.rule, reason=decision.reason)
        what = f"session {session_id}" if session_id else "session recordings"
        return AccessDenied(f"{identity.username} may not {action.split('.')[-1]} {what}: "
                            f"{decision.reason}")

    async def recordings_list(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        role_set = await role_set_of(identity)
        possible = decide(identity, role_set, "list", None)
        if not possible.allowed:
            raise await refuse(identity, "recording.list", possible)
        metas = await store.list_metadata()
        items = [summary(meta) for meta in metas
                 if decide(identity, role_set, "list", meta).allowed
                 and decide(identity, role_set, "read", meta).allowed]
        items.sort(key=lambda item: (item["start"], item["session_id"]), reverse=True)
        return web.json_response({"items": items})

    async def recording(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        role_set = await role_set_of(identity)
        session_id = check_session_id(request.match_info["session_id"])
        possible = decide(identity, role_set, "read", None)
        if not possible.allowed:
            raise await refuse(identity, "recording.read", possible, session_id)
        meta = await store.metadata(session_id)
        if meta is None:
            raise NotFound(f"no recording of session {session_id}")
        decision = decide(identity, role_set, "read", meta)
        if not decision.allowed:
            raise await refuse(identity, "recording.read", decision, session_id)
        try:
            text = (await store.read(session_id)).decode("utf-8")
        except UnicodeDecodeError:
            raise BadParameter(f"recording {session_id} is not UTF-8 text") from None
        return web.json_response({"session_id": session_id, "cast": text, "meta": meta})

    return [web.get("/v1/nodes", nodes), web.get("/v1/recordings", recordings_list),
            web.get("/v1/recordings/{session_id}", recording)]
