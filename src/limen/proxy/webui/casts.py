"""``GET /v1/webapi/user/recordings/{session_id}/cast``: a session recording as an asciicast
v2 file (``application/x-asciicast``), what the web player (asciinema-player) loads. Auth
decides who may read it (``GET /v1/recordings/{id}`` with the user's certificate, the
``session`` rules of their roles); the recordings are stored as asciicast v2 already, so the
file is passed on as it is. Mounted by ``limen.proxy.webui.mount``.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from aiohttp import web

from limen.auth.client import AuthClient

__all__ = ["cast_route"]


def cast_route(auth: AuthClient, user_cert: Callable[[web.Request], bytes]) -> web.RouteDef:
    async def cast(request: web.Request) -> web.Response:
        session_id = quote(request.match_info["session_id"], safe="")
        answer = await auth.call("GET", f"/v1/recordings/{session_id}",
                                 as_user_cert=user_cert(request))
        return web.Response(text=str(answer["cast"]), content_type="application/x-asciicast",
                            headers={"Cache-Control": "no-store"})

    return web.get("/v1/webapi/user/recordings/{session_id}/cast", cast)
