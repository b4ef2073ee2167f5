"""The browser's login API on the proxy's web port::

    POST   /v1/webapi/sessions        {user, password, otp | webauthn} → the session (cookie)
                                      and its CSRF token; the proxy logs in at auth as ``lmsh
                                      login`` does (``webauthn``: the security key's answer to
                                      the challenge of /v1/webapi/login/webauthn/begin)
    GET    /v1/webapi/sessions        the current session (user, roles, logins, CSRF token)
    POST   /v1/webapi/sessions/renew  (CSRF) the session lives IDLE_TTL longer (at most as long
                                      as its certificates)
    DELETE /v1/webapi/sessions        (CSRF) logout: the session is forgotten, audited

Auth decides and audits every login (wrong password, wrong code); the proxy only keeps the
certificates and the private key it generated for them in memory. Session creation is rate
limited per client address and per user name. Mounted by ``limen.proxy.webui.mount``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from limen.auth.client import AuthClient
from limen.ca.keys import generate_private_key, private_key_to_openssh, public_key_to_openssh
from limen.errors import BadParameter
from limen.net.http import json_body
from limen.proxy.webui.ratelimit import RateLimiter
from limen.proxy.webui.sessions import WebSession, WebSessions

__all__ = ["CERT_TTL_SECONDS", "session_routes"]

CERT_TTL_SECONDS = 8 * 3600
"""What a browser login asks for (auth caps it at the roles' max_session_ttl)."""
OnLogout = Callable[[WebSession, str], Awaitable[None]]


def _text(body: dict[str, object], key: str, limit: int = 256) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or len(value) > limit:
        raise BadParameter(f"{key} must be a string of at most {limit} characters")
    return value


def session_routes(auth: AuthClient, sessions: WebSessions, on_logout: OnLogout,
                   *, by_address: RateLimiter, by_user: RateLimiter) -> list[web.RouteDef]:

    async def create(request: web.Request) -> web.Response:
        body = await json_body(request)
        user, password, otp = _text(body, "user"), _text(body, "password", 1024), \
            _text(body, "otp", 16)
        if not user or not password:
            raise BadParameter("user and password are required")
        webauthn = body.get("webauthn")
        if webauthn is not None and not isinstance(webauthn, dict):
            raise BadParameter("webauthn must be the security key's answer")
        by_address.take(request.remote or "", "logins from this address")
        by_user.take(user, f"logins of {user}")
        key = generate_private_key()
        answer = await auth.call("POST", "/v1/login", {
            "user": user, "password": password, "otp": otp,
            "public_key": public_key_to_openssh(key.public_key(), f"{user}@web"),
            "ttl_seconds": CERT_TTL_SECONDS, "remote_addr": request.remote or "",
            **({"webauthn": webauthn} if webauthn is not None else {})})
        session = sessions.create(str(answer["user"]), answer,
                                  private_key_to_openssh(key).encode())
        response = web.json_response(session.summary())
        sessions.set_cookie(response, session)
        return response

    async def current(request: web.Request) -> web.Response:
        return web.json_response(sessions.current(request, changes_state=False).summary())

    async def renew(request: web.Request) -> web.Response:
        session = sessions.renew(sessions.current(request, changes_state=True))
        response = web.json_response(session.summary())
        sessions.set_cookie(response, session)
        return response

    async def delete(request: web.Request) -> web.Response:
        session = sessions.current(request, changes_state=True)
        sessions.delete(session)
        await on_logout(session, request.remote or "")
        response = web.json_response({"logged_out": session.user})
        sessions.clear_cookie(response)
        return response

    return [web.post("/v1/webapi/sessions", create), web.get("/v1/webapi/sessions", current),
            web.post("/v1/webapi/sessions/renew", renew),
            web.delete("/v1/webapi/sessions", delete)]
